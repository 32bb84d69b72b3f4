"""Stage 2: fit learned priors to the latents of a frozen, trained VAE.

For each name in `config.prior.name` (comma separated) this writes `W/priors/<name>/`
(config.json, checkpoints/) and appends to `W/metrics.jsonl` the held-out latent NLL of the
prior and of N(0, I) on the same validation latents, per example and per latent dimension:
`latent_nll/<name>`, `latent_nll/standard_normal`, `latent_nll_per_dim/...` (nats).

Training latents are fresh draws z ~ q(z|x) every epoch (the aggregate posterior), or the
posterior means with `prior.fit_target='mean'`. Autoregressive priors (pixelcnn, made) are
fitted by Adam; the GMM by EM on one draw per training image.
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
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

import priors
from priors import gmm as gmm_lib
from vae import checkpoint, input_pipeline, train_lib

log = logging.getLogger(__name__)


class PriorError(train_lib.TrainingError):
    """A prior that cannot be fitted or loaded here; the message says why."""


def prior_names(prior_config) -> list[str]:
    names = [n.strip() for n in prior_config.name.split(",") if n.strip()]
    for n in names:
        if n not in priors.NAMES or n == "standard_normal":
            raise PriorError(
                f"config.prior.name: {n!r} is not a learned prior; expected some of {priors.NAMES[1:]}"
            )
    return names


def prior_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, "priors", name)


# ----------------------------------------------------------------------------- VAE side


def load_vae(workdir: str, config=None, *, kind: str = "best"):
    """(config, VAE) restored from `workdir` ('best' checkpoint, else 'latest')."""
    config = config or train_lib.load_config(workdir)
    model, _, _ = train_lib.restore_vae(workdir, config, kind=kind)
    return config, model


def encode_split(model, images_uint8, binarize: bool, seed: int, batch_size: int = 1000):
    """Posterior (mean, logvar) of every image, images prepared as in evaluation."""
    x = train_lib.fixed_binarization(images_uint8, seed, binarize)
    graphdef, params = nnx.split(model)
    encode = jax.jit(lambda p, x: nnx.merge(graphdef, p).encode(x))
    outs = [encode(params, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return jnp.concatenate([o[0] for o in outs]), jnp.concatenate([o[1] for o in outs])


def draw_latents(key, mean, logvar, fit_target: str):
    if fit_target == "mean":
        return mean
    if fit_target == "sample":
        return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    raise PriorError(f"config.prior.fit_target={fit_target!r}; expected 'sample' or 'mean'")


# ----------------------------------------------------------------------------- prior side


def save_prior_config(config, workdir: str, name: str, latent_shape) -> None:
    path = os.path.join(prior_dir(workdir, name), "config.json")
    record = {"name": name, "latent_shape": list(latent_shape), "prior": json.loads(config.prior.to_json()), "seed": config.seed}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old["latent_shape"] != record["latent_shape"]:
            raise PriorError(
                f"{path} is a prior for latent shape {tuple(old['latent_shape'])}, but this VAE's "
                f"latent shape is {tuple(latent_shape)}; delete {prior_dir(workdir, name)} to refit"
            )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)


def load_prior(workdir: str, name: str, latent_shape):
    """A fitted prior from `W/priors/<name>/`, checked against the VAE's latent shape."""
    if name == "standard_normal":
        return priors.StandardNormal(latent_shape)
    path = os.path.join(prior_dir(workdir, name), "config.json")
    if not os.path.exists(path):
        raise PriorError(f"no prior {name!r} fitted in {workdir} (missing {path})")
    with open(path) as f:
        record = json.load(f)
    if tuple(record["latent_shape"]) != tuple(latent_shape):
        raise PriorError(
            f"prior {name!r} in {prior_dir(workdir, name)} was fitted for latent shape "
            f"{tuple(record['latent_shape'])}, but the VAE's latent shape is {tuple(latent_shape)}"
        )
    import ml_collections

    prior = priors.build(name, latent_shape, ml_collections.ConfigDict(record["prior"]), seed=record["seed"])
    graphdef, state = nnx.split(prior)
    restored = checkpoint.restore(os.path.join(prior_dir(workdir, name), "checkpoints"), {"prior": state}, kind="latest")
    return nnx.merge(graphdef, restored["prior"])


