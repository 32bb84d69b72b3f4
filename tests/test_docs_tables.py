"""The published results tables (README.md, docs/*.md) are generated from the report.json files
committed in docs/reports/: the check runs in every clone, and it names the number that differs."""

import pathlib
import shutil
import subprocess
import sys

from tests.conftest import REPO


def run_check(root: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / "docs" / "tables.py")], cwd=root, capture_output=True,
                          text=True, timeout=120)


def test_every_published_table_matches_its_committed_report():
    result = run_check(REPO)
    assert result.returncode == 0, result.stderr


def test_an_edited_number_fails_the_check_and_is_named(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "README.md", root / "README.md")
    page = root / "docs" / "results.md"
    text = page.read_text()
    block = text.index("<!-- results:fashion_mnist -->")
    row = text.index("| gmm |", block)
    cells = text[row:text.index("\n", row)].split(" | ")
    edited_cell = cells[7]  # the fd_classifier column
    edited = text[:row] + text[row:].replace(f" {edited_cell} ", f" {edited_cell}1 ", 1)
    page.write_text(edited)
    result = run_check(root)
    assert result.returncode == 1
    assert "docs/results.md, block fashion_mnist: row 'gmm', column 'fd_classifier'" in result.stderr
    assert f"the page says '{edited_cell}1'" in result.stderr
    page.write_text(text)
    assert run_check(root).returncode == 0


def tables_module():
    """docs/tables.py, imported from its file (docs/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tables", REPO / "docs" / "tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    return tables


def stat(mean: float, sd: float) -> dict:
    """One summary statistic, as experiments/prior_seeds.py writes it."""
    return {"mean": mean, "sd": sd, "values": []}


def test_a_prior_seeds_summary_is_shown_as_mean_and_sd_over_fit_seeds():
    tables = tables_module()
    summary = {"command": "python experiments/prior_seeds.py", "code": {"commit": "0123456789abcdef", "dirty": False},
               "seeds": [0, 1, 2], "n_samples": 5000, "k": 10, "verdicts": [],
               "priors": {"standard_normal": {"latent_nll": stat(276.3, 0.02)},
                          "diffusion": {"latent_nll": stat(210.123, 0.456), "fd_classifier": stat(40.5, 1.25),
                                        "fit_seconds": stat(512.4, 30.0)}},
               "references": {"q(z)": {"fd_classifier": stat(20.0, 0.13)}}}
    body = tables.table(summary, ["latent_nll", "fd_classifier", "fit_seconds"])
    lines = body.splitlines()
    assert lines[0] == ("`python experiments/prior_seeds.py` at commit 0123456789 on the 2-core CPU: 5000 samples per "
                        "prior and seed, mean ± sd over fit seeds [0, 1, 2].")
    assert lines[2] == "| prior | latent NLL (test, nats) | fd_classifier | fit (s) |"
    assert lines[4:] == ["| N(0, I) | 276.3 ± 0.02 | — | — |", "| diffusion | 210.1 ± 0.46 | 40.5 ± 1.2 | 512.4 ± 30 |",
                         "| q(z) (reference) | — | 20 ± 0.13 | — |"]


def test_a_summary_shows_each_prior_against_q_z_and_at_its_best_temperature():
    """The columns read from a prior's `against_q_z` (at T = 1) and `at_best_temperature` entries."""
    tables = tables_module()
    pixelcnn = {"fd_classifier": stat(42.0, 1.0),
                "against_q_z": {"T=1": {"fd_ratio": stat(2.1, 0.05), "recall_below": stat(0.01, 0.004),
                                        "precision_below": stat(0.13, 0.01)},
                                "best T": {"fd_ratio": stat(9.0, 9.0)}},
                "at_best_temperature": {"best_temperature": stat(0.9, 0.1), "fd_classifier": stat(41.0, 2.0),
                                        "gap_closed_fd_classifier": stat(0.89, 0.01)}}
    summary = {"command": "c", "code": {"commit": "0123456789abcdef", "dirty": False}, "seeds": [0, 1, 2],
               "n_samples": 5000, "k": 10, "verdicts": [], "priors": {"pixelcnn": pixelcnn, "gmm": {}},
               "references": {}}
    columns = ["fd_ratio", "precision_below", "best_temperature", "best_fd_classifier",
               "best_gap_closed_fd_classifier", "best_gap_closed_recall"]
    lines = tables.table(summary, columns).splitlines()
    assert lines[2] == ("| prior | FD / q(z)'s | q(z) precision − its | best T (validation) | fd_classifier at best T "
                        "| FD gap closed at best T | recall gap closed at best T |")
    assert lines[4:] == ["| pixelcnn | 2.1 ± 0.05 | 0.13 ± 0.01 | 0.9 ± 0.1 | 41 ± 2 | 0.89 ± 0.01 | — |",
                         "| gmm | — | — | — | — | — | — |"]
