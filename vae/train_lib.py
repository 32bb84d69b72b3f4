"""Stage 1: train the VAE. `train_and_evaluate(config, workdir)` is the entry point.

The training split lives on the device as uint8; an epoch walks a per-epoch permutation in
jitted chunks of `train.steps_per_call` steps, with dynamic binarization inside the step,
so no data crosses from the host per step. The host syncs once per epoch: to log, to check the loss is finite, and to
checkpoint. Randomness: step s uses `fold_in(key, s)`; epoch e's order `fold_in(key, e)`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import logging
import math
import os
import signal
import tempfile
import threading
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from vae import checkpoint, input_pipeline, losses, models, plotting, sharding

log = logging.getLogger(__name__)

# Config sections that define the model and its data: a workdir written with other values
# cannot be resumed with these (training length and logging may change freely).
MODEL_SECTIONS = ("data", "vae")
# Single fields that must also match to resume: they fix the order and noise of every step.
RESUME_KEYS = (("seed",), ("train", "batch_size"))


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, mismatched workdir); the message says why."""


# ----------------------------------------------------------------------------- setup


def image_shape(dataset) -> tuple[int, int, int]:
    return tuple(dataset.train.images.shape[1:])


def create_vae(config, seed: int | None = None) -> models.VAE:
    seed = config.seed if seed is None else seed
    dtype = config.train.get("compute_dtype", "float32")
    return models.build_vae(config, input_pipeline.IMAGE_SHAPE, rngs=nnx.Rngs(seed), compute_dtype=dtype)


def make_optimizer(train_config, total_steps: int) -> optax.GradientTransformation:
    warmup = min(train_config.warmup_steps, max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, train_config.learning_rate, warmup, max(total_steps, warmup + 1), end_value=0.1 * train_config.learning_rate
    )
    return optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm), optax.adam(schedule))


def prepare_images(images_uint8, key, binarize: bool):
    """uint8 -> float in [0, 1]; binarized by a fresh Bernoulli draw when `binarize`."""
    x = input_pipeline.to_float(images_uint8)
    if binarize:
        x = jax.random.bernoulli(key, x).astype(jnp.float32)
    return x


def fixed_binarization(images_uint8, seed: int, binarize: bool) -> np.ndarray:
    """Evaluation data: binarized once with a fixed seed, so numbers compare across epochs."""
    return np.asarray(prepare_images(jnp.asarray(images_uint8), jax.random.key(seed), binarize))


def save_config(config, workdir: str) -> None:
    """Writes workdir/config.json after `check_resumable`."""
    check_resumable(config, workdir)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        _write_atomically(os.path.join(workdir, "config.json"), config.to_json(indent=2))


def check_resumable(config, workdir: str) -> None:
    """Refuses a workdir whose model/data config, seed or batch size differs from `config`
    (a resume would silently mix two runs)."""
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json())
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diffs = [
            f"{section}.{k}: {old.get(section, {}).get(k)!r} in workdir, {new[section].get(k)!r} now"
            for section in MODEL_SECTIONS
            for k in sorted(set(old.get(section, {})) | set(new[section]))
            if old.get(section, {}).get(k) != new[section].get(k)
        ]
        diffs += [
            f"{'.'.join(key)}: {_get(old, key)!r} in workdir, {_get(new, key)!r} now"
            for key in RESUME_KEYS
            if _get(old, key) != _get(new, key)
        ]
        if diffs:
            raise TrainingError(
                f"workdir {workdir} was written by a different model/data config, so it cannot "
                "be resumed: " + "; ".join(diffs) + ". Use a new --workdir, or add --fresh to move "
                "this one aside and start over."
            )


def _get(tree: dict, key: tuple):
    for k in key:
        tree = tree.get(k, {}) if isinstance(tree, dict) else {}
    return tree if tree != {} else None


def _write_atomically(path: str, text: str) -> None:
    """A kill mid-write leaves the old file, never half of the new one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def ensure_writable(workdir: str) -> None:
    """Fails at once, naming the directory, rather than after an epoch of training."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test"):
            pass
    except OSError as e:
        raise TrainingError(f"workdir {workdir} is not writable: {e.strerror or e}") from e


