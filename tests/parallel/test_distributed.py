"""Several processes through jax.distributed, on this one machine: two train.py processes on
localhost (gloo collectives on CPU, 2 forced devices each) train what one process over 4
devices trains from the same shards, and a lost process stops the other and a relaunch of
both resumes. The launch lines are docs/accelerators.md's "Several hosts"."""

import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx
from ml_collections import ConfigDict

from tests.conftest import MNIST_DIR, REPO, assert_same_training, subprocess_env
from vae import workdir
from vae.data.batches import epoch_batch_indices
from vae.errors import ConfigError
from vae.parallel import sharding
from vae.workdir import checkpoint

pytestmark = pytest.mark.usefixtures("mnist_dir")

RUN = ["train.py", "--config", "configs/mnist_mlp.py:smoke", f"--config.data.idx_dir={MNIST_DIR}",
       "--config.prior.name=gmm,made", "--config.prior.num_epochs=2"]


def env(devices: int) -> dict:
    base = subprocess_env()
    return {**base, "XLA_FLAGS": f"{base.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(work, *flags, processes=2):
    """`processes` train.py processes of one run, 2 CPU devices each; their logs in work.p<i>.log."""
    port = free_port()
    procs = []
    for i in range(processes):
        cmd = [sys.executable, *RUN, f"--workdir={work}", *flags, "--config.train.distributed=True",
               f"--config.train.coordinator_address=localhost:{port}", f"--config.train.num_processes={processes}",
               f"--config.train.process_id={i}", "--config.train.heartbeat_timeout_seconds=5"]
        log = open(f"{work}.p{i}.log", "w")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env(2), stdout=log, stderr=subprocess.STDOUT))
    return procs


def finish(work, procs, timeout=240):
    codes = [p.wait(timeout=timeout) for p in procs]
    logs = [open(f"{work}.p{i}.log").read() for i in range(len(procs))]
    return codes, logs