def fitted_prior_names(workdir: str) -> list[str]:
    root = os.path.join(workdir, "priors")
    if not os.path.isdir(root):
        return []
    return sorted(
        n for n in os.listdir(root)
        if checkpoint.latest(os.path.join(root, n, "checkpoints")) is not None
    )


def heldout_nll(prior, z, batch_size: int = 1000) -> float:
    """Mean -log p(z) over held-out latents z (nats per example)."""
    graphdef, state = nnx.split(prior)
    log_prob = jax.jit(lambda s, z: nnx.merge(graphdef, s).log_prob(z))
    total = sum(jnp.sum(log_prob(state, z[i : i + batch_size])) for i in range(0, len(z), batch_size))
    return -float(total) / len(z)  # one host fetch


def log_heldout(workdir: str, name: str, prior, z_val, step: int, epoch: int) -> dict:
    dims = math.prod(z_val.shape[1:])
    record = {"step": step, "epoch": epoch, "split": "validation", "prior": name}
    for label, p in ((name, prior), ("standard_normal", priors.StandardNormal(z_val.shape[1:]))):
        nll = heldout_nll(p, z_val)
        record[f"latent_nll/{label}"] = nll
        record[f"latent_nll_per_dim/{label}"] = nll / dims
    train_lib.append_metrics(workdir, record)
    return record


# ----------------------------------------------------------------------------- fitting


def fit_gmm(config, workdir, name, prior, mean, logvar, z_val, key):
    ckpt_dir = os.path.join(prior_dir(workdir, name), "checkpoints")
    graphdef, state = nnx.split(prior)
    if checkpoint.latest(ckpt_dir) is not None:
        log.info("prior %s already fitted in %s", name, ckpt_dir)
        return nnx.merge(graphdef, checkpoint.restore(ckpt_dir, {"prior": state})["prior"])
    train_lib.rewind_metrics(workdir, -1, prior=name)  # from a fit killed before its checkpoint
    z = draw_latents(jax.random.fold_in(key, 0), mean, logvar, config.prior.fit_target)
    t0 = time.perf_counter()
    prior, trace = gmm_lib.fit(prior, jax.random.fold_in(key, 1), z, config.prior.gmm.num_iters)
    trace = np.asarray(trace)
    if not np.all(np.isfinite(trace)):
        raise PriorError(f"GMM EM diverged (non-finite log-likelihood at iteration {int(np.argmin(np.isfinite(trace)))})")
    log.info("GMM EM: %d iterations in %.1f s, train log-lik %.2f -> %.2f nats",
             len(trace), time.perf_counter() - t0, trace[0], trace[-1])
    record = log_heldout(workdir, name, prior, z_val, step=len(trace), epoch=1)
    checkpoint.save(ckpt_dir, len(trace), {"prior": nnx.state(prior)})
    log.info("%s", record)
    return prior


