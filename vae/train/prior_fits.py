"""How stage 2 fits one prior, by its registry entry's fit kind: 'em' priors by their EM
routine on draws of every training latent (`fit_em`), 'gradient' priors by Adam in the one fit
loop on latent batches (`fit_gradient`), each epoch scored on held-out latents beside the
prior stage 1 trained with (`log_heldout`), the best epoch kept. What a fit reads from a view of
the training posteriors is `fit_latents`'s: z ~ q(z|x) or the means, a dVAE's codes c ~ q(c|x).

Devices and processes: gradient fits are data-parallel over stage 1's mesh (latents
replicated, batches split); EM fits and held-out evaluation run in every process on one local
device, on the same values, so all processes agree on every decision.
"""

from __future__ import annotations

import functools
import logging
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import priors
from vae import rng
from vae.data.batches import epoch_batch_indices
from vae.errors import CheckpointError, PriorError
from vae.evaluation import evaluation_data
from vae.parallel import multihost, sharding
from vae.train import loop, optim
from vae.workdir import checkpoint

log = logging.getLogger(__name__)


def draw_fit_latents(key, mean, logvar, fit_target: str):
    """What a prior is fitted to: z ~ q(z|x) ('sample') or the posterior means ('mean')."""
    if fit_target == "mean":
        return mean
    if fit_target == "sample":
        return evaluation_data.draw_latents(key, mean, logvar)
    raise PriorError(f"config.prior.fit_target={fit_target!r}; expected 'sample' or 'mean'")


def fit_latents(key, posterior, fit_target: str):
    """`draw_fit_latents` of one view of the training posteriors: (mean, logvar), or a dVAE's
    `evaluation_data.SampledPosterior`: c ~ q(c|x) drawn from `key` ('sample', the draws the
    aggregate posterior is made of) or the argmax codes ('mean'), the images re-encoded."""
    if not isinstance(posterior, evaluation_data.SampledPosterior):
        return draw_fit_latents(key, *posterior, fit_target)
    return draw_fit_latents(key, posterior.mode() if fit_target == "mean" else posterior.draw(key), None, fit_target)


def log_heldout(wd, name: str, prior, z_val, step: int, epoch: int) -> dict:
    """The held-out latent NLL of `prior` and of the prior stage 1 trained with beside it (N(0, I),
    or uniform over a VQ-VAE's codes), as one metrics record."""
    dims = math.prod(z_val.shape[1:])
    record = {"step": step, "epoch": epoch, "split": "validation", "prior": name}
    base = priors.BASELINES[priors.registry.get(name).latents]
    for label, p in ((name, prior), (base, priors.build(base, z_val.shape[1:], num_codes=getattr(prior, "num_codes", None)))):
        nll = evaluation_data.latent_nll(p, z_val)
        record[f"latent_nll/{label}"] = nll
        record[f"latent_nll_per_dim/{label}"] = nll / dims
    record = multihost.process_0_value(record)  # model selection and early stopping agree everywhere
    wd.append_metrics(record)
    return record


def fit_em(config, wd, name, prior, posteriors, z_val, key, mesh=None):
    """One EM fit on `prior.em_draws_per_image` draws of every training latent (draw j from
    posteriors(j)); a finished fit is restored, not redone. It runs in every process alike;
    the checkpoint is saved from the mesh (default: one device), as Orbax wants across processes."""
    mesh = mesh or sharding.make_mesh(1)
    ckpt_dir = wd.prior_checkpoints(name)
    graphdef, state = nnx.split(prior)
    t0 = time.perf_counter()
    if checkpoint.latest(ckpt_dir) is not None:
        log.info("prior %s already fitted in %s", name, ckpt_dir)
        return nnx.merge(graphdef, checkpoint.restore(ckpt_dir, {"prior": state})["prior"])
    wd.rewind_metrics(-1, prior=name)  # from a fit killed before its checkpoint
    draw_key = rng.within_fit(key, "em_draws")
    keys = [draw_key] + [jax.random.fold_in(draw_key, j) for j in range(1, config.prior.em_draws_per_image)]
    z = jnp.concatenate([fit_latents(k, posteriors(j), config.prior.fit_target) for j, k in enumerate(keys)])
    t0 = time.perf_counter()
    prior, trace = priors.registry.get(name).em(prior, rng.within_fit(key, "em"), z, config.prior[name])
    trace = np.asarray(trace)
    if not np.all(np.isfinite(trace)):
        raise PriorError(f"{name} EM diverged (non-finite log-likelihood at iteration "
                         f"{int(np.argmin(np.isfinite(trace)))})")
    log.info("%s EM: %d iterations in %.1f s, train log-lik %.2f -> %.2f nats",
             name, len(trace), time.perf_counter() - t0, trace[0], trace[-1])
    record = log_heldout(wd, name, prior, z_val, step=len(trace), epoch=1)
    checkpoint.save(ckpt_dir, len(trace), {"prior": sharding.put(nnx.state(prior), sharding.replicated(mesh))})
    log_fit_time(wd, name, len(trace), 1, time.perf_counter() - t0)
    log.info("%s", record)
    return prior