def leaves(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


@pytest.fixture(scope="module")
def two_and_one(tmp_path_factory):
    """The same run (VAE 2 epochs, GMM, MADE 2 epochs) by 2 processes x 2 devices and by 1
    process x 4 devices reading the same 2 input shards."""
    root = tmp_path_factory.mktemp("distributed")
    codes, logs = finish(root / "two", launch(root / "two", "--config.train.num_epochs=2"))
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    one = subprocess.run([sys.executable, *RUN, f"--workdir={root / 'one'}", "--config.train.num_epochs=2",
                          "--config.train.input_shards=2"], cwd=REPO, env=env(4), capture_output=True, text=True,
                         timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    return workdir.open(root / "two"), workdir.open(root / "one"), logs


@pytest.mark.slow
def test_two_processes_train_the_parameters_of_one(two_and_one):
    two, one, logs = two_and_one
    vae_two, step_two, _ = two.restore_vae(kind="latest")
    vae_one, step_one, _ = one.restore_vae(kind="latest")
    assert step_two == step_one == 2 * 2048 // 64
    # The same sums split over other devices and processes: float32 rounding only.
    assert_same_training(leaves(vae_two), leaves(vae_one), atol=5e-5)
    for name in ("gmm", "made"):
        assert_same_training(leaves(two.load_prior(name, vae_two.latent_shape)),
                             leaves(one.load_prior(name, vae_one.latent_shape)), atol=5e-5)


@pytest.mark.slow  # its module fixture runs multi-device or multi-process training
def test_each_process_reads_its_own_shard_and_one_writes(two_and_one):
    two, one, logs = two_and_one
    for i, log in enumerate(logs):
        assert f"training shards [{i}] of 2: 1024 of 2048 images" in log
        assert "training on 4 device(s), streamed data" in log
    # Process 0 alone writes: the same records as the one-process run, none twice.
    def records(wd):
        return [(r["split"], r.get("prior"), r["step"]) for r in wd.read_metrics()]
    assert records(two) == records(one)
    assert len(set(records(two))) == len(records(two))
    assert [r["stage"] for r in two.invocations()] == ["vae", "prior"]  # once each, not once per process
    for r_two, r_one in zip(two.read_metrics(), one.read_metrics()):
        for k in ("elbo", "latent_nll/gmm", "latent_nll/made"):
            if k in r_one:
                assert r_two[k] == pytest.approx(r_one[k], rel=1e-4, abs=1e-3), (r_one, k)


def wait_for_checkpoint(work, procs, past: int):
    deadline = time.time() + 120
    while (checkpoint.latest(str(work / "checkpoints")) or 0) <= past:
        assert time.time() < deadline and all(p.poll() is None for p in procs), f"no checkpoint past step {past}"
        time.sleep(0.05)


@pytest.mark.slow
def test_lost_or_preempted_process_stops_both_and_a_relaunch_resumes(tmp_path):
    work = tmp_path / "run"
    # 4 epochs of 32 steps in chunks of 8: signals are honoured every 8 steps.
    flags = ("--config.stage=vae", "--config.train.num_epochs=4", "--config.train.steps_per_call=8")
    procs = launch(work, *flags)
    wait_for_checkpoint(work, procs, past=0)
    procs[1].send_signal(signal.SIGKILL)  # a lost host
    codes, logs = finish(work, procs, timeout=60)
    assert codes[1] == -signal.SIGKILL
    assert codes[0] != 0, "the other process went on without its peer"
    # JAX's coordination service names the lost process, whether process 0 was in a collective
    # (our one-line error first, then "Task 1 heartbeat timeout") or not (the unhealthy list).
    named = re.search(r"Task 1 heartbeat timeout|stopped sending heartbeats\):\s*(\S*task:)?1\b", logs[0])
    assert named, logs[0][-3000:]
    saved = checkpoint.latest(str(work / "checkpoints"))
    assert saved is not None and saved < 128, f"the run was not killed mid-way (latest step {saved})"

    procs = launch(work, *flags)  # relaunch: resumes; then a preemption notice to one process
    wait_for_checkpoint(work, procs, past=saved)
    procs[1].send_signal(signal.SIGTERM)
    codes, logs = finish(work, procs)
    for log in logs:
        assert f"Resuming from {work / 'checkpoints'} at step {saved}" in log
    assert codes == [128 + signal.SIGTERM] * 2, "\n".join(log[-3000:] for log in logs)
    stopped = [re.search(r"stopped by SIGTERM at step (\d+)", log) for log in logs]
    assert stopped[0] and stopped[1] and stopped[0][1] == stopped[1][1], "the two stopped at different steps"
    assert checkpoint.latest(str(work / "checkpoints")) == int(stopped[0][1])

    codes, logs = finish(work, launch(work, *flags))
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert checkpoint.latest(str(work / "checkpoints")) == 128
    train = [r["epoch"] for r in workdir.open(work).read_metrics() if r["split"] == "train"]
    assert train == [1, 2, 3, 4]  # work the kill threw away is logged once, by the relaunch


def test_distributed_without_a_cluster_or_settings_is_one_clear_error(tmp_path):
    bad = subprocess.run([sys.executable, *RUN, f"--workdir={tmp_path / 'run'}", "--config.train.distributed=True"],
                         cwd=REPO, env={k: v for k, v in env(1).items() if not k.startswith("JAX_COORD")},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2, bad.stderr[-2000:]
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: config.train.distributed=True") and "config.train.num_processes" in last, last


def test_input_shards_cut_batches_the_same_for_any_process_count():
    key = jax.random.key(3)
    both = np.asarray(sharding.InputShards(2, 50, (0, 1)).batch_indices(key, 4, batch_size=10))
    first = np.asarray(sharding.InputShards(2, 50, (0,)).batch_indices(key, 4, batch_size=10))
    second = np.asarray(sharding.InputShards(2, 50, (1,)).batch_indices(key, 4, batch_size=10))
    assert both.shape == (10, 10)  # 50 per shard, 5 per batch from each
    np.testing.assert_array_equal(both[:, :5], first)  # process 0's rows are shard 0
    np.testing.assert_array_equal(both[:, 5:], second + 50)  # process 1 holds shard 1 as its rows 0..49
    assert sorted(both[:, :5].ravel()) == list(range(50)) and sorted(both[:, 5:].ravel()) == list(range(50, 100))
    one = sharding.InputShards(1, 100, (0,)).batch_indices(key, 4, batch_size=10)
    np.testing.assert_array_equal(one, epoch_batch_indices(key, 4, 100, 10))  # one shard: the plain order


def test_input_shards_check_the_batch_and_count():
    with pytest.raises(ConfigError, match="train.batch_size=64 is not divisible by the 3 input shards"):
        sharding.input_shards(2048, ConfigDict({"batch_size": 64, "input_shards": 3}))
    shards = sharding.input_shards(2049, ConfigDict({"batch_size": 64, "input_shards": 2}))
    assert (shards.size, shards.local, shards.rows(2049)) == (1024, (0, 1), slice(0, 2048))
    assert shards.steps_per_epoch(64) == 32
