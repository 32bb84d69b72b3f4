"""Stage 1: train the VAE. `train_and_evaluate(config, workdir)` is the entry point.

The training split lives on the device as uint8; an epoch walks a per-epoch permutation in
jitted chunks of `train.steps_per_call` steps, with dynamic binarization inside the step,
so no data crosses from the host per step. The host syncs once per epoch: to log, to check the loss is finite, and to
checkpoint. Randomness: step s uses `fold_in(key, s)`; epoch e's order `fold_in(key, e)`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from vae import checkpoint, input_pipeline, losses, models, plotting

log = logging.getLogger(__name__)

# Config sections that define the model and its data: a workdir written with other values
# cannot be resumed with these (training length and logging may change freely).
MODEL_SECTIONS = ("data", "vae")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, mismatched workdir); the message says why."""


# ----------------------------------------------------------------------------- setup


def image_shape(dataset) -> tuple[int, int, int]:
    return tuple(dataset.train.images.shape[1:])


def create_vae(config, seed: int | None = None) -> models.VAE:
    seed = config.seed if seed is None else seed
    return models.build_vae(config, input_pipeline.IMAGE_SHAPE, rngs=nnx.Rngs(seed))


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
    """Writes workdir/config.json; refuses a workdir whose model/data config differs."""
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
        if diffs:
            raise TrainingError(
                f"workdir {workdir} was written by a different model/data config, so it cannot "
                "be resumed: " + "; ".join(diffs) + ". Use a new --workdir, or delete this one."
            )
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        f.write(config.to_json(indent=2))


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
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- steps


def unrolled_scan(step_fn, state, xs):
    """`lax.scan` of step_fn over the leading axis of xs, unrolled.

    Unrolled because XLA:CPU runs convolutions inside a rolled loop ~10x slower (measured:
    10 conv-VAE steps 14.3 s rolled, 1.1 s unrolled, 1.5 s as 10 separate calls).
    """
    return jax.lax.scan(step_fn, state, xs, unroll=True)


def run_in_chunks(chunk_fn, state, batches, steps_per_call: int):
    """Calls jitted chunk_fn(state, batches[i:i+steps_per_call]) over all batches; the
    per-step outputs stay on the device, concatenated, for one fetch by the caller."""
    outputs = []
    for i in range(0, batches.shape[0], steps_per_call):
        state, out = chunk_fn(state, batches[i : i + steps_per_call])
        outputs.append(out)
    return state, jax.tree.map(lambda *m: jnp.concatenate(m), *outputs)


def make_step_functions(graphdef, tx, config):
    """Jitted train-epoch and eval functions closed over the static model and optimizer."""
    binarize = config.data.binarize
    likelihood = models.likelihood_from_config(config.data)
    batch_size = config.train.batch_size

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
    def train_chunk(state, train_images, batch_indices, key):
        return unrolled_scan(lambda st, idx: train_step(st, train_images[idx], jax.random.fold_in(key, 0)), state, batch_indices)

    def train_epoch(state, train_images, key, epoch):
        """One epoch; the data stays on the device and metrics are fetched by the caller."""
        batches = epoch_batches(key, epoch, train_images.shape[0])
        return run_in_chunks(lambda st, b: train_chunk(st, train_images, b, key), state, batches, config.train.steps_per_call)

    @jax.jit
    def eval_batch(params, x, key):
        """Per-example ELBO terms on already-prepared images x in [0, 1]."""
        model = nnx.merge(graphdef, params)
        mean, logvar, z, out = model(x, key)
        return losses.elbo(x, mean, logvar, z, out, likelihood, beta=config.vae.beta, kl=config.vae.kl)

    return train_epoch, eval_batch


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


