"""README's results table comes from a report.json of the code it names (the check may skip:
the full main job is not run in the tests)."""

import copy
import subprocess
import sys

import pytest

from benchmarks import readme_results
from tests.conftest import REPO

FASHION_REPORT = REPO / "runs" / "fashion_mnist" / "report" / "report.json"


def test_readme_fashion_mnist_table_matches_its_report():
    if not FASHION_REPORT.exists():
        pytest.skip(f"no {FASHION_REPORT.relative_to(REPO)}: run README's main job to compare")
    result = subprocess.run([sys.executable, "benchmarks/readme_results.py", "--report", str(FASHION_REPORT),
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
