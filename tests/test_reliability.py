"""Preemption, non-finite guards, bad input and determinism (README "Resuming and failure
behaviour"). Interrupted runs are real subprocesses of train.py killed with real signals."""

import errno
import hashlib
import json
import os
import random
import re
import signal
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import MNIST_DIR, REPO, mnist_config, read_metrics
from vae import checkpoint, prior_lib, train_lib

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


def subprocess_env(tmp_path_factory):
    # Every resumed process compiles the same functions: a shared persistent cache saves that.
    cache = str(tmp_path_factory.getbasetemp() / "jax_cache")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "TQDM_DISABLE": "1", "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def run_cli(args, env=None, prefix=()):
    return subprocess.run([*prefix, sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


def vae_state(workdir, config, kind="latest"):
    model = train_lib.create_vae(config)
    graphdef, params = nnx.split(model)
    tx = train_lib.make_optimizer(config.train, 1)
    target = {"params": params, "opt_state": tx.init(params), "step": jax.numpy.asarray(0, jax.numpy.int32)}
    return checkpoint.restore(os.path.join(workdir, "checkpoints"), target, kind=kind)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def assert_every_checkpoint_restores(ckpt_dir, target):
    for kind in ("latest", "best"):
        for step in checkpoint.steps(ckpt_dir, kind):
            restored = checkpoint.restore(ckpt_dir, target, step=step, kind=kind)
            assert int(restored["step"]) == step


@pytest.fixture(scope="session")
def straight_run(mnist_dir, tmp_path_factory):
    """The MLP smoke VAE (6 epochs) and a MADE prior on it, uninterrupted, in-process."""
    workdir = tmp_path_factory.mktemp("straight") / "run"
    train_lib.train_and_evaluate(mlp_config(), str(workdir))
    prior_lib.fit_priors(mlp_config(), str(workdir))
    return workdir


# ----------------------------------------------------------------------------- kill and resume


def wait_for(predicate, process, timeout=120.0, poll=0.002):
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(poll)
    raise TimeoutError("training subprocess made no progress")


def writing_checkpoint(directory):
    def check():
        for kind in ("latest", "best"):
            path = os.path.join(directory, kind)
            if os.path.isdir(path) and any("tmp" in n for n in os.listdir(path)):
                return True
        return False
    return check


def trained_steps(workdir, prior=None):
    return [r["step"] for r in (read_metrics(workdir) if os.path.exists(os.path.join(workdir, "metrics.jsonl")) else [])
            if r["split"] == "train" and r.get("prior") == prior]


def interrupt_and_resume(args, workdir, ckpt_dir, env, plan, prior=None):
    """Runs `args` until it finishes, interrupting it as `plan` says; returns what happened."""
    rng = random.Random(0)
    happened = []
    for how, sig in plan:
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        done_before = len(trained_steps(workdir, prior))
        if how == "checkpoint_write":
            reached = wait_for(writing_checkpoint(ckpt_dir), proc)
        else:  # a random moment once this process has trained an epoch
            reached = wait_for(lambda: len(trained_steps(workdir, prior)) > done_before, proc)
            time.sleep(rng.uniform(0.0, 0.6))
        if reached and proc.poll() is None:
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=300)
        happened.append((how, sig, proc.returncode, stderr))
    final = run_cli(args, env)
    assert final.returncode == 0, final.stderr[-3000:]
    return happened


def test_vae_killed_at_random_points_resumes_to_identical_parameters(straight_run, tmp_path, tmp_path_factory):
    workdir = tmp_path / "killed"
    ckpt_dir = str(workdir / "checkpoints")
    env = subprocess_env(tmp_path_factory)
    plan = [("checkpoint_write", signal.SIGKILL), ("random", signal.SIGKILL), ("random", signal.SIGTERM),
            ("random", signal.SIGINT), ("checkpoint_write", signal.SIGKILL)]
    happened = interrupt_and_resume(cli_args(workdir, "--config.stage=vae"), workdir, ckpt_dir, env, plan)

    killed = [h for h in happened if h[2] == -signal.SIGKILL]
    assert len(killed) >= 2, [h[:3] for h in happened]
    for how, sig, rc, stderr in happened:
        if sig != signal.SIGKILL and rc not in (0, None):  # SIGTERM/SIGINT: saved, then a clean exit
            assert rc == 128 + sig, stderr[-2000:]
            assert f"stopped by {signal.Signals(sig).name}" in stderr and "Traceback" not in stderr
    config = mlp_config()
    assert_trees_equal(vae_state(workdir, config), vae_state(straight_run, config))
    assert_trees_equal(vae_state(workdir, config, "best"), vae_state(straight_run, config, "best"))
    vae_records = lambda w: [r for r in read_metrics(w) if "prior" not in r]
    assert without_timing(vae_records(workdir)) == without_timing(vae_records(straight_run))
    assert json.loads((workdir / "best_validation_elbo.json").read_text()) == json.loads(
        (straight_run / "best_validation_elbo.json").read_text())
    target = vae_state(straight_run, config)
    assert_every_checkpoint_restores(ckpt_dir, target)


def test_prior_fit_killed_at_random_points_resumes_to_identical_parameters(straight_run, tmp_path, tmp_path_factory):
    workdir = tmp_path / "killed"
    shutil.copytree(straight_run, workdir, ignore=shutil.ignore_patterns("priors"))
    records = [r for r in read_metrics(workdir) if "prior" not in r]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    state_dir = str(workdir / "priors" / "made" / "train_state")
    env = subprocess_env(tmp_path_factory)
    plan = [("checkpoint_write", signal.SIGKILL), ("random", signal.SIGTERM), ("random", signal.SIGKILL)]
    happened = interrupt_and_resume(cli_args(workdir, "--config.stage=prior"), workdir, state_dir, env, plan,
                                    prior="made")
    assert any(h[2] == -signal.SIGKILL for h in happened), [h[:3] for h in happened]
    latent_shape = (16,)
    a = prior_lib.load_prior(str(workdir), "made", latent_shape)
    b = prior_lib.load_prior(str(straight_run), "made", latent_shape)
    assert_trees_equal(nnx.state(a), nnx.state(b))
    made_records = lambda w: [r for r in read_metrics(w) if r.get("prior") == "made"]
    assert without_timing(made_records(workdir)) == without_timing(made_records(straight_run))


# ----------------------------------------------------------------------------- non-finite guard


def test_non_finite_loss_keeps_last_good_checkpoint_and_resume_starts_from_it(straight_run, tmp_path):
    workdir = tmp_path / "w"
    config = mlp_config(**{"train.num_epochs": 2})
    train_lib.train_and_evaluate(config, str(workdir), max_epochs_this_run=1)
    good = checkpoint.latest(str(workdir / "checkpoints"))
    poisoned = mlp_config(**{"train.num_epochs": 2, "train.learning_rate": 1e30, "train.grad_clip_norm": 1e30})
    with pytest.raises(train_lib.TrainingError, match=r"non-finite (loss|recon|kl|grad_norm) at step (\d+)") as e:
        train_lib.train_and_evaluate(poisoned, str(workdir))
    assert good <= int(re.search(r"at step (\d+)", str(e.value)).group(1)) < 2 * good
    assert f"latest checkpoint (step {good}) is the last good one" in str(e.value)
    assert checkpoint.latest(str(workdir / "checkpoints")) == good
    train_lib.train_and_evaluate(config, str(workdir))  # fixed config: resumes from the good one
    assert trained_steps(workdir) == [good, 2 * good]
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(vae_state(workdir, config)))


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_metrics_and_parameters(straight_run, tmp_path):
    config = mlp_config()
    train_lib.train_and_evaluate(config, str(tmp_path / "again"))
    assert_trees_equal(vae_state(tmp_path / "again", config), vae_state(straight_run, config))
    again = [r for r in read_metrics(tmp_path / "again")]
    assert without_timing(again) == without_timing([r for r in read_metrics(straight_run) if "prior" not in r])
    recorded = json.loads((tmp_path / "again" / "config.json").read_text())
    assert recorded["seed"] == config.seed and recorded["data"]["split_seed"] == config.data.split_seed