def check_config(config) -> None:
    """Raises models.ConfigError naming the first field whose value cannot work."""
    tc, pc = config.train, config.prior
    rules = [
        ("seed", config.seed >= 0, ">= 0"),
        ("data.validation_size", config.data.validation_size >= 1, ">= 1"),
        ("data.num_train", config.data.num_train >= 0, ">= 0 (0: all)"),
        ("vae.beta", config.vae.beta >= 0, ">= 0"),
        ("vae.kl", config.vae.kl in ("analytic", "mc"), "'analytic' or 'mc'"),
        ("train.num_epochs", tc.num_epochs >= 0, ">= 0"),
        ("train.batch_size", tc.batch_size >= 1, ">= 1"),
        ("train.learning_rate", tc.learning_rate > 0, "> 0"),
        ("train.warmup_steps", tc.warmup_steps >= 0, ">= 0"),
        ("train.grad_clip_norm", tc.grad_clip_norm > 0, "> 0"),
        ("train.steps_per_call", tc.steps_per_call >= 0, ">= 0 (0: one call per epoch)"),
        ("train.eval_batch_size", tc.eval_batch_size >= 1, ">= 1"),
        ("train.data_placement", tc.get("data_placement", "auto") in ("auto", "device", "streamed"),
         "'auto', 'device' or 'streamed'"),
        ("train.compute_dtype", tc.get("compute_dtype", "float32") in models.COMPUTE_DTYPES,
         " or ".join(repr(d) for d in models.COMPUTE_DTYPES)),
        ("prior.num_epochs", pc.num_epochs >= 0, ">= 0"),
        ("prior.batch_size", pc.batch_size >= 1, ">= 1"),
        ("prior.learning_rate", pc.learning_rate > 0, "> 0"),
        ("prior.steps_per_call", pc.steps_per_call >= 0, ">= 0"),
    ]
    for field, ok, expected in rules:
        if not ok:
            value = functools.reduce(lambda c, k: c[k], field.split("."), config)
            raise models.ConfigError(f"config.{field}={value!r} is out of range; expected {expected}")
    models.latent_shape_from_config(config.vae, input_pipeline.IMAGE_SHAPE)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir} is not a training workdir: it has no config.json")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def restore_vae(workdir: str, config, *, step: int | None = None, kind: str = "best"):
    """(model, step, kind) from workdir/checkpoints: the `kind` checkpoint ('best', falling
    back to 'latest'), or the one at `step`. Restores onto this process's devices."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if kind not in ("best", "latest"):
        raise ValueError(f"kind={kind!r}; expected 'best' or 'latest'")
    if checkpoint.latest(ckpt_dir, "latest") is None:
        raise checkpoint.CheckpointError(
            f"{workdir} has no VAE checkpoint; train one first (python train.py --config ... "
            f"--workdir {workdir} --config.stage=vae)"
        )
    if checkpoint.latest(ckpt_dir, kind) is None:
        kind = "latest"
    if step is not None:
        kinds = {k: checkpoint.steps(ckpt_dir, k) for k in ("best", "latest")}
        if not any(step in s for s in kinds.values()):
            raise checkpoint.CheckpointError(
                f"no checkpoint at step {step} in {ckpt_dir}; available: {sorted(set(kinds['best'] + kinds['latest']))}")
        kind = "best" if step in kinds["best"] else "latest"
    model = create_vae(config)
    graphdef, params = nnx.split(model)
    opt_state = jax.eval_shape(make_optimizer(config.train, 1).init, params)
    target = {"params": params, "opt_state": opt_state, "step": jnp.asarray(0, jnp.int32)}
    state = checkpoint.restore(ckpt_dir, target, step=step, kind=kind)
    return nnx.merge(graphdef, state["params"]), int(state["step"]), kind


def append_metrics(workdir: str, record: dict) -> None:
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def rewind_metrics(workdir: str, step: int, *, prior: str | None = None) -> None:
    """Drops the records of one stage (the VAE's, or prior `prior`'s) logged after `step`:
    work a kill threw away, which the resumed run logs again."""
    records = read_metrics(workdir)
    keep = [r for r in records if r.get("prior") != prior or r["step"] <= step]
    if len(keep) != len(records) and jax.process_index() == 0:
        _write_atomically(os.path.join(workdir, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in keep))


# ----------------------------------------------------------------------------- steps


class Stopped(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint was saved at `step` and a rerun resumes there."""

    def __init__(self, signum: int, step: int | None, where: str):
        self.signum = signum
        at = f"at step {step}" if step is not None else "after its last checkpoint"
        super().__init__(
            f"stopped by {signal.Signals(signum).name} {at}; saved a checkpoint in {where}. "
            "Rerun the same command to resume from it.")


