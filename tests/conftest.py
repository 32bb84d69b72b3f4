"""Shared fixtures and helpers.

Session fixtures train once and are shared read-only (tests that change a run copy it first):
  smoke_workdir  the main job's pipeline (conv VAE + GMM + PixelCNN + transformer) on MNIST's smoke preset
  smoke_report   sample.py's comparison on it
  straight_run   the MLP smoke VAE (6 epochs) and a MADE prior, uninterrupted, for the
                 resume/bad-input tests to compare against
  dvae_run       the smoke dVAE and a code PixelCNN fitted to draws of its posterior
Real MNIST comes from ../shared; CLI helpers run train.py/sample.py as real subprocesses.

Compiling is most of a smoke run's time on the CPU, and many tests compile the same programs:
every process of the session, the workers and the subprocesses they launch, compiles at LLVM
level 2 (SUITE_XLA_FLAG below) and shares one persistent JAX compilation cache, a temporary
directory removed when the session ends. Set JAX_COMPILATION_CACHE_DIR to keep one between sessions.

Two tiers: `python -m pytest -m "not slow"` for someone changing one module (no training run),
and the whole suite. Every test that needs one of the session runs is marked slow here; a test
that trains on its own is marked `@pytest.mark.slow` where it is defined.

README's test command runs the suite on 2 pytest-xdist workers with `--dist loadgroup`:
`pytest_collection_modifyitems` puts every test that needs one of these session fixtures, or
a module-scoped fixture, in one group, so one worker builds each fixture once and the other
runs everything else meanwhile. `python -m pytest tests/test_x.py` runs in one process.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from vae import xla_flags

# LLVM optimization level 2 for the programs the suite compiles, its subprocesses' included,
# instead of XLA's default 3. The suite compiles hundreds of small programs, and level 3 compiles
# each about 3x slower on the 2-core CPU; it runs the smoke models no faster (the smoke main job:
# 50 s at level 3, 34 s at level 2), though it runs long elementwise programs faster (the
# 256^3-colour sums of tests/models/test_losses.py: ~3x). The full suite's test time: 1,990 s at
# level 3, 1,630 s at level 2. Float results change in their last bits; tests that compare
# parallel paths allow for that (`assert_same_training`). A level the environment sets wins.
SUITE_XLA_FLAG = "--xla_backend_optimization_level=2"
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SUITE_XLA_FLAG}".strip()
xla_flags.apply_cpu_defaults()  # as the entry points do (vae.cli.run), before JAX's backend starts


def _share_one_compilation_cache() -> str | None:
    """Points this process, and through the environment every process it starts (pytest-xdist's
    workers included), at one persistent compilation cache; returns its path when this process
    made it. Every program is cached however fast it compiled. No size limit: one would turn on
    JAX's file lock and a scan of the whole directory at every write, which serialized the two
    workers. Unlocked, a process that reads an entry another is still writing cannot decompress
    it, and JAX then warns and compiles (`jax._src.compiler._cache_read`)."""
    made = None
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        made = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vae-tests-jax-cache-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return made


_MADE_COMPILATION_CACHE = _share_one_compilation_cache()


def pytest_sessionfinish(session):
    if _MADE_COMPILATION_CACHE is not None:  # the process that made it: the controller, or the only one
        shutil.rmtree(_MADE_COMPILATION_CACHE, ignore_errors=True)


REPO = pathlib.Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"
FASHION_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


def mnist_config(module="mnist", preset="smoke"):
    import importlib

    config = importlib.import_module(f"configs.{module}").get_config(preset)
    config.data.idx_dir = str(MNIST_DIR)
    return config


SHARED_FIXTURES = ("smoke_workdir", "straight_run", "dvae_run")  # session fixtures worth building once


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the marks
def pytest_collection_modifyitems(config, items):
    """Group the tests sharing an expensive fixture onto one xdist worker (see the docstring)."""
    for item in items:
        names = item.fixturenames  # the whole closure: smoke_report brings smoke_workdir
        group = next((name for name in SHARED_FIXTURES if name in names), None)
        if group is not None:  # a trained run: not for the quick tier
            item.add_marker(pytest.mark.slow)
        if group is None and any(d[-1].scope == "module" for d in item._fixtureinfo.name2fixturedefs.values()):
            group = item.module.__name__
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def mnist_dir():
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST test split not found at {MNIST_DIR}")
    return MNIST_DIR


@pytest.fixture(scope="session")
def smoke_workdir(mnist_dir, tmp_path_factory):
    """The main job's pipeline (VAE + GMM + PixelCNN + transformer) on MNIST's smoke preset, trained once."""
    from vae.train import stages

    workdir = tmp_path_factory.mktemp("smoke") / "run"
    stages.train_and_evaluate(mnist_config(), str(workdir))
    return workdir


SMOKE_REPORT_N = 500


@pytest.fixture(scope="session")
def smoke_report(smoke_workdir, tmp_path_factory):
    """(out_dir, report) of sample.py's comparison on the smoke main job, with two temperatures
    and the bound at k = 1 and 10 on 50 test images."""
    from vae.evaluation import report

    out = tmp_path_factory.mktemp("report")
    return out, report.compare(str(smoke_workdir), str(out), n_samples=SMOKE_REPORT_N, k=10, command="test",
                               temperatures=(0.8, 1.0), k_values=(1, 10), k_images=50)


@pytest.fixture(scope="session")
def dvae_run(mnist_dir, tmp_path_factory):
    """(workdir, the code maps each epoch of the prior's fit read): configs/mnist_dvae.py:smoke
    trained once, and pixelcnn_codes fitted to draws of its q(c|x)."""
    from vae.train import prior_fits, stages

    config = mnist_config("mnist_dvae")
    config.prior.name = "pixelcnn_codes"
    workdir, draws = tmp_path_factory.mktemp("dvae") / "run", []
    fit_latents = prior_fits.fit_latents

    def spy(key, posterior, fit_target):
        z = fit_latents(key, posterior, fit_target)
        draws.append(np.asarray(z))
        return z

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prior_fits, "fit_latents", spy)
        stages.train_and_evaluate(config, str(workdir))
    return workdir, draws


@pytest.fixture
def copy_of(tmp_path):
    def _copy(src):
        dst = tmp_path / "copy"
        shutil.copytree(src, dst)
        return dst

    return _copy


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- the MLP run and the CLI


EPOCHS = 6  # of 32 steps each on the MLP smoke preset
TIMING_KEYS = ("steps_per_sec", "images_per_sec")


def mlp_config(**overrides):
    config = mnist_config("mnist_mlp")
    config.stage = "vae"
    config.train.num_epochs = EPOCHS
    config.prior.name = "made"
    config.prior.num_epochs = 4
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    return config


def cli_args(workdir, *extra):
    return ["train.py", "--config", "configs/mnist_mlp.py:smoke", "--workdir", str(workdir),
            f"--config.data.idx_dir={MNIST_DIR}", f"--config.train.num_epochs={EPOCHS}",
            "--config.prior.name=made", "--config.prior.num_epochs=4", *extra]


def subprocess_env():
    """This process's environment (the shared compilation cache included) on the CPU, without progress bars."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "TQDM_DISABLE": "1"}


def run_cli(args, env=None, prefix=()):
    return subprocess.run([*prefix, sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


def vae_state(workdir, config, kind="latest"):
    from flax import nnx

    from vae import models
    from vae.train import optim
    from vae.workdir import checkpoint

    graphdef, params = nnx.split(models.create_vae(config))
    target = optim.init_state(optim.make_optimizer(config.train, 1), params)
    return checkpoint.restore(os.path.join(workdir, "checkpoints"), target, kind=kind)


def assert_trees_equal(a, b):
    import jax
    import numpy as np

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_same_training(a, b, rtol=2e-4, atol=2e-5):
    """Parameter lists (or trees) of one run trained along two parallel paths (devices, processes):
    the same sums in another order. Float32 rounding then differs in the last bits, and Adam
    turns it into a visible step wherever a parameter's gradient is near zero, so single
    entries may differ by more than an elementwise tolerance; a wrong parallel path moves whole
    tensors. So each tensor's RMS difference must be within rtol of its RMS plus atol."""
    import jax
    import numpy as np

    for i, (x, y) in enumerate(zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape, (i, x.shape, y.shape)
        rms_diff, rms = np.sqrt(np.mean((x - y) ** 2)), np.sqrt(np.mean(y ** 2))
        assert rms_diff <= rtol * rms + atol, f"tensor {i} {x.shape}: RMS difference {rms_diff:.3g}, RMS {rms:.3g}"


def without_timing(records):
    """Records without wall-clock figures: timing keys, and stage 2's "fit" records (a fit's
    wall time, logged by the run that finishes it, which a kill at the end can skip)."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records if r.get("split") != "fit"]


def assert_every_checkpoint_restores(ckpt_dir, target):
    from vae.workdir import checkpoint

    for kind in ("latest", "best"):
        for step in checkpoint.steps(ckpt_dir, kind):
            restored = checkpoint.restore(ckpt_dir, target, step=step, kind=kind)
            assert int(restored["step"]) == step


@pytest.fixture(scope="session")
def straight_run(mnist_dir, tmp_path_factory):
    """The MLP smoke VAE (6 epochs) and a MADE prior on it, uninterrupted, in-process."""
    workdir = tmp_path_factory.mktemp("straight") / "run"
    from vae.train import stages

    stages.train_and_evaluate(mlp_config(), str(workdir))
    config = mlp_config()
    config.stage = "prior"
    stages.train_and_evaluate(config, str(workdir))
    return workdir


def trained_steps(workdir, prior=None):
    return [r["step"] for r in (read_metrics(workdir) if os.path.exists(os.path.join(workdir, "metrics.jsonl")) else [])
            if r["split"] == "train" and r.get("prior") == prior]


def snapshot(directory):
    """{relative path: sha256} of every file under `directory`."""
    import hashlib

    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out
