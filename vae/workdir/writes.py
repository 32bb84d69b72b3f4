"""The multi-host write protocol of a workdir, in one place.

Several processes (one per host, `jax.distributed`) share one workdir:
  * process 0 alone writes files (`is_writer`);
  * every process reads what process 0 read (`read_json`, `list_dir`), so a shared
    filesystem that shows hosts different states cannot send them down different paths;
  * a function that writes is `collective`: every process enters and leaves it together,
    so none reads a file while it is being written;
  * a file is replaced whole (`write_atomically`): a kill mid-write leaves the old one.
Orbax checkpoints keep their own protocol (`vae.workdir.checkpoint`). With one process,
every helper is a plain read or write.
"""

from __future__ import annotations

import functools
import json
import os

import jax

from vae.parallel import multihost


def is_writer() -> bool:
    return jax.process_index() == 0


def collective(write):
    """Decorates a function that writes: a barrier before and after it, in every process."""
    @functools.wraps(write)
    def wrapped(*args, **kwargs):
        multihost.barrier(f"before {write.__name__}")
        result = write(*args, **kwargs)
        multihost.barrier(f"after {write.__name__}")
        return result
    return wrapped


def read_json(path: str, *, lines: bool = False):
    """The JSON file (JSON lines if `lines`) at `path`, None if it is missing: process 0's
    reading, in every process."""
    value = None
    if is_writer() and os.path.exists(path):
        with open(path) as f:
            value = [json.loads(line) for line in f if line.strip()] if lines else json.load(f)
    return multihost.process_0_value(value)


def list_dir(path: str) -> list[str]:
    """The sorted names in directory `path` ([] if it is missing), as process 0 sees them."""
    names = sorted(os.listdir(path)) if is_writer() and os.path.isdir(path) else []
    return multihost.process_0_value(names)


def json_lines(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write_atomically(path: str, text: str) -> None:
    """A kill mid-write leaves the old file, never half of the new one. Callers: the writer
    process, inside a `collective` function."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def append_json_line(path: str, record: dict) -> None:
    """Appends one JSON line to a log. Callers: as `write_atomically`."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