_received: list[int] | None = None  # the active stop_on_signals list, if any


@contextlib.contextmanager
def stop_on_signals(signums=(signal.SIGTERM, signal.SIGINT)):
    """Yields a list that receives the first SIGTERM/SIGINT; training loops check it between
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


def scan_steps(step_fn, state, xs, unroll: bool):
    """`lax.scan` of step_fn over the leading axis of xs, optionally unrolled.

    Unroll for convolutions on XLA:CPU, which runs them ~10x slower inside a rolled loop
    (measured: 10 conv-VAE steps 14.3 s rolled, 1.1 s unrolled, 1.5 s as 10 separate calls);
    dense models and GPUs/TPUs run a rolled scan at full speed and compile it in constant time.
    """
    return jax.lax.scan(step_fn, state, xs, unroll=True if unroll else 1)


def unrolled_scan(step_fn, state, xs):
    return scan_steps(step_fn, state, xs, unroll=True)


def chunk_slices(num_steps: int, steps_per_call: int, start: int = 0) -> list[slice]:
    """The calls an epoch of `num_steps` is split into (0: one call), from step `start` on.
    Boundaries sit at multiples of steps_per_call from the epoch start, so a run resumed at
    a boundary compiles and runs exactly the chunks an uninterrupted run would."""
    size = steps_per_call or num_steps
    return [slice(i, min(i + size, num_steps)) for i in range(start, num_steps, size)]


def run_chunks(chunk_fn, state, chunks, *, should_stop=lambda: False):
    """Runs chunk_fn(state, chunk) over the chunks; returns (state, per-step outputs
    concatenated on the device or None if none ran).

    At most two calls are in flight: the device always has the next one queued, a stop
    request is honoured within two chunks, and on forced host-CPU devices sharded steps never
    pile up past XLA's all-reduce rendezvous limit (see DESIGN.md).
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


def run_in_chunks(chunk_fn, state, batches, steps_per_call: int):
    """run_chunks over `batches` (leading axis: steps) cut into calls of steps_per_call."""
    return run_chunks(chunk_fn, state, (batches[s] for s in chunk_slices(batches.shape[0], steps_per_call)))


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


def device_resident(config, dataset, mesh) -> bool:
    """Whether the uint8 training split lives on the devices (`train.data_placement`:
    'device', 'streamed', or 'auto': on the device when it takes under a quarter of the
    smallest device's memory)."""
    mode = config.train.get("data_placement", "auto")
    if mode != "auto":
        return mode == "device"
    nbytes = dataset.train.images.nbytes
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in mesh.devices.flat]
    limits = [x for x in limits if x]
    return not limits or nbytes < 0.25 * min(limits)  # CPU reports no limit: host memory


class StepFunctions(NamedTuple):
    train_epoch: Callable  # (state, train_images, key, epoch, *, start, should_stop) -> (state, metrics)
    eval_batch: Callable  # (params, x, key) -> per-example ELBO terms
    train_step: Callable  # (state, images_uint8, key) -> (state, metrics): one step, unjitted


