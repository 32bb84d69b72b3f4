"""The multi-host write protocol lives in `vae.workdir.writes` alone, every helper of it is
used, and every workdir function that writes follows it: process 0 writes, inside a
`collective` (barriers on both sides), and every process decides from process 0's reading."""

import ast
import json

import jax
import pytest

from tests.conftest import REPO, mnist_config
from vae.parallel import multihost
from vae.workdir import Workdir, writes

PACKAGE = REPO / "vae" / "workdir"
OWN_PROTOCOL = ("writes.py", "checkpoint.py")  # checkpoint.py: Orbax's own (every process saves)
WRITING_CALLS = {"write_atomically", "append_json_line", "move"}  # writes.*, shutil.move


def modules():
    return {p.name: ast.parse(p.read_text()) for p in sorted(PACKAGE.glob("*.py"))}


def attribute_uses(tree, owner: str) -> set[str]:
    return {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == owner}


def test_every_helper_of_the_protocol_is_used_by_the_workdir():
    helpers = {n.name for n in modules()["writes.py"].body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    assert helpers == {"is_writer", "collective", "read_json", "list_dir", "json_lines", "write_atomically",
                       "append_json_line"}
    used = set().union(*(attribute_uses(tree, "writes") for name, tree in modules().items() if name != "writes.py"))
    assert helpers <= used, f"unused in vae/workdir: {sorted(helpers - used)}"


def test_no_other_workdir_module_talks_to_other_processes():
    for name, tree in modules().items():
        if name in OWN_PROTOCOL:
            continue
        source = ast.unparse(tree)
        assert "multihost" not in source and "process_index" not in source, name


def test_every_function_that_writes_is_collective_and_writes_from_process_0_only():
    writers = []
    for name, tree in modules().items():
        if name in OWN_PROTOCOL:
            continue
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            calls = {c.func.attr for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)}
            if calls & WRITING_CALLS:
                writers.append(f"{name}:{fn.name}")
                assert any(ast.unparse(d) == "writes.collective" for d in fn.decorator_list), f"{name}:{fn.name}"
                assert "is_writer" in calls, f"{name}:{fn.name} writes from every process"
    assert len(writers) >= 6, writers  # config, metrics append/rewind, best, prior record, set aside


# ----------------------------------------------------------------------------- as another process


@pytest.fixture
def processes(monkeypatch):
    """Runs the workdir as process `as_process` of two: records the barriers, and stands in
    for the broadcast with what process 0 read (`process_0`, else the value passed)."""
    seen = {"barriers": [], "broadcast": [], "process_0": None}

    def broadcast(value):
        seen["broadcast"].append(value)
        return value if seen["process_0"] is None else seen["process_0"]

    def become(index: int, process_0=None):
        monkeypatch.setattr(jax, "process_index", lambda: index)
        seen["process_0"] = process_0

    monkeypatch.setattr(multihost, "barrier", seen["barriers"].append)
    monkeypatch.setattr(multihost, "process_0_value", broadcast)
    seen["become"] = become
    return seen


def test_another_process_writes_nothing_and_reads_process_0s_files(tmp_path, processes):
    wd = Workdir(str(tmp_path))
    processes["become"](1)
    wd.append_metrics({"step": 1, "split": "train"})
    wd.write_best(1, -90.0)
    wd.save_config(mnist_config("mnist_mlp"))
    assert list(tmp_path.iterdir()) == []
    assert processes["barriers"] == ["before _append", "after _append", "before write_best", "after write_best",
                                     "before save_config", "after save_config"]

    theirs = [{"step": 7, "split": "validation"}]
    processes["become"](1, process_0=theirs)  # this host's view of the file differs from process 0's
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train"}) + "\n")
    assert wd.read_metrics() == theirs and processes["broadcast"][-1] is None  # it read nothing itself


def test_process_0_writes_and_shares_what_it_read(tmp_path, processes):
    wd = Workdir(str(tmp_path))
    processes["become"](0)
    wd.append_metrics({"step": 1, "split": "train"})
    wd.append_metrics({"step": 2, "split": "train"})
    wd.rewind_metrics(1)
    assert wd.read_metrics() == [{"step": 1, "split": "train"}]
    assert processes["broadcast"][-1] == [{"step": 1, "split": "train"}]  # what the others receive
    assert "before rewind_metrics" in processes["barriers"]
    (tmp_path / "priors" / "made").mkdir(parents=True)
    assert writes.list_dir(str(tmp_path / "priors")) == ["made"] and processes["broadcast"][-1] == ["made"]


def test_write_atomically_replaces_the_whole_file(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("old")
    writes.write_atomically(str(path), "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
