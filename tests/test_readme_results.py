"""README's results table comes from a report.json of the code it names (the check may skip:
the full main job is not run in the tests)."""

import copy
import subprocess
import sys

import pytest

from benchmarks import readme_results
from tests.conftest import REPO

@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist", "fashion_mnist_vq", "mnist_vq"])
def test_readme_table_matches_its_report(dataset):
    path = REPO / "runs" / dataset / "report" / "report.json"
    if not path.exists():
        pytest.skip(f"no {path.relative_to(REPO)}: run README's {dataset} job to compare")
    result = subprocess.run([sys.executable, "benchmarks/readme_results.py", "--report", str(path),
                             "--check", "README.md"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_check_catches_a_changed_number_and_a_dirty_checkout(smoke_report):
    rep = copy.deepcopy(smoke_report[1])
    rep["code"] = {"commit": "0123456789abcdef", "dirty": False}
    readme = "intro\n" + readme_results.block(rep) + "\nmore\n"
    assert readme_results.check(readme, rep) == []
    changed = copy.deepcopy(rep)
    changed["priors"]["gmm"]["fd_classifier"] *= 1.01
    assert readme_results.check(readme, changed) != []
    dirty = copy.deepcopy(rep)
    dirty["code"]["dirty"] = True
    assert any("uncommitted" in p for p in readme_results.check(readme_results.block(dirty), dirty))