def make_step_functions(graphdef, tx, config, mesh=None) -> StepFunctions:
    """Jitted train-epoch and eval functions closed over the static model and optimizer.

    train_epoch(state, train_images, key, epoch, start=0, should_stop) -> (state, metrics):
    `train_images` is the device-resident uint8 split (batches gathered inside the jitted
    call) or, on the streamed path, the host array (batches gathered and shipped per call,
    prefetched). Both run the same train_step on the same batches and keys.
    """
    binarize = config.data.binarize
    likelihood = models.likelihood_from_config(config.data)
    tc = config.train
    batch_size = tc.batch_size
    mesh = mesh or sharding.make_mesh(1)
    per_step_batch = sharding.batch_sharding(mesh)  # (B, H, W, C)
    streamed_chunk_sharding = sharding.batch_sharding(mesh, batch_axis=1)  # (steps, B, H, W, C)
    unroll = tc.get("unroll", True)

    def loss_fn(params, images_uint8, key):
        model = nnx.merge(graphdef, params)
        key_bin, key_z = jax.random.split(key)
        x = prepare_images(images_uint8, key_bin, binarize)
        mean, logvar, z, out = model(x, key_z)
        terms = losses.elbo(x, mean, logvar, z, out, likelihood, beta=config.vae.beta, kl=config.vae.kl)
        metrics = {k: jnp.mean(v) for k, v in terms.items()}
        return metrics["loss"], metrics

    def train_step(state, images_uint8, key):
        """One Adam step on one batch -> (state, metrics). `state` = {params, opt_state, step}."""
        images_uint8 = jax.lax.with_sharding_constraint(images_uint8, per_step_batch)
        step_key = jax.random.fold_in(key, state["step"])
        grads, metrics = jax.grad(loss_fn, has_aux=True)(state["params"], images_uint8, step_key)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics["grad_norm"] = optax.global_norm(grads)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    @functools.partial(jax.jit, static_argnums=2)
    def epoch_batches(key, epoch, n):
        """(steps, batch_size) indices of epoch `epoch`'s full batches (the rest is dropped)."""
        perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 1), epoch), n)
        return perm[: (n // batch_size) * batch_size].reshape(-1, batch_size)

    @functools.partial(jax.jit, donate_argnums=0)
    def resident_chunk(state, train_images, batch_indices, key):
        step_key = jax.random.fold_in(key, 0)
        return scan_steps(lambda st, idx: train_step(st, train_images[idx], step_key), state, batch_indices, unroll)

    @functools.partial(jax.jit, donate_argnums=0)
    def streamed_chunk(state, batches, key):
        step_key = jax.random.fold_in(key, 0)
        return scan_steps(lambda st, images: train_step(st, images, step_key), state, batches, unroll)

    def train_epoch(state, train_images, key, epoch, *, start=0, should_stop=lambda: False):
        """Epoch `epoch` from its step `start` on; stops early between calls if should_stop()."""
        batches = epoch_batches(key, epoch, train_images.shape[0])
        slices = chunk_slices(batches.shape[0], tc.steps_per_call, start)
        if isinstance(train_images, jax.Array):
            chunks = (batches[s] for s in slices)
            return run_chunks(lambda st, b: resident_chunk(st, train_images, b, key), state, chunks,
                              should_stop=should_stop)
        host_batches = np.asarray(batches)  # the same permutation, gathered on the host
        chunks = prefetch(sharding.put(train_images[host_batches[s]], streamed_chunk_sharding) for s in slices)
        return run_chunks(lambda st, b: streamed_chunk(st, b, key), state, chunks, should_stop=should_stop)

    @jax.jit
    def eval_batch(params, x, key):
        """Per-example ELBO terms on already-prepared images x in [0, 1]."""
        model = nnx.merge(graphdef, params)
        mean, logvar, z, out = model(x, key)
        return losses.elbo(x, mean, logvar, z, out, likelihood, beta=config.vae.beta, kl=config.vae.kl)

    return StepFunctions(train_epoch, eval_batch, train_step)


def evaluate(eval_batch, params, x, key, batch_size: int, *, bits_per_dim: bool = False) -> dict:
    """Mean ELBO terms over prepared images `x` (host array), in fixed-size batches."""
    n = len(x)
    pad = (-n) % batch_size
    xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    sums = None
    for i in range(0, len(xp), batch_size):
        terms = eval_batch(params, xp[i : i + batch_size], jax.random.fold_in(key, i))
        valid = jnp.arange(batch_size) < n - i  # the padding rows of the last batch
        batch_sums = {k: jnp.sum(jnp.where(valid, v, 0.0)) for k, v in terms.items()}
        sums = batch_sums if sums is None else jax.tree.map(jnp.add, sums, batch_sums)
    metrics = {k: float(v) / n for k, v in jax.device_get(sums).items()}  # one host fetch
    if bits_per_dim:  # for 8-bit data: the negative ELBO in bits per pixel
        metrics["nelbo_bits_per_dim"] = losses.bits_per_dim(-metrics["elbo"], math.prod(x.shape[1:]))
    return metrics


def find_non_finite(step_metrics: dict, first_step: int):
    """(step, term) of the first non-finite per-step metric, or None."""
    for name in ("loss", "recon", "kl", "grad_norm"):
        values = np.asarray(step_metrics[name])
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            return first_step + int(bad[0]), name
    return None


def save_image_grids(model, x_eval, key, workdir: str, step: int, n: int) -> None:
    x = jnp.asarray(x_eval[:n])
    mean, _ = model.encode(x)
    recon = losses.decoder_mean(model.likelihood, model.decode(mean))
    z = jax.random.normal(key, (n, *model.latent_shape))
    samples = losses.decoder_mean(model.likelihood, model.decode(z))
    ncol = 8  # rows alternate: 8 originals, then their 8 reconstructions
    rows = n // ncol
    pairs = np.stack([np.asarray(x)[: rows * ncol], np.asarray(recon)[: rows * ncol]], 1)
    pairs = pairs.reshape(rows, ncol, 2, *x.shape[1:]).transpose(0, 2, 1, 3, 4, 5).reshape(-1, *x.shape[1:])
    plotting.save_grid(pairs, os.path.join(workdir, "samples", f"reconstructions_{step:07d}.png"), ncol=ncol)
    plotting.save_grid(samples, os.path.join(workdir, "samples", f"prior_samples_{step:07d}.png"))


def prepared_eval_sets(config, dataset) -> dict:
    """Validation and test images as every evaluation sees them (fixed binarization)."""
    return {
        split: fixed_binarization(dataset.split(split).images, config.seed + 1 + i, config.data.binarize)
        for i, split in enumerate(("validation", "test"))
    }


def eval_key(config):
    return jax.random.fold_in(jax.random.key(config.seed), 2)


# ----------------------------------------------------------------------------- main loop


def _heal_best(workdir: str, ckpt_dir: str, state, step: int) -> float:
    """The best validation ELBO among the epochs up to `step`, from metrics.jsonl; re-saves
    the 'best' checkpoint if a kill fell between saving it and saving 'latest'."""
    val = [r for r in read_metrics(workdir) if r["split"] == "validation" and "prior" not in r
           and "elbo" in r and 0 < r["step"] <= step]
    if not val:
        return -math.inf
    top = max(val, key=lambda r: r["elbo"])
    if top["step"] == step and checkpoint.latest(ckpt_dir, "best") != step:
        checkpoint.save(ckpt_dir, step, state, best=True)
    if jax.process_index() == 0:
        _write_atomically(os.path.join(workdir, "best_validation_elbo.json"),
                          json.dumps({"step": top["step"], "elbo": top["elbo"]}))
    return top["elbo"]


def train_vae(config, workdir: str, dataset=None, *, max_epochs_this_run: int | None = None):
    """Trains (or resumes) the VAE in `workdir`; returns the final train state.

    Checkpoints at every epoch end ('latest', and 'best' by validation ELBO); SIGTERM/SIGINT
    save one at the next chunk boundary and raise `Stopped`. A resume continues from the
    latest checkpoint, mid-epoch too, and reproduces an uninterrupted run bit for bit.
    """
    check_resumable(config, workdir)
    dataset = dataset or input_pipeline.load_dataset(config.data)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    tc = config.train
    steps_per_epoch = len(dataset.train) // tc.batch_size
    if steps_per_epoch < 1:
        raise TrainingError(
            f"config.train.batch_size={tc.batch_size} is larger than the training split ({len(dataset.train)})"
        )
    total_steps = steps_per_epoch * tc.num_epochs
    mesh = sharding.make_mesh(tc.get("num_devices", 0))
    sharding.check_divisible(tc.batch_size, mesh, "train.batch_size")

    model = create_vae(config)
    graphdef, params = nnx.split(model)
    tx = make_optimizer(tc, total_steps)
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.asarray(0, jnp.int32)}
    state = sharding.put(state, sharding.replicated(mesh))
    state, resumed = checkpoint.restore_or_init(ckpt_dir, state)
    save_config(config, workdir)  # only once the checkpoint restored: a failed resume changes nothing
    start_step = int(state["step"])
    rewind_metrics(workdir, start_step if resumed else -1)
    if resumed:
        log.info("Resuming from %s at step %d", ckpt_dir, start_step)
    train_epoch, eval_batch, _ = make_step_functions(graphdef, tx, config, mesh)

    key = jax.random.key(config.seed)
    resident = device_resident(config, dataset, mesh)
    train_images = (sharding.put(dataset.train.images, sharding.replicated(mesh)) if resident
                    else dataset.train.images)
    log.info("training on %d device(s), %s data", mesh.size, "device-resident" if resident else "streamed")
    eval_sets = prepared_eval_sets(config, dataset)
    best = _heal_best(workdir, ckpt_dir, state, start_step)

    def run_eval(step, epoch):
        nonlocal best
        results = {}
        for split, x in eval_sets.items():
            m = evaluate(eval_batch, state["params"], x, eval_key(config), tc.eval_batch_size,
                         bits_per_dim=not config.data.binarize)
            append_metrics(workdir, {"step": step, "epoch": epoch, "split": split, **m})
            results[split] = m
        if jax.process_index() == 0:
            save_image_grids(nnx.merge(graphdef, state["params"]), eval_sets["test"], jax.random.fold_in(key, 3),
                             workdir, step, tc.num_sample_images)
        is_best = results["validation"]["elbo"] > best
        if is_best:
            best = results["validation"]["elbo"]
        return results, is_best

    first_epoch = start_step // steps_per_epoch
    if not resumed:
        run_eval(0, 0)  # the untrained model: the baseline the first epochs must beat
    last_epoch = tc.num_epochs if max_epochs_this_run is None else min(tc.num_epochs, first_epoch + max_epochs_this_run)
    bar = tqdm(total=total_steps, initial=start_step, desc="vae", unit="step", dynamic_ncols=True)
    step = start_step
    with stop_on_signals() as signals:
        for epoch in range(first_epoch, last_epoch):
            t0 = time.perf_counter()
            state, step_metrics = train_epoch(state, train_images, key, epoch, start=step - epoch * steps_per_epoch,
                                              should_stop=lambda: bool(signals))
            step_metrics = jax.device_get(step_metrics)  # the one host sync per epoch
            seconds = time.perf_counter() - t0
            bad = step_metrics and find_non_finite(step_metrics, step)
            if bad:
                raise TrainingError(
                    f"non-finite {bad[1]} at step {bad[0]} (epoch {epoch + 1}); stopped without saving, "
                    f"so the latest checkpoint (step {checkpoint.latest(ckpt_dir)}) is the last good one"
                )
            steps_run, step = int(state["step"]) - step, int(state["step"])
            if signals and step < (epoch + 1) * steps_per_epoch:  # stopped mid-epoch
                checkpoint.save(ckpt_dir, step, state)
                raise Stopped(signals[0], step, ckpt_dir)
            train_record = {k: float(np.mean(v)) for k, v in step_metrics.items()}
            train_record.update(steps_per_sec=steps_run / seconds, images_per_sec=steps_run * tc.batch_size / seconds)
            append_metrics(workdir, {"step": step, "epoch": epoch + 1, "split": "train", **train_record})
            results, is_best = run_eval(step, epoch + 1)
            checkpoint.save(ckpt_dir, step, state, best=is_best)
            if is_best and jax.process_index() == 0:
                _write_atomically(os.path.join(workdir, "best_validation_elbo.json"),
                                  json.dumps({"step": step, "elbo": best}))
            bar.update(steps_run)
            bar.set_postfix(val_elbo=f"{results['validation']['elbo']:.2f}", steps_s=f"{train_record['steps_per_sec']:.1f}")
            if signals:  # arrived after the last chunk: this epoch is saved, stop here
                raise Stopped(signals[0], step, ckpt_dir)
    bar.close()
    return state


def train_and_evaluate(config, workdir: str, *, max_epochs_this_run: int | None = None):
    """Runs the stages named by `config.stage` ('vae', 'prior' or 'all') in `workdir`."""
    if config.stage not in ("vae", "prior", "all"):
        raise TrainingError(f"config.stage={config.stage!r} is unknown; expected 'vae', 'prior' or 'all'")
    check_config(config)
    sharding.maybe_initialize_distributed(config.train)
    ensure_writable(workdir)
    # Handlers cover setup and the gaps between stages too: a signal there stops the run
    # cleanly after the last saved checkpoint instead of killing it outright.
    with stop_on_signals() as signals:
        dataset = input_pipeline.load_dataset(config.data)
        if config.stage in ("vae", "all"):
            state = train_vae(config, workdir, dataset, max_epochs_this_run=max_epochs_this_run)
            if signals:  # arrived after the last epoch's checkpoint
                raise Stopped(signals[0], int(state["step"]), os.path.join(workdir, "checkpoints"))
        if config.stage in ("prior", "all"):
            from vae import prior_lib

            prior_lib.fit_priors(config, workdir, dataset, max_epochs_this_run=max_epochs_this_run)
            if signals:
                raise Stopped(signals[0], None, os.path.join(workdir, "priors"))
