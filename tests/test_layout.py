"""The architecture as a test: no import cycles, stage 1 never imports stage 2, readers of a
run import no training module, and no module in vae/ outgrows one screenful of concerns."""

import ast
import pathlib

from tests.conftest import REPO

PACKAGES = ("vae", "priors", "configs")
TRAINING = {"vae.stages", "vae.vae_stage", "vae.prior_stage"}
READERS = ("vae.report", "vae.loading", "vae.diagnostics", "vae.classifier", "vae.analysis", "vae.metrics",
           "vae.evaluation", "vae.workdir", "vae.loop")
MAX_LINES = 350


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).glob("*.py"))}


def imports(path: pathlib.Path, known) -> set[str]:
    """Project modules `path` imports, at the top or inside functions (deferred imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}
    return {m for m in found if m in known}


def graph():
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_no_import_cycles():
    g = graph()
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(g[node]):
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join([*stack, node, nxt])
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node, [])


def test_stage_one_never_imports_stage_two_and_readers_import_no_training_module():
    g = graph()
    assert "vae.prior_stage" not in g["vae.vae_stage"] and "vae.vae_stage" not in g["vae.prior_stage"]
    for reader in READERS:
        assert not g[reader] & TRAINING, (reader, g[reader] & TRAINING)
    # experiments drive runs through the orchestrator's entry point, as train.py does
    for path in sorted((REPO / "experiments").glob("*.py")):
        assert not imports(path, modules()) & {"vae.vae_stage", "vae.prior_stage"}, path.name


def test_no_module_in_vae_over_max_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (REPO / "vae").glob("*.py")}
    assert max(sizes.values()) <= MAX_LINES, sizes


def test_no_sys_path_edits():
    """configs, vae and priors are installed packages: no script edits the import path."""
    edit = "sys.path." + "insert"
    for path in [*REPO.glob("**/*.py"), *REPO.glob("notebooks/*.ipynb")]:
        if ".venv" not in path.parts:
            assert edit not in path.read_text(), path
