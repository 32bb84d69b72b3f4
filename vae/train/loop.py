"""The one fit loop: stage 1 (the VAE), stage 2's gradient-fitted priors and the classifier.

A caller describes its fit as a `Task`: a function that runs (part of) an epoch on the
device, an end-of-epoch hook that evaluates and saves, and where its resumable state lives.
`fit` owns everything else, in one place:
  * chunks: an epoch runs as jitted calls of `steps_per_call` steps (`chunk_slices`), at most
    two in flight (`run_chunks`), host batches shipped one call ahead (`prefetch`);
  * signals: SIGTERM/SIGINT stop the loop at the next chunk boundary; mid-epoch it saves the
    train state to `Task.checkpoint_dir` and raises `Stopped`. With several processes a
    signal to any one of them stops all at the same boundary (`any_process`);
  * the non-finite guard: the per-step metrics are fetched once per epoch, and a non-finite
    one raises before anything is saved, so the latest checkpoint is the last good one;
  * resume (`resume`): restore the latest train state and drop the metrics records the
    interrupted run logged after it; boundaries sit at fixed multiples of steps_per_call
    from each epoch's start, and a mid-epoch stop keeps the epoch's per-step metrics so far
    (`partial_epoch.json` beside the checkpoints), so a resumed run reproduces an
    uninterrupted one bit for bit, its "train" records included;
  * the progress bar and the per-epoch "train" record in metrics.jsonl.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from vae.errors import CheckpointError, Stopped, TrainingError
from vae.parallel.multihost import any_process
from vae.workdir import checkpoint

log = logging.getLogger(__name__)
_received: list[int] | None = None  # the active stop_on_signals list, if any


@contextlib.contextmanager
def stop_on_signals(signums=(signal.SIGTERM, signal.SIGINT)):
    """Yields a list that receives the first SIGTERM/SIGINT; fit loops check it between
    chunks, save, and raise `Stopped`. A second signal acts as it would without this.
    Nested uses share the outermost list, so a signal between stages is not lost."""
    global _received
    if _received is not None:
        yield _received
        return
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # handlers need the main thread
        yield received
        return
    previous = {s: signal.getsignal(s) for s in signums}

    def handler(signum, frame):
        received.append(signum)
        for s, h in previous.items():
            signal.signal(s, h)

    for s in signums:
        signal.signal(s, handler)
    _received = received
    try:
        yield received
    finally:
        _received = None
        for s, h in previous.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------- chunks


def scan_steps(step_fn, state, xs, unroll: bool = True):
    """`lax.scan` of step_fn over the leading axis of xs, optionally unrolled.

    Unroll for convolutions on XLA:CPU, which runs them ~10x slower inside a rolled loop
    (measured: 10 conv-VAE steps 14.3 s rolled, 1.1 s unrolled, 1.5 s as 10 separate calls);
    dense models and GPUs/TPUs run a rolled scan at full speed and compile it in constant time.
    """
    return jax.lax.scan(step_fn, state, xs, unroll=True if unroll else 1)


def chunk_slices(num_steps: int, steps_per_call: int, start: int = 0) -> list[slice]:
    """The calls an epoch of `num_steps` is split into (0: one call), from step `start` on.
    Boundaries sit at multiples of steps_per_call from the epoch start, so a run resumed at
    a boundary compiles and runs exactly the chunks an uninterrupted run would."""
    size = steps_per_call or num_steps
    return [slice(i, min(i + size, num_steps)) for i in range(start, num_steps, size)]


def run_chunks(chunk_fn, state, chunks, *, should_stop=lambda: False):
    """Runs chunk_fn(state, chunk) over the chunks; returns (state, per-step outputs
    concatenated on the device, or None if none ran).

    At most two calls are in flight: the device always has the next one queued, a stop
    request is honoured within two chunks, and on forced host-CPU devices sharded steps never
    pile up past XLA's all-reduce rendezvous limit (which aborts the process).
    """
    outputs = []
    for chunk in chunks:
        if should_stop():
            break
        state, out = chunk_fn(state, chunk)
        outputs.append(out)
        if len(outputs) >= 2:
            jax.block_until_ready(outputs[-2])
    if not outputs:
        return state, None
    return state, jax.tree.map(lambda *m: jnp.concatenate(m), *outputs)


def prefetch(iterator, size: int = 2):
    """Yields the items of `iterator` (device arrays being transferred) `size - 1` ahead, so
    the host gathers and ships the next chunk while the device runs this one."""
    queue = collections.deque()
    for item in iterator:
        queue.append(item)
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Task:
    """One fit, as the loop sees it. The train state is a pytree with an int "step" leaf.

    run_epoch(state, epoch, start, should_stop) -> (state, per-step metrics {name: (steps,)}
        or None): epoch `epoch` from its step `start`, between chunks honouring should_stop().
    end_epoch(state, step, epoch) -> progress-bar postfix: evaluate, log, save (after the
        loop has appended the epoch's "train" record).
    converged() -> a reason to stop before the next epoch (early stopping), or None. Asked
        before every epoch, a resumed run's first included, so a fit that stopped early stays
        stopped when it is run again.
    """

    desc: str
    steps_per_epoch: int
    num_epochs: int
    run_epoch: Callable
    end_epoch: Callable | None = None
    converged: Callable | None = None
    checkpoint_dir: str | None = None  # resumable train state; mid-epoch stops save here
    workdir: object | None = None  # a vae.workdir.Workdir for the "train" records
    tags: dict = dataclasses.field(default_factory=dict)  # on every record, e.g. {"prior": name}
    checked: tuple[str, ...] = ("loss",)  # per-step metrics that must stay finite, in this order
    batch_size: int | None = None  # adds images_per_sec to the train record
    leave_bar: bool = True
    error: type = TrainingError  # raised for a non-finite metric


def resume(task: Task, state):
    """(state, resumed): the latest train state in task.checkpoint_dir, else `state`; the
    records of this task logged after it (work a kill threw away) are dropped."""
    state, resumed = checkpoint.restore_or_init(task.checkpoint_dir, state)
    if task.workdir is not None:
        task.workdir.rewind_metrics(int(state["step"]) if resumed else -1, prior=task.tags.get("prior"))
    return state, resumed


def find_non_finite(step_metrics: dict, first_step: int, names) -> tuple[int, str] | None:
    """(step, name) of the first non-finite per-step metric, or None."""
    for name in names:
        bad = np.flatnonzero(~np.isfinite(np.asarray(step_metrics[name])))
        if bad.size:
            return first_step + int(bad[0]), name
    return None


def _save_partial_epoch(task: Task, step: int, metrics: dict) -> None:
    """The per-step metrics of the epoch stopped at `step`, for the run that resumes it."""
    if jax.process_index() == 0:
        path = os.path.join(task.checkpoint_dir, "partial_epoch.json")
        record = {"step": step, "metrics": {k: [str(np.asarray(v).dtype), np.asarray(v).tolist()]
                                            for k, v in metrics.items()}}
        try:
            os.makedirs(task.checkpoint_dir, exist_ok=True)  # a stop in the first epoch comes before any save
            with open(path + ".tmp", "w") as f:
                json.dump(record, f)
            os.replace(path + ".tmp", path)
        except OSError as e:
            raise CheckpointError(f"could not write {path} ({e.strerror or e}); the latest checkpoint "
                                  f"(step {_latest(task)}) is intact and a rerun resumes from it") from e


def _load_partial_epoch(task: Task, step: int) -> dict | None:
    """The metrics `_save_partial_epoch` kept for a stop at `step`, else None."""
    path = os.path.join(task.checkpoint_dir or "", "partial_epoch.json")
    if not task.checkpoint_dir or not os.path.exists(path):
        return None
    with open(path) as f:
        record = json.load(f)
    return {k: np.asarray(v, dtype) for k, (dtype, v) in record["metrics"].items()} if record["step"] == step else None


def _latest(task: Task):
    return checkpoint.latest(task.checkpoint_dir) if task.checkpoint_dir else None


def fit(task: Task, state, *, max_epochs_this_run: int | None = None):
    """Runs `task` from the step in `state` to its last epoch; returns the final state."""
    start_step = int(state["step"])
    first_epoch = start_step // task.steps_per_epoch
    last_epoch = task.num_epochs if max_epochs_this_run is None else min(task.num_epochs,
                                                                         first_epoch + max_epochs_this_run)
    log.info("%s: training from step %d to %d", task.desc, start_step, task.steps_per_epoch * last_epoch)
    bar = tqdm(total=task.steps_per_epoch * task.num_epochs, initial=start_step, desc=task.desc, unit="step",
               dynamic_ncols=True, leave=task.leave_bar)
    step = start_step
    carried = _load_partial_epoch(task, start_step) if start_step % task.steps_per_epoch else None
    with stop_on_signals() as signals:

        def stopping() -> bool:
            return any_process(bool(signals))

        def signum() -> int:  # SIGTERM when the signal reached another process
            return signals[0] if signals else signal.SIGTERM

        for epoch in range(first_epoch, last_epoch):
            reason = task.converged() if task.converged else None
            if reason:
                log.info("%s: stopped early before epoch %d: %s", task.desc, epoch + 1, reason)
                break
            t0 = time.perf_counter()
            state, step_metrics = task.run_epoch(state, epoch, step - epoch * task.steps_per_epoch, stopping)
            step_metrics = jax.device_get(step_metrics)  # the one host sync per epoch
            seconds = time.perf_counter() - t0
            bad = step_metrics and find_non_finite(step_metrics, step, task.checked)
            if bad:
                raise task.error(
                    f"non-finite {bad[1]} at step {bad[0]} (epoch {epoch + 1}) of {task.desc}; stopped without "
                    f"saving, so the latest checkpoint (step {_latest(task)}) is the last good one")
            steps_run, step = int(state["step"]) - step, int(state["step"])
            if carried:  # the steps of this epoch that an interrupted run made
                step_metrics = carried if not step_metrics else {k: np.concatenate([carried[k], v])
                                                                  for k, v in step_metrics.items()}
                carried = None
            if step < (epoch + 1) * task.steps_per_epoch:  # stopped mid-epoch (every process alike)
                if task.checkpoint_dir:  # the metrics first: they are only read with a checkpoint at `step`
                    if step_metrics:
                        _save_partial_epoch(task, step, step_metrics)
                    checkpoint.save(task.checkpoint_dir, step, state)
                raise Stopped(signum(), step, task.checkpoint_dir)
            if task.workdir is not None:
                record = {k: float(np.mean(v)) for k, v in step_metrics.items()}
                record["steps_per_sec"] = steps_run / seconds
                if task.batch_size:
                    record["images_per_sec"] = steps_run * task.batch_size / seconds
                task.workdir.append_metrics({"step": step, "epoch": epoch + 1, "split": "train", **task.tags, **record})
            postfix = task.end_epoch(state, step, epoch + 1) if task.end_epoch else {}
            bar.update(steps_run)
            bar.set_postfix(postfix, steps_s=f"{steps_run / seconds:.1f}")
            if stopping():  # arrived after the last chunk: this epoch is saved, stop here
                raise Stopped(signum(), step, task.checkpoint_dir)
    bar.close()
    return state
