import os

import numpy as np
import pytest

from tests.conftest import mnist_config, read_metrics, run_cli
from vae import checkpoint, stages
from vae.errors import TrainingError


def test_smoke_run_writes_everything_and_improves(smoke_workdir):
    for name in ("config.json", "metrics.jsonl", "best_validation_elbo.json"):
        assert (smoke_workdir / name).is_file()
    assert checkpoint.latest(str(smoke_workdir / "checkpoints")) == 6 * (2048 // 64)
    assert checkpoint.latest(str(smoke_workdir / "checkpoints"), "best") is not None
    pngs = sorted(os.listdir(smoke_workdir / "samples"))
    assert any(p.startswith("reconstructions_") for p in pngs) and any(p.startswith("prior_samples_") for p in pngs)
    val = [m for m in read_metrics(smoke_workdir) if m["split"] == "validation" and "elbo" in m]
    assert val[0]["step"] == 0 and val[-1]["elbo"] > val[0]["elbo"] + 200.0  # nats: -563 -> about -150
    assert all(np.isfinite(m["elbo"]) for m in val)
    train = [m for m in read_metrics(smoke_workdir) if m["split"] == "train" and "images_per_sec" in m]
    assert train and all(m["images_per_sec"] > 0 for m in train)


def test_second_run_resumes_instead_of_starting_over(smoke_workdir, copy_of):
    workdir = copy_of(smoke_workdir)
    before = read_metrics(workdir)
    config = mnist_config()
    config.stage = "vae"
    stages.train_and_evaluate(config, str(workdir))
    assert read_metrics(workdir) == before  # finished run: nothing retrained, nothing re-logged


def test_workdir_of_another_model_is_refused(smoke_workdir, copy_of):
    workdir = copy_of(smoke_workdir)
    config = mnist_config()
    config.vae.latent_shape = (7, 7, 3)
    with pytest.raises(TrainingError, match=r"different model.*vae.latent_shape"):
        stages.train_and_evaluate(config, str(workdir))


# The full bad-input matrix is in test_bad_input.py; these two are conv-config specific.
@pytest.mark.parametrize("flag, message", [
    ("--config.data.idx_dir=/nonexistent/dir", "/nonexistent/dir"),
    ("--config.vae.latent_shape=(8,8,2)", "does not fit the conv decoder"),
])
def test_cli_bad_input_is_one_clear_error(tmp_path, flag, message, mnist_dir):
    args = ["train.py", "--config", "configs/mnist.py:smoke", "--workdir", str(tmp_path / "w"),
            f"--config.data.idx_dir={mnist_dir}", flag]
    result = run_cli(args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
