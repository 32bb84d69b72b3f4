"""Preemption, the non-finite guard and determinism (docs/reliability.md).
Interrupted runs are real subprocesses of train.py killed with real signals."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import (
    EPOCHS,
    REPO,
    assert_every_checkpoint_restores,
    assert_trees_equal,
    cli_args,
    mlp_config,
    read_metrics,
    run_cli,
    subprocess_env,
    trained_steps,
    vae_state,
    without_timing,
)
from vae.errors import TrainingError
from vae.train import stages
from vae.workdir import Workdir, checkpoint

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


EPOCHS_OF = {"made": 4}  # the prior fit: cli_args' --config.prior.num_epochs


def interrupt_and_resume(args, workdir, ckpt_dir, env, plan, prior=None):
    """Runs `args` until it finishes, interrupting it as `plan` says; returns what happened."""
    rng = random.Random(0)
    happened = []
    for i, (how, sig) in enumerate(plan):
        log = workdir.parent / f"{workdir.name}.stderr.{i}"
        with open(log, "w") as stderr_file:
            proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                    stderr=stderr_file, text=True)
        if how == "checkpoint_write":
            reached = wait_for(writing_checkpoint(ckpt_dir), proc)
        else:  # a random moment once this process has trained an epoch
            # The fit loop logs "training from step N" once it has resumed (and dropped the
            # records past its checkpoint); N is where this process starts.
            started = lambda: re.search(r"training from step (\d+)", log.read_text())  # noqa: E731
            reached = wait_for(lambda: started() is not None, proc) and wait_for(
                lambda: trained_steps(workdir, prior)[-1:] > [int(started().group(1))], proc)
            time.sleep(rng.uniform(0.0, 0.6))
        finished = len(trained_steps(workdir, prior)) == EPOCHS_OF.get(prior, EPOCHS)
        if reached and proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(timeout=300)
        happened.append((how, sig, proc.returncode, log.read_text(), finished))
    final = run_cli(args, env)
    assert final.returncode == 0, final.stderr[-3000:]
    return happened


def test_vae_killed_at_random_points_resumes_to_identical_parameters(straight_run, tmp_path):
    workdir = tmp_path / "killed"
    ckpt_dir = str(workdir / "checkpoints")
    env = subprocess_env()
    plan = [("checkpoint_write", signal.SIGKILL), ("random", signal.SIGKILL), ("random", signal.SIGTERM),
            ("random", signal.SIGINT), ("checkpoint_write", signal.SIGKILL)]
    happened = interrupt_and_resume(cli_args(workdir, "--config.stage=vae"), workdir, ckpt_dir, env, plan)

    killed = [h for h in happened if h[2] == -signal.SIGKILL]
    assert len(killed) >= 2, [h[:3] for h in happened]
    for how, sig, rc, stderr, finished in happened:
        if sig != signal.SIGKILL and rc not in (0, None):  # SIGTERM/SIGINT: saved, then a clean exit
            if finished and rc == -sig:  # the last epoch was saved; the signal hit interpreter shutdown
                continue
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


def test_prior_fit_killed_at_random_points_resumes_to_identical_parameters(straight_run, tmp_path):
    workdir = tmp_path / "killed"
    shutil.copytree(straight_run, workdir, ignore=shutil.ignore_patterns("priors"))
    records = [r for r in read_metrics(workdir) if "prior" not in r]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    state_dir = str(workdir / "priors" / "made" / "train_state")
    env = subprocess_env()
    plan = [("checkpoint_write", signal.SIGKILL), ("random", signal.SIGTERM), ("random", signal.SIGKILL)]
    happened = interrupt_and_resume(cli_args(workdir, "--config.stage=prior"), workdir, state_dir, env, plan,
                                    prior="made")
    assert any(h[2] == -signal.SIGKILL for h in happened), [h[:3] for h in happened]
    latent_shape = (16,)
    a = Workdir(workdir).load_prior("made", latent_shape)
    b = Workdir(straight_run).load_prior("made", latent_shape)
    assert_trees_equal(nnx.state(a), nnx.state(b))
    made_records = lambda w: [r for r in read_metrics(w) if r.get("prior") == "made"]
    assert without_timing(made_records(workdir)) == without_timing(made_records(straight_run))


# ----------------------------------------------------------------------------- non-finite guard


def test_non_finite_loss_keeps_last_good_checkpoint_and_resume_starts_from_it(straight_run, tmp_path):
    workdir = tmp_path / "w"
    config = mlp_config(**{"train.num_epochs": 2})
    stages.train_and_evaluate(config, str(workdir), max_epochs_this_run=1)
    good = checkpoint.latest(str(workdir / "checkpoints"))
    poisoned = mlp_config(**{"train.num_epochs": 2, "train.learning_rate": 1e30, "train.grad_clip_norm": 1e30})
    with pytest.raises(TrainingError, match=r"non-finite (loss|recon|kl|grad_norm) at step (\d+)") as e:
        stages.train_and_evaluate(poisoned, str(workdir))
    assert good <= int(re.search(r"at step (\d+)", str(e.value)).group(1)) < 2 * good
    assert f"latest checkpoint (step {good}) is the last good one" in str(e.value)
    assert checkpoint.latest(str(workdir / "checkpoints")) == good
    stages.train_and_evaluate(config, str(workdir))  # fixed config: resumes from the good one
    assert trained_steps(workdir) == [good, 2 * good]
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(vae_state(workdir, config)))


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_metrics_and_parameters(straight_run, tmp_path):
    config = mlp_config()
    stages.train_and_evaluate(config, str(tmp_path / "again"))
    assert_trees_equal(vae_state(tmp_path / "again", config), vae_state(straight_run, config))
    again = [r for r in read_metrics(tmp_path / "again")]
    assert without_timing(again) == without_timing([r for r in read_metrics(straight_run) if "prior" not in r])
    recorded = json.loads((tmp_path / "again" / "config.json").read_text())
    assert recorded["seed"] == config.seed and recorded["data"]["split_seed"] == config.data.split_seed


@pytest.mark.parametrize("stop_at, stopped", [(2, 4), (10, 12)])  # in the first epoch: no checkpoint yet
def test_a_stop_mid_epoch_keeps_the_epochs_train_record_whole(tmp_path, stop_at, stopped):
    """A signal mid-epoch, then a resume: the epoch's "train" record averages all its steps,
    as an uninterrupted run's does (the loop alone, on a toy task: deterministic)."""
    from vae.train import loop

    def run(work, stop_at=None):
        work.mkdir(exist_ok=True)
        wd = Workdir(str(work))

        def chunk(state, steps):
            if stop_at is not None and int(state["step"]) == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)  # handled between chunks, like a real preemption
            n = steps.stop - steps.start
            values = (state["step"] + jax.numpy.arange(n, dtype=jax.numpy.float32)) ** 2  # the global steps, squared
            return {"step": state["step"] + n}, {"loss": values}

        task = loop.Task(desc="toy", steps_per_epoch=8, num_epochs=2, checkpoint_dir=str(work / "ckpt"), workdir=wd,
                         run_epoch=lambda st, epoch, start, stop: loop.run_chunks(
                             chunk, st, loop.chunk_slices(8, 2, start), should_stop=stop),
                         end_epoch=lambda st, step, epoch: checkpoint.save(str(work / "ckpt"), step, st))
        state, _ = loop.resume(task, {"step": jax.numpy.asarray(0)})
        return loop.fit(task, state), wd

    _, straight = run(tmp_path / "straight")
    with pytest.raises(Exception, match=f"stopped by SIGTERM at step {stopped}"):  # the chunk in flight ends
        run(tmp_path / "stopped", stop_at=stop_at)
    final, resumed = run(tmp_path / "stopped")
    assert int(final["step"]) == 16
    train = lambda wd: [(r["step"], r["loss"]) for r in wd.read_metrics() if r["split"] == "train"]  # noqa: E731
    assert train(resumed) == train(straight) == [(8, float(np.mean(np.arange(0.0, 8.0) ** 2))),
                                                 (16, float(np.mean(np.arange(8.0, 16.0) ** 2)))]