def best_epochs(wd, name: str) -> tuple[int | None, float, int]:
    """(best epoch, its held-out latent NLL, last epoch) of prior `name`'s fit so far, from
    metrics.jsonl (None, inf, 0 before the first epoch)."""
    held = _heldout_records(wd, name)
    if not held:
        return None, math.inf, 0
    best = min(held, key=lambda r: r[f"latent_nll/{name}"])
    return best["epoch"], best[f"latent_nll/{name}"], max(r["epoch"] for r in held)


def log_fit_time(wd, name: str, step: int, epoch: int, seconds: float) -> None:
    """The "fit" record of a run that finished prior `name`'s fit: its wall time."""
    wd.append_metrics({"step": step, "epoch": epoch, "split": "fit", "prior": name, "fit_seconds": seconds})


def stopped_early(wd, name: str, patience: int) -> str | None:
    """Why prior `name`'s gradient fit is over before its last epoch (prior.patience), or None."""
    best_epoch, best_nll, last_epoch = best_epochs(wd, name)
    if patience > 0 and best_epoch is not None and last_epoch - best_epoch >= patience:
        return (f"held-out NLL {best_nll:.3f} at epoch {best_epoch} not improved on in {patience} epochs "
                f"(prior.patience); {wd.prior_checkpoints(name)} holds epoch {best_epoch}")
    return None


def init_fit_state(tx, params) -> dict:
    """A gradient fit's train state: {params, opt_state, step, ema} (the EMA in its own buffers)."""
    return {**optim.init_state(tx, params), "ema": jax.tree.map(jnp.copy, params)}


def make_fit_chunk(config, name, prior, tx, key, mesh):
    """(train_chunk, the train metric's name) of a gradient-fitted prior: train_chunk(state,
    z, batch_indices) -> (state, metrics) runs Adam steps on the batches z[batch_indices[i]]
    in one jitted call (state donated; see init_fit_state). The loss is the mean -log p(z), or
    the prior's own `fit_loss(z, key)` where it has one (diffusion's denoising loss), with a
    fresh key every step for it and for dropout (`config.prior.<name>.dropout` > 0); the state
    carries an EMA of the parameters (`prior.ema_decay`). The step fit_gradient runs and
    benchmarks/prior_fit_throughput.py times."""
    pc = config.prior
    split_batch = sharding.batch_sharding(mesh)
    dropout = float(pc[name].get("dropout", 0.0)) if name in pc else 0.0
    dropout_key = rng.within_fit(key, "dropout")
    # A prior with its own training objective is fitted by it; the train records then carry it.
    own_loss = hasattr(prior, "fit_loss")
    graphdef = nnx.graphdef(prior)
    loss_key = rng.within_fit(key, "fit_loss")
    train_metric = f"fit_loss/{name}" if own_loss else f"latent_nll/{name}"

    def train_step(state, z_batch):
        def loss_fn(p):
            model = nnx.merge(graphdef, p)
            if own_loss:
                return jnp.mean(model.fit_loss(z_batch, jax.random.fold_in(loss_key, state["step"])))
            if dropout > 0:
                return -jnp.mean(model.log_prob(z_batch, dropout_key=jax.random.fold_in(dropout_key, state["step"])))
            return -jnp.mean(model.log_prob(z_batch))

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        new = optim.apply_gradients(tx, state, grads)
        t = state["step"].astype(jnp.float32)  # the average warms up: decay min(ema_decay, (1 + t) / (10 + t))
        d = jnp.minimum(pc.ema_decay, (1.0 + t) / (10.0 + t))
        new["ema"] = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state["ema"], new["params"])
        return new, {train_metric: loss}

    @functools.partial(jax.jit, donate_argnums=0)
    def train_chunk(state, z, batch_indices):
        return loop.scan_steps(lambda st, idx: train_step(st, jax.lax.with_sharding_constraint(z[idx], split_batch)),
                               state, batch_indices, pc.unroll)

    return train_chunk, train_metric


