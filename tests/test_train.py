import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import REPO, mnist_config, read_metrics
from vae import checkpoint, train_lib


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
    train_lib.train_and_evaluate(config, str(workdir))
    assert read_metrics(workdir) == before  # finished run: nothing retrained, nothing re-logged


def _params(workdir, config):
    model = train_lib.create_vae(config)
    graphdef, params = nnx.split(model)
    tx = train_lib.make_optimizer(config.train, 1)
    target = {"params": params, "opt_state": tx.init(params), "step": jax.numpy.asarray(0)}
    return checkpoint.restore(os.path.join(workdir, "checkpoints"), target)["params"]


def test_resume_gives_the_same_parameters_as_a_straight_run(tmp_path, mnist_dir):
    config = mnist_config("mnist_mlp")
    config.stage = "vae"
    config.train.num_epochs = 2
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    train_lib.train_and_evaluate(config, str(straight))
    train_lib.train_and_evaluate(config, str(halves), max_epochs_this_run=1)
    assert checkpoint.latest(str(halves / "checkpoints")) == 2048 // 64  # stopped after one epoch
    train_lib.train_and_evaluate(config, str(halves))
    a, b = _params(straight, config), _params(halves, config)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, mnist_dir):
    config = mnist_config("mnist_mlp")
    config.stage = "vae"
    config.train.num_epochs = 2
    train_lib.train_and_evaluate(config, str(tmp_path), max_epochs_this_run=1)
    good = checkpoint.latest(str(tmp_path / "checkpoints"))
    config.train.learning_rate = 1e30  # blows the parameters up in the second epoch
    config.train.grad_clip_norm = 1e30
    with pytest.raises(train_lib.TrainingError, match=r"non-finite \w+ at step \d+"):
        train_lib.train_and_evaluate(config, str(tmp_path))
    assert checkpoint.latest(str(tmp_path / "checkpoints")) == good
    params = _params(tmp_path, config)
    assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree.leaves(params))


def test_workdir_of_another_model_is_refused(smoke_workdir, copy_of):
    workdir = copy_of(smoke_workdir)
    config = mnist_config()
    config.vae.latent_shape = (7, 7, 3)
    with pytest.raises(train_lib.TrainingError, match=r"different model.*vae.latent_shape"):
        train_lib.train_and_evaluate(config, str(workdir))


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flag, message", [
    ("--config.vae.no_such_key=1", "no_such_key"),
    ("--config.data.name=svhn", "config.data.name='svhn' is not a known dataset"),
    ("--config.data.idx_dir=/nonexistent/dir", "/nonexistent/dir"),
    ("--config.vae.latent_shape=(8,8,2)", "does not fit the conv decoder"),
])
def test_cli_bad_input_is_one_clear_error(tmp_path, flag, message, mnist_dir):
    args = ["train.py", "--config", "configs/mnist.py:smoke", "--workdir", str(tmp_path / "w"),
            f"--config.data.idx_dir={mnist_dir}", flag]
    result = run_cli(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
