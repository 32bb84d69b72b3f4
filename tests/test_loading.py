import json
import os
import shutil

import nbformat
import pytest

import vae
from tests.conftest import REPO, read_metrics
from vae.errors import CheckpointError, PriorError
from vae.workdir import checkpoint

NOTEBOOK = REPO / "notebooks" / "inspect_checkpoint.ipynb"


def test_load_reproduces_training_time_evaluation(smoke_workdir):
    run = vae.load(str(smoke_workdir), kind="latest")
    assert list(run.priors) == ["standard_normal", "gmm", "pixelcnn", "transformer"]
    logged = [m for m in read_metrics(smoke_workdir) if m["split"] == "test" and "elbo" in m][-1]
    assert run.step == logged["step"]
    again = run.evaluate("test")
    for key in ("elbo", "recon", "kl"):
        assert again[key] == pytest.approx(logged[key], rel=1e-6, abs=1e-4)


def test_load_picks_best_latest_or_step(smoke_workdir):
    best = json.loads((smoke_workdir / "best_validation_elbo.json").read_text())
    assert vae.load(str(smoke_workdir)).step == best["step"]
    steps = checkpoint.steps(str(smoke_workdir / "checkpoints"))
    assert steps[0] != best["step"]
    # An earlier checkpoint opens without the priors, which belong to the best one.
    assert vae.load(str(smoke_workdir), step=steps[0], learned_priors=False).step == steps[0]
    with pytest.raises(PriorError, match=f"fitted to the VAE at step {best['step']}.*this VAE is step {steps[0]}"):
        vae.load(str(smoke_workdir), step=steps[0])
    with pytest.raises(CheckpointError, match="no checkpoint at step 7"):
        vae.load(str(smoke_workdir), step=7)


def test_load_works_from_any_directory(smoke_workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert vae.load(os.path.relpath(smoke_workdir, tmp_path)).latent_shape == (7, 7, 2)


def test_load_errors(smoke_workdir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vae.load(str(tmp_path / "nope"))
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(smoke_workdir / "config.json", bare / "config.json")
    with pytest.raises(CheckpointError, match="has no VAE checkpoint"):
        vae.load(str(bare))
    mismatched = tmp_path / "mismatched"
    shutil.copytree(smoke_workdir, mismatched)
    config = json.loads((mismatched / "config.json").read_text())
    config["vae"]["conv"]["latent_shape"] = [7, 7, 5]
    (mismatched / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="written for another model"):
        vae.load(str(mismatched))


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "strip outputs before committing"


def test_notebook_runs_top_to_bottom(smoke_workdir, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("WORKDIR", str(smoke_workdir))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # curves, reconstructions, samples, latent map, interpolation, histograms
