"""Stage 1: train the VAE in a workdir (`train_vae`), through the one fit loop.

The training split lives on the device as uint8; an epoch walks a per-epoch permutation in
jitted chunks of `train.steps_per_call` steps, with dynamic binarization inside the step,
so no data crosses from the host per step (or, `train.data_placement='streamed'`, the host
gathers each chunk's batches and ships them one call ahead). The host syncs once per epoch:
to log, to check the loss is finite, and to checkpoint. Randomness (`vae.rng`): step s uses
`fold_in(key(seed, 'vae_step'), s)`, epoch e's order `fold_in(key(seed, 'vae_epoch_order'), e)`.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vae import models, rng
from vae.data import input_pipeline
from vae.errors import TrainingError
from vae.evaluation import evaluation_data, plotting
from vae.models import losses, vq
from vae.parallel import sharding
from vae.train import loop, optim
from vae.workdir import checkpoint

log = logging.getLogger(__name__)


class StepFunctions(NamedTuple):
    train_epoch: Callable  # (state, train_images, key, epoch, *, start, should_stop) -> (state, metrics)
    train_step: Callable  # (state, images_uint8, key) -> (state, metrics): one step, unjitted


def make_step_functions(graphdef, tx, config, mesh=None, shards=None) -> StepFunctions:
    """The jitted train epoch closed over the static model and optimizer.

    train_epoch(state, train_images, seed, epoch, start=0, should_stop) -> (state, metrics):
    `train_images` is the device-resident uint8 split (batches gathered inside the jitted
    call) or, on the streamed path, this process's host rows (its pieces of each batch
    gathered, assembled into global batches and shipped per call, prefetched). Both run the
    same train_step on the same batches and keys; `shards` (`sharding.InputShards`, default
    one shard of the whole split) says how the rows make up the batches.
    """
    binarize = config.data.binarize
    tc = config.train
    mesh = mesh or sharding.make_mesh(1)
    per_step_batch = sharding.batch_sharding(mesh)  # (B, H, W, C)
    streamed_chunk_sharding = sharding.batch_sharding(mesh, batch_axis=1)  # (steps, B, H, W, C)
    unroll = tc.unroll

    def loss_fn(params, images_uint8, key):
        model = nnx.merge(graphdef, params)
        key_bin, key_z = jax.random.split(key)
        x = input_pipeline.prepare_images(images_uint8, key_bin, binarize)
        terms = model.train_terms(x, key_z, beta=config.vae.beta, kl=config.vae.kl)
        metrics = {k: jnp.mean(v) for k, v in terms.items()}
        return metrics["loss"], (metrics, nnx.state(model, vq.Statistic))

    def train_step(state, images_uint8, key):
        """One Adam step on one batch -> (state, metrics). `state` = {params, opt_state, step}.
        Running statistics the model updated in the step (the VQ codebook's EMA; their
        gradient is zero, so Adam leaves them alone) replace their old values."""
        images_uint8 = jax.lax.with_sharding_constraint(images_uint8, per_step_batch)
        step_key = jax.random.fold_in(key, state["step"])
        grads, (metrics, statistics) = jax.grad(loss_fn, has_aux=True)(state["params"], images_uint8, step_key)
        metrics["grad_norm"] = optax.global_norm(grads)
        new = optim.apply_gradients(tx, state, grads)
        if jax.tree.leaves(statistics):
            model = nnx.merge(graphdef, new["params"])
            nnx.update(model, statistics)
            new["params"] = nnx.state(model)
        return new, metrics

    epoch_batches = jax.jit(lambda key, epoch, shards: shards.batch_indices(key, epoch, tc.batch_size),
                            static_argnums=2)

    @functools.partial(jax.jit, donate_argnums=0)
    def resident_chunk(state, train_images, batch_indices, step_key):
        return loop.scan_steps(lambda st, idx: train_step(st, train_images[idx], step_key), state, batch_indices, unroll)

    @functools.partial(jax.jit, donate_argnums=0)
    def streamed_chunk(state, batches, step_key):
        return loop.scan_steps(lambda st, images: train_step(st, images, step_key), state, batches, unroll)

    def train_epoch(state, train_images, seed: int, epoch, *, start=0, should_stop=lambda: False):
        """Epoch `epoch` of the run seeded `seed` from its step `start` on; stops early between
        calls if should_stop()."""
        rows = shards or sharding.InputShards(1, train_images.shape[0])
        step_key = rng.key(seed, "vae_step")
        batches = epoch_batches(rng.key(seed, "vae_epoch_order"), epoch, rows)
        slices = loop.chunk_slices(batches.shape[0], tc.steps_per_call, start)
        if isinstance(train_images, jax.Array):
            chunks = (batches[s] for s in slices)
            return loop.run_chunks(lambda st, b: resident_chunk(st, train_images, b, step_key), state, chunks,
                                   should_stop=should_stop)
        host_batches = np.asarray(batches)  # the same permutation, gathered on the host
        chunks = loop.prefetch(sharding.put_local(train_images[host_batches[s]], streamed_chunk_sharding, 1)
                               for s in slices)
        return loop.run_chunks(lambda st, b: streamed_chunk(st, b, step_key), state, chunks, should_stop=should_stop)

    return StepFunctions(train_epoch, train_step)


def save_image_grids(model, x_eval, z, wd, step: int) -> None:
    """Reconstructions of the first len(z) evaluation images, and the decoded latents z, as
    PNGs in W/samples/ (and TensorBoard images when it is on)."""
    n = len(z)
    x = jnp.asarray(x_eval[:n])
    mean, _ = model.encode(x)
    recon = losses.decoder_mean(model.likelihood, model.decode(mean))
    samples = losses.decoder_mean(model.likelihood, model.decode(z))
    ncol = 8  # rows alternate: 8 originals, then their 8 reconstructions
    rows = n // ncol
    pairs = np.stack([np.asarray(x)[: rows * ncol], np.asarray(recon)[: rows * ncol]], 1)
    pairs = pairs.reshape(rows, ncol, 2, *x.shape[1:]).transpose(0, 2, 1, 3, 4, 5).reshape(-1, *x.shape[1:])
    grids = {"reconstructions": plotting.make_grid(pairs, ncol=ncol), "prior_samples": plotting.make_grid(samples)}
    for name, grid in grids.items():
        plotting.save_image(grid, os.path.join(wd.samples, f"{name}_{step:07d}.png"))
        wd.log_image(f"samples/{name}", grid, step)


def _heal_best(wd, state, step: int) -> float:
    """The best validation ELBO among the epochs up to `step`, from metrics.jsonl; re-saves
    the 'best' checkpoint if a kill fell between saving it and saving 'latest'."""
    val = [r for r in wd.read_metrics() if r["split"] == "validation" and "prior" not in r
           and "elbo" in r and 0 < r["step"] <= step]
    if not val:
        return -math.inf
    top = max(val, key=lambda r: r["elbo"])
    if top["step"] == step and checkpoint.latest(wd.checkpoints, "best") != step:
        checkpoint.save(wd.checkpoints, step, state, best=True)
    wd.write_best(top["step"], top["elbo"])
    return top["elbo"]


def train_vae(config, wd, dataset, *, max_epochs_this_run: int | None = None):
    """Trains (or resumes) the VAE in workdir `wd`; returns the final train state.

    Checkpoints at every epoch end ('latest', and 'best' by validation ELBO); SIGTERM/SIGINT
    save one at the next chunk boundary and raise `Stopped`. A resume continues from the
    latest checkpoint, mid-epoch too, and reproduces an uninterrupted run bit for bit.
    """
    wd.check_resumable(config)
    tc = config.train
    shards = dataset.train_shards or sharding.InputShards(1, len(dataset.train))
    steps_per_epoch = shards.steps_per_epoch(tc.batch_size)
    if steps_per_epoch < 1:
        raise TrainingError(
            f"config.train.batch_size={tc.batch_size} is larger than the training split ({len(dataset.train)})")
    mesh = sharding.make_mesh(tc.num_devices)
    sharding.check_divisible(tc.batch_size, mesh, "train.batch_size")

    graphdef, params = nnx.split(models.create_vae(config))
    tx = optim.make_optimizer(tc, steps_per_epoch * tc.num_epochs)
    state = sharding.put(optim.init_state(tx, params), sharding.replicated(mesh))
    resident = sharding.device_resident(config, dataset.train.images, mesh)
    train_images = (sharding.put(dataset.train.images, sharding.replicated(mesh)) if resident
                    else dataset.train.images)
    train_epoch = make_step_functions(graphdef, tx, config, mesh, shards).train_epoch
    elbo_fn = evaluation_data.make_elbo_fn(graphdef, config)
    sample_prior = jax.jit(lambda p, k: nnx.merge(graphdef, p).sample_prior(k, tc.num_sample_images))
    eval_data = evaluation_data.EvalData(config, dataset)
    best = -math.inf

    def run_eval(state, step, epoch):
        """Validation and test ELBO records, image grids; returns (validation ELBO, is best)."""
        nonlocal best
        results = {}
        model = nnx.merge(graphdef, sharding.local_copy(state["params"]))
        for split in ("validation", "test"):
            m = evaluation_data.evaluate(elbo_fn, state["params"], eval_data.images(split), eval_data.elbo_key,
                                    tc.eval_batch_size, bits_per_dim=not config.data.binarize, mesh=mesh)
            if model.latents == "categorical":  # what VQ users watch: how much of the codebook is in use
                m |= vq.codebook_usage(eval_data.posteriors(model, split)[0], model.num_codes,
                                       getattr(model, "levels", None))
            wd.append_metrics({"step": step, "epoch": epoch, "split": split, **m})
            results[split] = m
        if jax.process_index() == 0:
            z = sample_prior(nnx.state(model), rng.key(config.seed, "vae_grid"))  # from the prior the VAE trains with
            save_image_grids(model, eval_data.images("test"), z, wd, step)
        is_best = results["validation"]["elbo"] > best
        best = max(best, results["validation"]["elbo"])
        return results["validation"]["elbo"], is_best

    def end_epoch(state, step, epoch):
        val_elbo, is_best = run_eval(state, step, epoch)
        checkpoint.save(wd.checkpoints, step, state, best=is_best)
        if is_best:
            wd.write_best(step, best)
        return {"val_elbo": f"{val_elbo:.2f}"}

    task = loop.Task(
        desc="vae", steps_per_epoch=steps_per_epoch, num_epochs=tc.num_epochs,
        run_epoch=lambda st, epoch, start, stop: train_epoch(st, train_images, config.seed, epoch, start=start,
                                                             should_stop=stop),
        end_epoch=end_epoch, checkpoint_dir=wd.checkpoints, workdir=wd,
        checked=("loss", "recon", "kl", "grad_norm"), batch_size=tc.batch_size)
    state, resumed = loop.resume(task, state)
    wd.save_config(config)  # only once the checkpoint restored: a failed resume changes nothing
    wd.log_invocation("vae")
    if resumed:
        log.info("Resuming from %s at step %d", wd.checkpoints, int(state["step"]))
    log.info("training on %d device(s), %s data", mesh.size, "device-resident" if resident else "streamed")
    best = _heal_best(wd, state, int(state["step"]))
    if not resumed:
        run_eval(state, 0, 0)  # the untrained model: the baseline the first epochs must beat
    return loop.fit(task, state, max_epochs_this_run=max_epochs_this_run)
