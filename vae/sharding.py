"""Data parallelism with `jax.sharding`: a 1-D ("data",) mesh over the devices, batches split
along it, parameters and optimizer state replicated; XLA inserts the gradient all-reduce.

On one device every placement here is a plain `device_put`. Multi-host runs set
`config.train.distributed=True`: `jax.distributed.initialize()` then joins the processes, each
process loads the same data and draws the same permutation, and `put` hands every process the
slices its own devices hold.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vae.errors import ConfigError

DATA_AXIS = "data"
_distributed_started = False


def maybe_initialize_distributed(train_config) -> None:
    """`jax.distributed.initialize()` once, when `train.distributed` asks for it (multi-host;
    the coordinator address and process ids come from the cluster's environment)."""
    global _distributed_started
    if train_config.get("distributed", False) and not _distributed_started:
        jax.distributed.initialize()
        _distributed_started = True


def make_mesh(num_devices: int = 0) -> Mesh:
    """A ("data",) mesh over the first `num_devices` devices (0: all of them)."""
    devices = jax.devices()
    if num_devices < 0 or num_devices > len(devices):
        raise ConfigError(
            f"config.train.num_devices={num_devices}: expected 0 (all) up to the {len(devices)} devices here")
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
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda index: np.asarray(x)[index]), tree)


def device_resident(config, train_images, mesh) -> bool:
    """Whether the uint8 training split lives on the devices (`train.data_placement`:
    'device', 'streamed', or 'auto': on the device when it takes under a quarter of the
    smallest device's memory)."""
    mode = config.train.get("data_placement", "auto")
    if mode != "auto":
        return mode == "device"
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in mesh.devices.flat]
    limits = [x for x in limits if x]
    return not limits or train_images.nbytes < 0.25 * min(limits)  # CPU reports no limit: host memory
