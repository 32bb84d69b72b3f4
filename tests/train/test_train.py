import os

import numpy as np
import pytest

from tests.conftest import mnist_config, read_metrics, run_cli
from vae.data import idx
from vae.data.batches import epoch_batch_indices
from vae.errors import TrainingError
from vae.train import stages
from vae.workdir import checkpoint


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
    config.vae.conv.latent_shape = (7, 7, 3)
    with pytest.raises(TrainingError, match=r"different model.*vae.conv.latent_shape"):
        stages.train_and_evaluate(config, str(workdir))


# The full bad-input matrix is in test_bad_input.py; these two are conv-config specific.
@pytest.mark.parametrize("flag, message", [
    ("--config.data.idx_dir=/nonexistent/dir", "/nonexistent/dir"),
    ("--config.vae.conv.latent_shape=(8,8,2)", "does not fit the conv decoder"),
])
def test_cli_bad_input_is_one_clear_error(tmp_path, flag, message, mnist_dir):
    args = ["train.py", "--config", "configs/mnist.py:smoke", "--workdir", str(tmp_path / "w"),
            f"--config.data.idx_dir={mnist_dir}", flag]
    result = run_cli(args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["mnist", "fashion_mnist", "mnist_mlp", "mnist_vq", "fashion_mnist_vq",
                                    "cifar10", "svhn", "celeba64"])
def test_accelerator_preset_changes_only_how_an_epoch_is_called(module):
    import importlib

    get_config = importlib.import_module(f"configs.{module}").get_config
    cpu, accel = get_config("").to_dict(), get_config("accelerator").to_dict()
    for section in ("train", "prior"):
        assert (accel[section]["steps_per_call"], accel[section]["unroll"]) == (0, False)
        cpu[section].update(steps_per_call=0, unroll=False)
    assert accel == cpu
    with pytest.raises(ValueError, match="accelerator"):
        get_config("fast")


@pytest.mark.slow
def test_one_rolled_call_per_epoch_trains_the_same_steps_as_unrolled_chunks(mnist_dir):
    """The accelerator setting (steps_per_call=0, rolled) and the CPU one (chunks of 2,
    unrolled) run the same batches with the same keys: the same parameters after an epoch."""
    import jax
    from flax import nnx

    from vae import models
    from vae.parallel import sharding
    from vae.train import optim, vae_stage

    images = idx.read_idx_pair(*(os.path.join(mnist_dir, f"t10k-{k}-idx{d}-ubyte.gz")
                                            for k, d in (("images", 3), ("labels", 1)))).images[:256]
    params = []
    for steps_per_call, unroll in ((2, True), (0, False)):
        config = mnist_config()
        config.train.update(batch_size=32, steps_per_call=steps_per_call, unroll=unroll)
        graphdef, state = nnx.split(models.create_vae(config))
        tx = optim.make_optimizer(config.train, 8)
        fns = vae_stage.make_step_functions(graphdef, tx, config, sharding.make_mesh(1))
        out, _ = fns.train_epoch(optim.init_state(tx, state), jax.device_put(images), 0, 0)
        assert int(out["step"]) == 8
        params.append(jax.tree.leaves(out["params"]))
    for a, b in zip(*params):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_one_rolled_call_per_epoch_fits_a_prior_the_same_as_unrolled_chunks():
    """The same for stage 2's gradient fit (the smoke PixelCNN, 8 steps). The latents are
    N(0, I) draws: the point is the known answer, identical parameters, not the density."""
    import jax
    from flax import nnx

    import priors
    from vae.parallel import sharding
    from vae.train import loop, optim, prior_fits

    z = jax.random.normal(jax.random.key(1), (256, 7, 7, 2))
    params = []
    for steps_per_call, unroll in ((2, True), (0, False)):
        config = mnist_config()
        config.prior.update(batch_size=32, steps_per_call=steps_per_call, unroll=unroll)
        prior = priors.build("pixelcnn", (7, 7, 2), config.prior)
        tx = optim.make_optimizer(config.prior, 8)
        chunk, _ = prior_fits.make_fit_chunk(config, "pixelcnn", prior, tx, jax.random.key(0), sharding.make_mesh(1))
        state = prior_fits.init_fit_state(tx, nnx.state(prior))
        batches = epoch_batch_indices(jax.random.key(2), 0, 256, 32)
        for s in loop.chunk_slices(8, steps_per_call):
            state, _ = chunk(state, z, batches[s])
        assert int(state["step"]) == 8
        params.append(jax.tree.leaves(state["params"]))
    for a, b in zip(*params):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