def train_vae(config, workdir: str, dataset=None, *, max_epochs_this_run: int | None = None):
    """Trains (or resumes) the VAE in `workdir`; returns the final train state."""
    save_config(config, workdir)
    dataset = dataset or input_pipeline.load_dataset(config.data)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    tc = config.train
    steps_per_epoch = len(dataset.train) // tc.batch_size
    if steps_per_epoch < 1:
        raise TrainingError(
            f"config.train.batch_size={tc.batch_size} is larger than the training split ({len(dataset.train)})"
        )
    total_steps = steps_per_epoch * tc.num_epochs

    model = create_vae(config)
    graphdef, params = nnx.split(model)
    tx = make_optimizer(tc, total_steps)
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.asarray(0, jnp.int32)}
    state, resumed = checkpoint.restore_or_init(ckpt_dir, state)
    start_step = int(state["step"])
    if resumed:
        log.info("Resuming from %s at step %d", ckpt_dir, start_step)
    if start_step % steps_per_epoch:
        raise TrainingError(
            f"checkpoint step {start_step} is not at an epoch boundary of {steps_per_epoch} steps: "
            "config.train.batch_size or config.data.num_train changed since it was written"
        )
    train_epoch, eval_batch = make_step_functions(graphdef, tx, config)

    key = jax.random.key(config.seed)
    train_images = jax.device_put(dataset.train.images)
    eval_sets = prepared_eval_sets(config, dataset)
    best_path = os.path.join(workdir, "best_validation_elbo.json")
    best = json.load(open(best_path))["elbo"] if os.path.exists(best_path) else -math.inf

    def run_eval(step, epoch):
        nonlocal best
        results = {}
        for split, x in eval_sets.items():
            m = evaluate(eval_batch, state["params"], x, eval_key(config), tc.eval_batch_size,
                         bits_per_dim=not config.data.binarize)
            append_metrics(workdir, {"step": step, "epoch": epoch, "split": split, **m})
            results[split] = m
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
    for epoch in range(first_epoch, last_epoch):
        t0 = time.perf_counter()
        state, step_metrics = train_epoch(state, train_images, key, epoch)
        step_metrics = jax.device_get(step_metrics)  # the one host sync per epoch
        seconds = time.perf_counter() - t0
        step = int(state["step"])
        bad = find_non_finite(step_metrics, step - steps_per_epoch)
        if bad:
            raise TrainingError(
                f"non-finite {bad[1]} at step {bad[0]} (epoch {epoch + 1}); stopped without saving, "
                f"so the latest checkpoint (step {checkpoint.latest(ckpt_dir)}) is the last good one"
            )
        train_record = {k: float(np.mean(v)) for k, v in step_metrics.items()}
        train_record.update(steps_per_sec=steps_per_epoch / seconds, images_per_sec=steps_per_epoch * tc.batch_size / seconds)
        append_metrics(workdir, {"step": step, "epoch": epoch + 1, "split": "train", **train_record})
        results, is_best = run_eval(step, epoch + 1)
        checkpoint.save(ckpt_dir, step, state, best=is_best)
        if is_best:
            with open(best_path, "w") as f:
                json.dump({"step": step, "elbo": best}, f)
        bar.update(steps_per_epoch)
        bar.set_postfix(val_elbo=f"{results['validation']['elbo']:.2f}", steps_s=f"{train_record['steps_per_sec']:.1f}")
    bar.close()
    return state


def train_and_evaluate(config, workdir: str, *, max_epochs_this_run: int | None = None):
    """Runs the stages named by `config.stage` ('vae', 'prior' or 'all') in `workdir`."""
    if config.stage not in ("vae", "prior", "all"):
        raise TrainingError(f"config.stage={config.stage!r} is unknown; expected 'vae', 'prior' or 'all'")
    dataset = input_pipeline.load_dataset(config.data)
    if config.stage in ("vae", "all"):
        train_vae(config, workdir, dataset, max_epochs_this_run=max_epochs_this_run)
    if config.stage in ("prior", "all"):
        from vae import prior_lib

        prior_lib.fit_priors(config, workdir, dataset, max_epochs_this_run=max_epochs_this_run)
