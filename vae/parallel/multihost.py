"""What several processes (one per host, `jax.distributed`) agree on; in one process each
helper is the identity or a no-op.

Every helper is a collective: all processes call it at the same point of the program, so
the branches taken after it are the same everywhere. Decisions read from shared files (the
checkpoint steps, metrics.jsonl, config.json) go through `process_0_value`, so a shared
filesystem that shows hosts different states (NFS attribute caches, bucket mounts) cannot
send processes down different paths.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from jax.experimental import multihost_utils


def multiprocess() -> bool:
    return jax.process_count() > 1


def barrier(name: str) -> None:
    """Every process waits here for all the others."""
    if multiprocess():
        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """Whether `flag` is set in any process."""
    if not multiprocess():
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def process_0_value(value):
    """Process 0's `value` (anything JSON can carry, floats exactly), in every process."""
    if not multiprocess():
        return value
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.asarray(len(data), np.int64)))
    buffer = np.zeros(size, np.uint8)
    buffer[: min(size, len(data))] = data[:size]  # only process 0's bytes are kept
    return json.loads(np.asarray(multihost_utils.broadcast_one_to_all(buffer)).tobytes().decode())


def gather_rows(local):
    """Every process's `local` rows (equal counts), concatenated in process order (None stays None)."""
    if not multiprocess() or local is None:
        return local
    return np.asarray(multihost_utils.process_allgather(np.asarray(local), tiled=True))
