"""Checkpoints: the only module that imports orbax (its API moves; keep it behind this wall).

A checkpoint directory holds `latest/<step>/` (the last two saves) and `best/<step>/` (the
best so far by the caller's metric). Saves are synchronous and orbax finalizes each one
with an atomic rename, so an interrupted save never hides the previous checkpoint.
Restoring takes an abstract target (shapes and dtypes), so a checkpoint written on GPU/TPU
restores onto whatever devices this process has.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message names it."""


def _manager(directory: str, max_to_keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def steps(directory: str, kind: str = "latest") -> list[int]:
    """Steps of the finished checkpoints of `kind`, oldest first."""
    path = os.path.join(directory, kind)
    return sorted(ocp.utils.checkpoint_steps(os.path.abspath(path))) if os.path.isdir(path) else []


def latest(directory: str, kind: str = "latest") -> int | None:
    """Step of the newest finished checkpoint of `kind` ('latest' or 'best'), or None."""
    found = steps(directory, kind)  # finalized ones only
    return found[-1] if found else None


def save(directory: str, step: int, state, *, best: bool = False) -> None:
    """Saves the pytree `state` as `latest/<step>` (and as `best/<step>` when `best`)."""
    kinds = ("latest", "best") if best else ("latest",)
    for kind in kinds:
        mgr = _manager(os.path.join(directory, kind), max_to_keep=2 if kind == "latest" else 1)
        if step in mgr.all_steps():  # re-saving the same step (e.g. after a resume) is a no-op
            continue
        mgr.save(step, args=ocp.args.StandardSave(state))
        mgr.wait_until_finished()
        mgr.close()


def restore(directory: str, target, *, step: int | None = None, kind: str = "latest"):
    """Restores into the structure of `target` (concrete or abstract arrays)."""
    step = latest(directory, kind) if step is None else step
    if step is None:
        raise CheckpointError(f"no finished checkpoint under {os.path.join(directory, kind)}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    mgr = _manager(os.path.join(directory, kind), max_to_keep=2)
    try:
        return mgr.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types: shape mismatch, missing files, bad json
        raise CheckpointError(
            f"cannot restore checkpoint {os.path.join(directory, kind, str(step))}: it is corrupt "
            f"or was written for another model ({type(e).__name__}: {str(e)[:300]})"
        ) from e
    finally:
        mgr.close()


def restore_or_init(directory: str, init_state):
    """(state, restored?) from the latest checkpoint if there is one, else `init_state`."""
    if latest(directory) is None:
        return init_state, False
    return restore(directory, init_state), True
