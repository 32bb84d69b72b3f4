"""Checkpoints: the only module that imports orbax (its API moves; keep it behind this wall).

A checkpoint directory holds `latest/<step>/` (the last two saves) and `best/<step>/` (the
best so far by the caller's metric). Saves are synchronous and orbax finalizes each one
with an atomic rename, so an interrupted save never hides the previous checkpoint. A step
directory without orbax's metadata files (an interrupted copy, say) is not a checkpoint: it
is skipped with a warning, and moved aside (never deleted) if that step is saved again.
Restoring takes an abstract target (shapes and dtypes), so a checkpoint written on GPU/TPU
restores onto whatever devices this process has (a target leaf with no sharding: onto its
first local device, whatever mesh wrote it). Several processes: every one calls `save` and
`restore` with global arrays (Orbax writes each shard once, the metadata from process 0); a
target on one local device restores a full copy into each process.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import orbax.checkpoint as ocp

from vae.errors import CheckpointError
from vae.parallel import multihost

log = logging.getLogger(__name__)

# Files orbax writes into every step directory it finalizes.
_FINISHED_MARKERS = ("_CHECKPOINT_METADATA", os.path.join("default", "_METADATA"))


def _manager(directory: str, max_to_keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _is_finished(step_dir: str) -> bool:
    return all(os.path.exists(os.path.join(step_dir, m)) for m in _FINISHED_MARKERS)


def steps(directory: str, kind: str = "latest") -> list[int]:
    """Steps of the finished checkpoints of `kind`, oldest first."""
    path = os.path.abspath(os.path.join(directory, kind))
    found = []
    if not os.path.isdir(path):
        return multihost.process_0_value(found)
    for step in ocp.utils.checkpoint_steps(path):
        if _is_finished(os.path.join(path, str(step))):
            found.append(step)
        else:
            log.warning("ignoring %s: not a finished checkpoint (missing %s)",
                        os.path.join(path, str(step)), " or ".join(_FINISHED_MARKERS))
    return multihost.process_0_value(sorted(found))  # every process decides from the same list


def _move_aside_unfinished(directory: str) -> None:
    """Orbax would take an unfinished `<step>/` for a saved one (and skip saving that step or
    any earlier one); keep such directories, under another name."""
    path = os.path.abspath(directory)
    for step in ocp.utils.checkpoint_steps(path) if os.path.isdir(path) and jax.process_index() == 0 else []:
        step_dir = os.path.join(path, str(step))
        if not _is_finished(step_dir):
            aside = f"{step_dir}.unfinished-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(step_dir, aside)
            log.warning("moved the unfinished checkpoint directory %s to %s", step_dir, aside)
    multihost.barrier(f"unfinished checkpoints in {path}")  # one process moves; the others save once it has


def latest(directory: str, kind: str = "latest") -> int | None:
    """Step of the newest finished checkpoint of `kind` ('latest' or 'best'), or None."""
    found = steps(directory, kind)  # finalized ones only
    return found[-1] if found else None


def save(directory: str, step: int, state, *, best: bool = False) -> None:
    """Saves the pytree `state` as `latest/<step>` (and as `best/<step>` when `best`)."""
    kinds = ("best", "latest") if best else ("latest",)  # 'latest' last: it marks the step done
    for kind in kinds:
        if step in steps(directory, kind):  # re-saving the same step (e.g. after a resume) is a no-op
            continue
        _move_aside_unfinished(os.path.join(directory, kind))
        mgr = _manager(os.path.join(directory, kind), max_to_keep=2 if kind == "latest" else 1)
        try:
            mgr.save(step, args=ocp.args.StandardSave(state))
            mgr.wait_until_finished()
        except OSError as e:  # disk full, permissions: the previous checkpoint is untouched
            raise CheckpointError(
                f"could not write checkpoint step {step} under {os.path.join(directory, kind)} "
                f"({e.strerror or e}); the previous one (step {latest(directory, kind)}) is intact "
                "and a rerun resumes from it once the cause is fixed"
            ) from e
        finally:
            mgr.close()


def restore(directory: str, target, *, step: int | None = None, kind: str = "latest"):
    """Restores into the structure of `target` (concrete or abstract arrays)."""
    step = latest(directory, kind) if step is None else step
    if step is None:
        raise CheckpointError(f"no finished checkpoint under {os.path.join(directory, kind)}")
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # for target leaves with no placement

    def abstract_leaf(x):
        leaf = ocp.utils.to_shape_dtype_struct(x)
        return leaf if getattr(leaf, "sharding", None) else jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=here)

    abstract = jax.tree.map(abstract_leaf, target)
    mgr = _manager(os.path.join(directory, kind), max_to_keep=2)
    try:
        return mgr.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types: shape mismatch, missing files, bad json
        older = [s for s in steps(directory, kind) if s < step]
        hint = (f" Move that directory away to resume from the previous checkpoint (step {older[-1]})."
                if older else "")
        raise CheckpointError(
            f"cannot restore checkpoint {os.path.join(directory, kind, str(step))}: it is corrupt "
            f"or was written for another model ({type(e).__name__}: {str(e)[:300]}).{hint}"
        ) from e
    finally:
        mgr.close()


def restore_or_init(directory: str, init_state):
    """(state, restored?) from the latest checkpoint if there is one, else `init_state`."""
    if latest(directory) is None:
        return init_state, False
    return restore(directory, init_state), True