# ----------------------------------------------------------------------------- bad input


def snapshot(directory):
    """{relative path: sha256} of every file under `directory`."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def write_idx_dir(directory, breakage):
    """A copy of the real MNIST IDX files with one thing broken."""
    import gzip

    directory.mkdir()
    for name in os.listdir(MNIST_DIR):
        shutil.copy(MNIST_DIR / name, directory / name)
    images, labels = directory / "t10k-images-idx3-ubyte.gz", directory / "t10k-labels-idx1-ubyte.gz"
    if breakage == "missing":
        labels.unlink()
    elif breakage == "truncated":
        raw = gzip.open(images).read()
        with gzip.open(images, "wb") as f:
            f.write(raw[: len(raw) // 2])
    elif breakage == "magic":
        raw = bytearray(gzip.open(images).read())
        raw[2] = 0x0D
        with gzip.open(images, "wb") as f:
            f.write(bytes(raw))
    elif breakage == "labels":
        raw = bytearray(gzip.open(labels).read())
        raw[8 + 17] = 42
        with gzip.open(labels, "wb") as f:
            f.write(bytes(raw))
    return directory


BAD_TRAIN_INPUT = [
    ("unknown_key", ["--config.vae.no_such_key=1"], "no_such_key"),
    ("wrong_type", ["--config.train.batch_size=many"], "batch_size"),
    ("negative_latent_dim", ["--config.vae.latent_dim=-3"], "config.vae.latent_dim=-3"),
    ("zero_batch", ["--config.train.batch_size=0"], "config.train.batch_size=0 is out of range"),
    ("bad_kl", ["--config.vae.kl=exact"], "config.vae.kl='exact'"),
    ("unknown_dataset", ["--config.data.name=svhn"], "config.data.name='svhn' is not a known dataset"),
    ("idx_missing", "missing", "t10k-labels-idx1-ubyte.gz"),
    ("idx_truncated", "truncated", "truncated or corrupt"),
    ("idx_magic", "magic", "bad magic number"),
    ("idx_labels", "labels", "labels up to"),
    ("other_model", ["--config.vae.latent_dim=8"], "vae.latent_dim: 16 in workdir, 8 now"),
    ("other_seed", ["--config.seed=3"], "seed: 0 in workdir, 3 now"),
]


@pytest.mark.parametrize("case, change, message", BAD_TRAIN_INPUT, ids=[c[0] for c in BAD_TRAIN_INPUT])
def test_bad_training_input_is_one_clear_error_and_touches_nothing(straight_run, tmp_path, case, change, message):
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    before = snapshot(workdir)
    extra = change
    if isinstance(change, str):  # a broken copy of the data
        extra = [f"--config.data.idx_dir={write_idx_dir(tmp_path / 'idx', change)}"]
    result = run_cli([*cli_args(workdir, "--config.stage=vae"), *extra])
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert snapshot(workdir) == before


def test_fresh_moves_a_foreign_workdir_aside_and_starts_over(straight_run, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    before = snapshot(workdir)
    result = run_cli([*cli_args(workdir, "--config.stage=vae", "--config.train.num_epochs=1"),
                      "--config.vae.latent_dim=8", "--fresh"])
    assert result.returncode == 0, result.stderr[-2000:]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("w.old-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before  # the old run, untouched
    assert json.loads((workdir / "config.json").read_text())["vae"]["latent_dim"] == 8


def test_corrupt_checkpoint_is_a_clear_error_naming_it(straight_run, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    last = checkpoint.latest(str(workdir / "checkpoints"))
    for root, _, files in os.walk(workdir / "checkpoints" / "latest" / str(last) / "default"):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.write(b"\x00garbage" * 4)
    before = snapshot(workdir)
    result = run_cli(cli_args(workdir, "--config.stage=vae", f"--config.train.num_epochs={EPOCHS + 1}"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot restore checkpoint {workdir}/checkpoints/latest/{last}" in result.stderr
    assert "previous checkpoint (step" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(workdir) == before


def test_partial_checkpoint_directory_is_skipped_and_kept(straight_run, tmp_path):
    """A step directory without orbax's metadata (an interrupted copy) is not a checkpoint:
    the run resumes from the last finished one and the partial directory is kept aside."""
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    last = checkpoint.latest(str(workdir / "checkpoints"))
    partial = workdir / "checkpoints" / "latest" / str(last + 32)
    shutil.copytree(workdir / "checkpoints" / "latest" / str(last) / "default" / "d", partial / "default" / "d")
    result = run_cli(cli_args(workdir, "--config.stage=vae", f"--config.train.num_epochs={EPOCHS + 1}"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "not a finished checkpoint" in result.stderr
    assert checkpoint.latest(str(workdir / "checkpoints")) == last + 32
    assert trained_steps(workdir)[-1] == last + 32
    assert any(p.name.startswith(f"{last + 32}.unfinished") for p in (workdir / "checkpoints" / "latest").iterdir())


def test_disk_full_while_saving_keeps_the_previous_checkpoint(straight_run, tmp_path, monkeypatch):
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    last = checkpoint.latest(str(workdir / "checkpoints"))
    real_save = checkpoint.ocp.CheckpointManager.save

    def full_disk(self, step, *args, **kwargs):  # writes part of the step, then runs out of space
        os.makedirs(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp"), exist_ok=True)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", full_disk)
    config = mlp_config(**{"train.num_epochs": EPOCHS + 1})
    with pytest.raises(checkpoint.CheckpointError, match=rf"No space left on device.*previous one \(step {last}\) is intact"):
        train_lib.train_and_evaluate(config, str(workdir))
    assert checkpoint.latest(str(workdir / "checkpoints")) == last
    monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", real_save)
    train_lib.train_and_evaluate(config, str(workdir))  # space freed: resumes from `last`
    assert checkpoint.latest(str(workdir / "checkpoints")) == last + 32


def test_non_writable_workdir_is_a_clear_error(straight_run, tmp_path):
    workdir = tmp_path / "locked"
    shutil.copytree(straight_run, workdir)
    before = snapshot(workdir)
    prefix = ()
    if os.geteuid() == 0:  # root ignores permission bits unless it gives up the capability to
        if not shutil.which("setpriv"):
            pytest.skip("running as root without util-linux's setpriv to drop CAP_DAC_OVERRIDE")
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
    os.chmod(workdir, 0o555)
    try:
        result = run_cli(cli_args(workdir, "--config.stage=vae"), prefix=prefix)
    finally:
        os.chmod(workdir, 0o755)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"workdir {workdir} is not writable" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(workdir) == before


@pytest.mark.parametrize("case, args, message", [
    ("k_zero", ["--k=0"], "--k=0"),
    ("n_negative", ["--n=-5"], "--n=-5"),
    ("prior_of_other_shape", [], "latent shape (8,)"),
])
def test_bad_sample_input_is_one_clear_error(straight_run, tmp_path, case, args, message):
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    if case == "prior_of_other_shape":
        path = workdir / "priors" / "made" / "config.json"
        recorded = json.loads(path.read_text())
        recorded["latent_shape"] = [8]
        path.write_text(json.dumps(recorded))
    before = snapshot(workdir)
    result = run_cli(["sample.py", "--workdir", str(workdir), "--n", "100", "--k", "2", *args])
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert snapshot(workdir) == before