def fit_autoregressive(config, workdir, name, prior, mean, logvar, z_val, key, *, max_epochs_this_run=None):
    pc = config.prior
    ckpt_dir = os.path.join(prior_dir(workdir, name), "checkpoints")  # the prior alone
    state_dir = os.path.join(prior_dir(workdir, name), "train_state")  # + optimizer, to resume
    n = mean.shape[0]
    steps_per_epoch = n // pc.batch_size
    if steps_per_epoch < 1:
        raise PriorError(f"config.prior.batch_size={pc.batch_size} is larger than the training split ({n})")
    graphdef, params = nnx.split(prior)
    tx = train_lib.make_optimizer(pc, steps_per_epoch * pc.num_epochs)
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.asarray(0, jnp.int32)}
    state, resumed = checkpoint.restore_or_init(state_dir, state)
    start = int(state["step"])
    train_lib.rewind_metrics(workdir, start if resumed else -1, prior=name)

    def loss_fn(params, z):
        return -jnp.mean(nnx.merge(graphdef, params).log_prob(z))

    @jax.jit
    def epoch_data(epoch):
        k = jax.random.fold_in(key, epoch)
        z = draw_latents(jax.random.fold_in(k, 0), mean, logvar, pc.fit_target)  # fresh each epoch
        perm = jax.random.permutation(jax.random.fold_in(k, 1), n)[: steps_per_epoch * pc.batch_size]
        return z, perm.reshape(steps_per_epoch, pc.batch_size)

    def train_step(state, z_batch):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], z_batch)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state, "step": state["step"] + 1}, loss

    @functools.partial(jax.jit, donate_argnums=0)
    def train_chunk(state, z, batch_indices):
        return train_lib.unrolled_scan(lambda st, idx: train_step(st, z[idx]), state, batch_indices)

    def save(step):
        checkpoint.save(state_dir, step, state)
        checkpoint.save(ckpt_dir, step, {"prior": state["params"]})

    first = start // steps_per_epoch
    last = pc.num_epochs if max_epochs_this_run is None else min(pc.num_epochs, first + max_epochs_this_run)
    bar = tqdm(total=steps_per_epoch * pc.num_epochs, initial=start, desc=f"prior {name}", unit="step", dynamic_ncols=True)
    step = start
    with train_lib.stop_on_signals() as signals:
        for epoch in range(first, last):
            t0 = time.perf_counter()
            z, batches = epoch_data(epoch)
            chunks = (batches[s] for s in train_lib.chunk_slices(steps_per_epoch, pc.steps_per_call, step - epoch * steps_per_epoch))
            state, step_losses = train_lib.run_chunks(lambda st, b: train_chunk(st, z, b), state, chunks,
                                                      should_stop=lambda: bool(signals))
            step_losses = np.zeros(0) if step_losses is None else np.asarray(jax.device_get(step_losses))
            if not np.all(np.isfinite(step_losses)):
                bad = step + int(np.argmin(np.isfinite(step_losses)))
                raise PriorError(f"non-finite prior loss at step {bad} (epoch {epoch + 1}); the last good checkpoint is kept")
            steps_run, step = int(state["step"]) - step, int(state["step"])
            if signals and step < (epoch + 1) * steps_per_epoch:  # the resumable state only:
                checkpoint.save(state_dir, step, state)  # the prior readers see is a whole epoch's
                raise train_lib.Stopped(signals[0], step, state_dir)
            seconds = time.perf_counter() - t0
            train_lib.append_metrics(workdir, {"step": step, "epoch": epoch + 1, "split": "train", "prior": name,
                                               f"latent_nll/{name}": float(step_losses.mean()), "steps_per_sec": steps_run / seconds})
            record = log_heldout(workdir, name, nnx.merge(graphdef, state["params"]), z_val, step, epoch + 1)
            save(step)
            bar.update(steps_run)
            bar.set_postfix(val_nll=f"{record[f'latent_nll/{name}']:.2f}", normal=f"{record['latent_nll/standard_normal']:.2f}")
            if signals:
                raise train_lib.Stopped(signals[0], step, state_dir)
    bar.close()
    return nnx.merge(graphdef, state["params"])


def fit_priors(config, workdir: str, dataset=None, *, max_epochs_this_run=None) -> dict:
    """Fits every prior named in config.prior.name to the VAE in `workdir`."""
    names = prior_names(config.prior)
    vae_config, model = load_vae(workdir)
    dataset = dataset or input_pipeline.load_dataset(vae_config.data)
    binarize = vae_config.data.binarize
    mean, logvar = encode_split(model, dataset.train.images, binarize, seed=config.seed + 11)
    val_mean, val_logvar = encode_split(model, dataset.validation.images, binarize, seed=config.seed + 1)
    # Held-out latents: one fixed draw from q(z|x) per validation image.
    z_val = draw_latents(jax.random.key(config.seed + 12), val_mean, val_logvar, "sample")
    fitted = {}
    for i, name in enumerate(names):
        save_prior_config(config, workdir, name, model.latent_shape)
        prior = priors.build(name, model.latent_shape, config.prior, seed=config.seed)
        key = jax.random.fold_in(jax.random.key(config.seed + 13), i)
        if name == "gmm":
            fitted[name] = fit_gmm(config, workdir, name, prior, mean, logvar, z_val, key)
        else:
            fitted[name] = fit_autoregressive(config, workdir, name, prior, mean, logvar, z_val, key,
                                              max_epochs_this_run=max_epochs_this_run)
    return fitted
