"""The device-resident, streamed and data-parallel (sharded) training paths give the same
parameters. Sharding runs in a subprocess with 4 forced host-CPU devices."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import REPO, assert_same_training, mnist_config
from vae import models
from vae.train import optim, stages
from vae.workdir import checkpoint


def trained_params(workdir, config):
    from flax import nnx

    graphdef, params = nnx.split(models.create_vae(config))
    target = optim.init_state(optim.make_optimizer(config.train, 1), params)
    return checkpoint.restore(os.path.join(workdir, "checkpoints"), target)["params"]


def small_config(**train):
    config = mnist_config("mnist_mlp")
    config.stage = "vae"
    config.train.num_epochs = 2
    config.train.update(train)
    return config


@pytest.mark.slow
def test_streamed_batches_match_device_resident_data(tmp_path, mnist_dir):
    resident, streamed = small_config(data_placement="device"), small_config(data_placement="streamed")
    stages.train_and_evaluate(resident, str(tmp_path / "resident"))
    stages.train_and_evaluate(streamed, str(tmp_path / "streamed"))
    a, b = trained_params(tmp_path / "resident", resident), trained_params(tmp_path / "streamed", streamed)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


SHARDED_RUN = r"""
import json, sys
import jax, numpy as np
from tests.parallel import test_sharding as t
from vae.train import stages
from vae.errors import ConfigError
out = {"devices": jax.device_count()}
work = sys.argv[1]
for name, train in [("one", dict(num_devices=1)), ("four", dict(num_devices=4)),
                    ("four_streamed", dict(num_devices=4, data_placement="streamed"))]:
    config = t.small_config(**train)
    stages.train_and_evaluate(config, f"{work}/{name}")
    out[name] = [np.asarray(x).tolist() for x in jax.tree.leaves(t.trained_params(f"{work}/{name}", config))]
try:
    stages.train_and_evaluate(t.small_config(num_devices=4, batch_size=62), f"{work}/bad")
except ConfigError as e:
    out["error"] = str(e)
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def sharded_results(tmp_path_factory, mnist_dir):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TQDM_DISABLE": "1",
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"}
    work = tmp_path_factory.mktemp("sharded")
    result = subprocess.run([sys.executable, "-c", SHARDED_RUN, str(work)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.slow  # its module fixture runs multi-device or multi-process training
def test_four_devices_give_the_parameters_of_one(sharded_results):
    assert sharded_results["devices"] == 4
    for name in ("four", "four_streamed"):
        one, other = ([np.asarray(x) for x in sharded_results[run]] for run in ("one", name))
        assert_same_training(one, other)  # after 64 Adam steps


@pytest.mark.slow  # its module fixture runs multi-device or multi-process training
def test_batch_not_divisible_by_device_count_is_a_clear_error(sharded_results):
    assert sharded_results["error"] == (
        "config.train.batch_size=62 is not divisible by the 4 devices the batch is split across; "
        "use a multiple of 4 (or set config.train.num_devices)")
