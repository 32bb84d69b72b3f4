"""Data parallelism with `jax.sharding`, on one host or several: a 1-D ("data",) mesh over
every device of every process, batches split along it, parameters and optimizer state
replicated; XLA inserts the gradient all-reduce.

One host: every placement here is a plain `device_put`. Several hosts (JAX's multi-controller
runtime: the same program in every process): `config.train.distributed=True` joins the
processes (`initialize_distributed`), then
  * input: the training split is cut into `train.input_shards` equal shards (default: one
    per process) and each process keeps only its own (`InputShards`); every global batch
    takes batch_size / shards examples from each shard, so the batches depend on the shard
    count, never on how many processes hold the shards: one process with
    `input_shards=2` trains on exactly the batches two processes do;
  * a global batch is assembled from the process-local pieces (`put_local`); values every
    process has (parameters, held-out images) are placed with `put`;
  * files are written by process 0 (`vae.workdir`), checkpoints by every process through
    Orbax (`vae.workdir.checkpoint`), and `barrier` orders a write before other processes read it.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae.data.batches import epoch_batch_indices
from vae.errors import ConfigError
from vae.parallel.multihost import multiprocess

DATA_AXIS = "data"
log = logging.getLogger(__name__)
_distributed_started = False


def initialize_distributed(train_config) -> None:
    """`jax.distributed.initialize` once, when `train.distributed` asks for it.

    The coordinator address, process count and this process's id come from
    `train.coordinator_address` / `num_processes` / `process_id`, else from the environment
    (JAX_COORDINATOR_ADDRESS, which JAX reads; JAX_NUM_PROCESSES and JAX_PROCESS_ID, which
    this function reads), else from the cluster JAX detects (TPU pods, Slurm, Open MPI).
    `train.heartbeat_timeout_seconds`: how soon the others stop when a process is lost."""
    global _distributed_started
    if not train_config.distributed or _distributed_started:
        return
    env = os.environ
    address = train_config.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
    count = train_config.num_processes or int(env.get("JAX_NUM_PROCESSES", 0)) or None
    index = train_config.process_id
    index = index if index >= 0 else (int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None)
    given = {"coordinator_address": address, "num_processes": count, "process_id": index}
    if None in given.values() and any(v is not None for v in given.values()):
        log.info("distributed: %s given, the rest from the cluster environment",
                 ", ".join(k for k, v in given.items() if v is not None))
    try:
        jax.distributed.initialize(address, count, index,
                                   heartbeat_timeout_seconds=train_config.heartbeat_timeout_seconds)
    except (ValueError, RuntimeError) as e:
        missing = [f"config.train.{k}" for k, v in given.items() if v is None]
        raise ConfigError(
            f"config.train.distributed=True, but jax.distributed.initialize failed: {e}. Outside a cluster "
            f"JAX detects (TPU pod, Slurm, Open MPI), set {', '.join(missing) or 'the fields'} (or "
            "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) on every process, e.g. "
            "--config.train.coordinator_address=host0:12355 --config.train.num_processes=2 "
            "--config.train.process_id=0") from e
    _distributed_started = True
    log.info("process %d of %d; %d local and %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


# ----------------------------------------------------------------------------- the mesh


def make_mesh(num_devices: int = 0) -> Mesh:
    """A ("data",) mesh over the first `num_devices` devices (0: all of them, every
    process's; in process order, so process p's batch rows sit on its own devices)."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id)) if multiprocess() else jax.devices()
    if num_devices < 0 or num_devices > len(devices):
        raise ConfigError(
            f"config.train.num_devices={num_devices}: expected 0 (all) up to the {len(devices)} devices here")
    if num_devices not in (0, len(devices)) and multiprocess():
        raise ConfigError(f"config.train.num_devices={num_devices}: a multi-process run uses every device; "
                          "expected 0")
    return Mesh(np.asarray(devices[: num_devices or len(devices)]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Splits axis `batch_axis` (the examples) across the mesh; the other axes are whole."""
    return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh, field: str) -> None:
    if batch_size % mesh.size:
        raise ConfigError(
            f"config.{field}={batch_size} is not divisible by the {mesh.size} devices the batch is "
            f"split across; use a multiple of {mesh.size} (or set config.train.num_devices)")


def put(tree, sharding: NamedSharding):
    """Places host or device arrays with `sharding`. Across processes, every process passes
    the same global values and keeps the pieces its devices own."""
    if not multiprocess():
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda index: np.asarray(x)[index]), tree)


def put_local(local, sharding: NamedSharding, batch_axis: int = 0):
    """The global array whose axis `batch_axis` is every process's `local` rows, in process
    order (in one process: `local` itself, placed)."""
    if not multiprocess():
        return jax.device_put(local, sharding)
    shape = list(np.shape(local))
    shape[batch_axis] *= jax.process_count()
    return jax.make_array_from_process_local_data(sharding, np.asarray(local), tuple(shape))


def local_copy(tree):
    """Host (numpy) copies of replicated arrays, for code that runs in this process alone on
    its default device (held-out NLL, image grids), whatever mesh the arrays live on."""
    return jax.device_get(tree)


# ----------------------------------------------------------------------------- input


@dataclasses.dataclass(frozen=True)
class InputShards:
    """The training split cut into `count` equal shards of `size` examples (the last
    len % count examples are left out); this process holds `local` (consecutive)."""

    count: int = 1
    size: int = 0
    local: tuple[int, ...] = (0,)

    def rows(self, num_examples: int) -> slice:
        """The rows of the split this process keeps."""
        if self.count == 1:
            return slice(0, num_examples)
        return slice(self.local[0] * self.size, (self.local[-1] + 1) * self.size)

    def local_batch(self, batch_size: int) -> int:
        return batch_size // self.count * len(self.local)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.size // (batch_size // self.count)

    def batch_indices(self, key, epoch: int, batch_size: int):
        """(steps, local batch) indices into this process's rows for epoch `epoch`. One
        shard: a permutation by fold_in(key, epoch) cut into batches; several: shard j is
        permuted by fold_in(fold_in(key, epoch), j) and gives batch_size / count examples to
        every batch, this process's shards side by side."""
        if self.count == 1:
            return epoch_batch_indices(key, epoch, self.size, batch_size)
        per_shard, steps = batch_size // self.count, self.steps_per_epoch(batch_size)
        epoch_key = jax.random.fold_in(key, epoch)
        return jnp.concatenate([epoch_batch_indices(epoch_key, j, self.size, per_shard, steps) + i * self.size
                                for i, j in enumerate(self.local)], axis=1)


def input_shards(num_examples: int, train_config, field: str = "train.batch_size") -> InputShards:
    """How this process's share of an `num_examples` training split is cut (`train.input_shards`,
    0: one shard per process); checks that the batch divides over the shards."""
    count = train_config.input_shards or jax.process_count()
    procs = jax.process_count()
    batch = train_config.batch_size
    if count < 1 or count % procs:
        raise ConfigError(f"config.train.input_shards={count}: expected 0 or a multiple of the {procs} processes")
    if batch % count:
        raise ConfigError(f"config.{field}={batch} is not divisible by the {count} input shards "
                          f"(config.train.input_shards, 0: one per process); use a multiple of {count}")
    size = num_examples // count
    if size < batch // count:
        raise ConfigError(f"config.{field}={batch} is larger than the training split ({num_examples})")
    per_process = count // procs
    return InputShards(count, size, tuple(range(jax.process_index() * per_process,
                                                (jax.process_index() + 1) * per_process)))


def device_resident(config, train_images, mesh) -> bool:
    """Whether the uint8 training split lives on the devices (`train.data_placement`:
    'device', 'streamed', or 'auto': on the device when it takes under a quarter of the
    smallest device's memory). Several processes stream: each holds only its own shards."""
    mode = config.train.data_placement
    if multiprocess():
        if mode == "device":
            raise ConfigError("config.train.data_placement='device' cannot hold a split that is spread over "
                              f"{jax.process_count()} processes; expected 'auto' or 'streamed'")
        return False
    if mode != "auto":
        return mode == "device"
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in mesh.devices.flat]
    limits = [x for x in limits if x]
    return not limits or train_images.nbytes < 0.25 * min(limits)  # CPU reports no limit: host memory
