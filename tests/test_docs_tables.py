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
