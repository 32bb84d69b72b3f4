"""The architecture as a test: no import cycles, stage 1 never imports stage 2, readers of a
run import no training module, and no module in vae/ outgrows one screenful of concerns."""

import ast
import pathlib

from tests.conftest import REPO

PACKAGES = ("vae", "priors", "configs")
SUBPACKAGES = ("data", "models", "train", "workdir", "evaluation", "parallel")
MAX_LINES = 300


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


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


def closure(g, start) -> set[str]:
    """Every project module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for nxt in g[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_stage_one_never_imports_stage_two_and_readers_import_no_training_module():
    g = graph()
    assert "vae.train.prior_stage" not in closure(g, "vae.train.vae_stage")
    assert "vae.train.vae_stage" not in closure(g, "vae.train.prior_stage")
    # The stages are training; the fit loop and the optimizer are shared machinery (the
    # report's feature classifier is fitted by them too).
    training = {"vae.train", "vae.train.stages", "vae.train.vae_stage", "vae.train.prior_stage"}
    readers = [m for m in g if m.startswith(("vae.evaluation", "vae.workdir", "vae.data", "vae.models",
                                             "vae.parallel", "priors"))] + ["vae.loading"]
    for reader in readers:
        assert not closure(g, reader) & training, (reader, closure(g, reader) & training)
    # experiments drive runs through the orchestrator's entry point, as train.py does
    for path in sorted((REPO / "experiments").glob("*.py")):
        assert not imports(path, modules()) & {"vae.train.vae_stage", "vae.train.prior_stage"}, path.name


def test_layers_do_not_reach_up():
    """data and parallel sit at the bottom: they import no model, training, storage or evaluation
    code; models import no training, storage or evaluation code; priors import nothing from vae."""
    g = graph()
    for module, deps in g.items():
        below = closure(g, module)
        if module.startswith(("vae.data", "vae.parallel")):
            assert not {d for d in below if d.startswith(("vae.models", "vae.train", "vae.evaluation",
                                                          "vae.workdir"))}, module
        if module.startswith("vae.models"):
            assert not {d for d in below if d.startswith(("vae.train", "vae.evaluation", "vae.workdir"))}, module
        if module.startswith("priors"):  # a prior never touches the VAE's code; the generic registry is no VAE code
            assert not {d for d in deps if d.startswith("vae")} - {"vae.registry"}, module


def test_vae_is_in_subpackages_and_tests_mirror_them():
    top = sorted(p.name for p in (REPO / "vae").glob("*.py"))
    assert top == ["__init__.py", "cli.py", "errors.py", "loading.py", "registry.py", "rng.py", "xla_flags.py"], top
    for pkg in SUBPACKAGES:
        assert (REPO / "vae" / pkg / "__init__.py").exists(), pkg
        assert (REPO / "tests" / pkg).is_dir(), f"tests/{pkg} mirrors vae/{pkg}"


def test_no_module_over_max_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines())
             for pkg in ("vae", "priors") for p in (REPO / pkg).rglob("*.py")}
    assert max(sizes.values()) <= MAX_LINES, {k: v for k, v in sizes.items() if v > MAX_LINES}


def test_no_noqa_to_pack_lines():
    """No packed lambdas marked to dodge the linter: code is read more than run."""
    for pkg in ("vae", "priors"):
        for path in (REPO / pkg).rglob("*.py"):
            assert "noqa: E731" not in path.read_text(), path


def test_no_sys_path_edits():
    """configs, vae and priors are installed packages: no script edits the import path."""
    edit = "sys.path." + "insert"
    for path in [*REPO.glob("**/*.py"), *REPO.glob("notebooks/*.ipynb")]:
        if ".venv" not in path.parts:
            assert edit not in path.read_text(), path


def test_importing_vae_changes_no_environment():
    """`import vae` has no side effect: the XLA defaults are applied by the entry points."""
    import os
    import subprocess
    import sys

    code = ("import os; before = dict(os.environ); import vae, vae.models, vae.train.stages; "
            "print(before == dict(os.environ))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.stdout.strip() == "True", out.stderr[-2000:]