def fit_gradient(config, wd, name, prior, posteriors, num_latents, z_val, key, mesh=None, *,
                 max_epochs_this_run=None):
    """Adam on the mean -log p(z) in the fit loop: resumable, evaluated every epoch. Epoch e
    fits fresh draws from posteriors(e) (`prior.latent_draws='per_epoch'`) or, every epoch, the
    one draw of epoch 0 ('once'), by `fit_latents` (a dVAE's codes too: c ~ q(c|x), not the argmax).

    Model selection on the held-out latents: W/priors/<name>/checkpoints keeps the epoch with
    the lowest held-out NLL (what readers load); `prior.patience` > 0 stops the fit after that
    many epochs without a new best. The train state carries an exponential moving average of
    the parameters ("ema"; with `prior.ema_decay` = 0 it is the parameters, so the option can
    change between runs); `prior.ema_decay` > 0 evaluates and keeps it instead of the
    parameters. A prior section with `dropout` > 0 gets a fresh dropout key every step; a
    prior with a `fit_loss(z, key)` method is fitted by that objective instead of -log p.
    The steps are data-parallel over `mesh` (default: one device): latents and state
    replicated, each batch split."""
    mesh = mesh or sharding.make_mesh(1)
    pc = config.prior
    n = num_latents
    steps_per_epoch = n // pc.batch_size
    if steps_per_epoch < 1:
        raise PriorError(f"config.prior.batch_size={pc.batch_size} is larger than the training split ({n})")
    sharding.check_divisible(pc.batch_size, mesh, "prior.batch_size")
    rep = sharding.replicated(mesh)
    t0 = time.perf_counter()
    graphdef, params = nnx.split(prior)
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)  # params get donated
    tx = optim.make_optimizer(pc, steps_per_epoch * pc.num_epochs)
    metric = f"latent_nll/{name}"
    train_chunk, train_metric = make_fit_chunk(config, name, prior, tx, key, mesh)

    def draw_key(draw_epoch):
        return jax.random.fold_in(jax.random.fold_in(key, draw_epoch), 0)

    @jax.jit
    def epoch_data(epoch, draw_epoch, mean, logvar):
        z = draw_fit_latents(draw_key(draw_epoch), mean, logvar, pc.fit_target)
        return z, epoch_batch_indices(jax.random.fold_in(key, epoch), 1, n, pc.batch_size, steps_per_epoch)

    def run_epoch(state, epoch, start, should_stop):
        draw_epoch = epoch if pc.latent_draws == "per_epoch" else 0
        posterior = posteriors(draw_epoch)
        if isinstance(posterior, evaluation_data.SampledPosterior):  # a dVAE's: drawn here, by re-encoding
            posterior = (fit_latents(draw_key(draw_epoch), posterior, pc.fit_target), None)
        z, batches = epoch_data(epoch, draw_epoch, *sharding.put(posterior, rep))
        chunks = (batches[s] for s in loop.chunk_slices(steps_per_epoch, pc.steps_per_call, start))
        return loop.run_chunks(lambda st, b: train_chunk(st, z, b), state, chunks, should_stop=should_stop)

    def end_epoch(state, step, epoch):
        evaluated = state["ema"] if pc.ema_decay > 0 else state["params"]
        _, best_nll, _ = best_epochs(wd, name)
        record = log_heldout(wd, name, nnx.merge(graphdef, sharding.local_copy(evaluated)), z_val, step, epoch)
        if not math.isfinite(record[metric]):
            raise PriorError(f"{name}: non-finite held-out {metric} at epoch {epoch}; the last good fit is in "
                             f"{wd.prior_checkpoints(name)}")
        # The prior readers load, saved first: a kill between the two saves then redoes this
        # epoch (the train state is behind) and re-saves the same prior.
        if record[metric] < best_nll:
            checkpoint.save(wd.prior_checkpoints(name), step, {"prior": evaluated})
        checkpoint.save(task.checkpoint_dir, step, state)
        best_epoch, best_nll, _ = best_epochs(wd, name)
        base = priors.BASELINES[priors.registry.get(name).latents]
        return {"val_nll": f"{record[metric]:.2f}", "best": f"{best_nll:.2f}@{best_epoch}",
                base: f"{record[f'latent_nll/{base}']:.2f}"}

    task = loop.Task(desc=f"prior {name}", steps_per_epoch=steps_per_epoch, num_epochs=pc.num_epochs,
                     run_epoch=run_epoch, end_epoch=end_epoch, converged=lambda: stopped_early(wd, name, pc.patience),
                     checkpoint_dir=wd.prior_train_state(name), workdir=wd, tags={"prior": name}, checked=(train_metric,),
                     batch_size=pc.batch_size, error=PriorError)
    init = sharding.put(init_fit_state(tx, params), rep)
    try:
        state, _ = loop.resume(task, init)
    except CheckpointError:  # a train state saved before it carried "ema": resume it, averaging from now on
        state, _ = loop.resume(task, {k: v for k, v in init.items() if k != "ema"})
        state["ema"] = jax.tree.map(jnp.copy, state["params"])
    start = int(state["step"])
    state = loop.fit(task, state, max_epochs_this_run=max_epochs_this_run)
    last_epoch = best_epochs(wd, name)[2]
    if int(state["step"]) > start and (last_epoch == pc.num_epochs or stopped_early(wd, name, pc.patience)):
        log_fit_time(wd, name, int(state["step"]), last_epoch, time.perf_counter() - t0)
    if checkpoint.latest(wd.prior_checkpoints(name)) is None:  # no epoch run (prior.num_epochs=0)
        return nnx.merge(graphdef, sharding.local_copy(state["params"]))
    return nnx.merge(graphdef, checkpoint.restore(wd.prior_checkpoints(name), {"prior": shapes})["prior"])  # the best


def _heldout_records(wd, name: str) -> list[dict]:
    return [r for r in wd.read_metrics() if r.get("prior") == name and r.get("split") == "validation"]
