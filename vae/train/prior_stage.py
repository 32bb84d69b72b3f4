"""Stage 2: fit learned priors to the latents of a frozen, trained VAE (`fit_priors`).

For each name in `config.prior.name` (comma separated) this writes `W/priors/<name>/`
(config.json, checkpoints/) and appends to `W/metrics.jsonl` the held-out latent NLL of the
prior and of N(0, I) on the same validation latents, per example and per latent dimension:
`latent_nll/<name>`, `latent_nll/standard_normal`, `latent_nll_per_dim/...` (nats), and
after each fit a `"split": "fit"` record with its wall time (`fit_seconds`: the run that
finished it; a fit resumed after a kill counts only its last run).

How a prior is fitted is its registry entry's business (`priors.registry`), carried out by
`vae.train.prior_fits`: 'gradient' priors by Adam in the fit loop, on fresh draws z ~ q(z|x)
every epoch (or the posterior means, `prior.fit_target='mean'`); 'em' priors by their EM
routine on one draw per training image; 'none' priors (N(0, I)) need nothing. A VQ-VAE's
posterior is a point mass: every draw is its code map. A dVAE's is a categorical q(c|x), so its
priors fit fresh draws c ~ q(c|x) as well, the images re-encoded for each draw (or the argmax
codes with 'mean'): the prior maximizing E_q[log p(c)] is the aggregate posterior of the draws.

Devices and processes: each process encodes its own training rows and gathers everyone's
latents (they are small next to the images).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import priors
from vae import rng
from vae import workdir as workdir_lib
from vae.data import input_pipeline
from vae.errors import PriorError
from vae.evaluation import evaluation_data
from vae.parallel import multihost, sharding
from vae.train import prior_fits

log = logging.getLogger(__name__)


def prior_names(prior_config, latents: str = "continuous", levels: bool = False) -> list[str]:
    """The priors config.prior.name asks for, checked against the registry and the VAE's
    latents ('continuous', or a VQ-VAE's 'categorical' code maps; with `levels`, a VQ-VAE-2's
    code maps flattened into one sequence: the priors of `priors.registry.names_for_levels`)."""
    names = [n.strip() for n in prior_config.name.split(",") if n.strip()]
    fitting = priors.registry.names_for_levels() if levels else priors.registry.names(latents=latents)
    for n in names:
        if n not in priors.registry.names():
            raise PriorError(f"config.prior.name: {n!r} is not a registered prior; expected some of {fitting}")
        if n not in fitting and levels and priors.registry.get(n).latents == "categorical":
            raise PriorError(f"config.prior.name: {n!r} models one (h, w) map of codes, but this VAE's latent is "
                             f"levels of code maps flattened into one sequence (VQ-VAE-2); expected some of {fitting}")
        if n not in fitting:
            raise PriorError(f"config.prior.name: {n!r} models {priors.registry.get(n).latents} latents, but this "
                             f"VAE's latents are {latents}; expected some of {fitting}")
    return names


def training_posteriors(config, eval_data, model):
    """index -> (mean, logvar) of q(z|x) over the training images, as `prior.binarization`
    says: 'once' (every index: the images binarized once by the run's named seed) or
    'per_epoch' (index i: binarized afresh by fold_in(that seed, i), as stage 1 trained).
    Several processes: each encodes its own rows, and every one gets all the latents.
    A dVAE's posterior (`evaluation_data.sampled_posterior`): index -> a `SampledPosterior` of
    the same images, its draws and argmax codes re-encoded on demand (its logits, K a position,
    are not kept for every image)."""
    if evaluation_data.sampled_posterior(model):
        return _sampled_training_posteriors(config, eval_data, model)
    if config.prior.binarization == "once" or not eval_data.binarize:
        mean, logvar = map(multihost.gather_rows, eval_data.posteriors(model, "train"))  # logvar: None for VQ codes
        return lambda index: (mean, logvar)
    graphdef, params = nnx.split(model)
    images = jnp.asarray(eval_data.dataset.train.images)
    shards = eval_data.dataset.train_shards
    num, batch = len(images), 1000
    pad = (-num) % batch

    @jax.jit
    def encode_fresh(params, images, index):
        x = input_pipeline.prepare_shards(images, jax.random.fold_in(eval_data.key("train_latents"), index), True,
                                          shards)
        x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(-1, batch, *x.shape[1:])
        encoded = jax.lax.map(nnx.merge(graphdef, params).encode, x)
        return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:])[:num], encoded)

    return lambda index: tuple(map(multihost.gather_rows, encode_fresh(params, images, index)))


def _sampled_training_posteriors(config, eval_data, model):
    """index -> `evaluation_data.SampledPosterior` of the training images binarized as
    `training_posteriors` says. Image i draws with fold_in(key, i), i its row in the whole
    split, whichever process holds it; each process draws its own rows and gathers them all."""
    shards = eval_data.dataset.train_shards
    images = eval_data.dataset.train.images
    rows = (shards.local[0] * shards.size if shards else 0) + np.arange(len(images))

    @jax.jit
    def binarize_fresh(images, index):
        return input_pipeline.prepare_shards(images, jax.random.fold_in(eval_data.key("train_latents"), index), True,
                                             shards)

    def view(x):
        return evaluation_data.SampledPosterior(
            mode=lambda: multihost.gather_rows(evaluation_data.encode(model, x)[0]),
            draw=lambda key: multihost.gather_rows(evaluation_data.posterior_draws(model, x, key, rows)))

    if config.prior.binarization == "once" or not eval_data.binarize:
        return lambda index: view(eval_data.images("train"))
    return lambda index: view(binarize_fresh(jnp.asarray(images), index))


def fit_config(config, name: str):
    """The run's config with config.prior as stage 2 fits prior `name` (`priors.fit_settings`)."""
    settings = priors.fit_settings(config.prior, name)
    if settings is config.prior:
        return config
    fitted = config.copy_and_resolve_references()
    with fitted.unlocked():
        fitted.prior = settings
    return fitted


FIT_CHOICES = ("fit_target", "latent_draws", "em_draws_per_image", "binarization", "ema_decay", "patience")


def _prepare_prior_dir(config, wd, name, latent_shape, fitted_to) -> None:
    """Sets a stale fit aside (fitted to another VAE checkpoint), then records what this fit
    is for. An existing fit of this checkpoint is kept with its record; a warning says if
    this run asks for other stage-2 choices than it was fitted with."""
    record = wd.prior_record(name)
    stale = record is not None and wd.stale_prior_reason(name, fitted_to)
    if stale:  # the VAE was trained further since: refit from scratch
        log.warning("%s; refitting it (the old fit is kept in %s)", stale, wd.set_stale_prior_aside(name))
        record = None
    if record is None:
        wd.save_prior_config(config, name, latent_shape, fitted_to)
        return
    changed = [k for k in FIT_CHOICES if k in record["prior"] and record["prior"][k] != config.prior.get(k)]
    if changed:
        log.warning("prior %s in %s was fitted with %s; this run asks for %s. The existing fit is kept (and "
                    "resumed if unfinished): set %s aside to refit it with the new choices.", name, wd.prior_dir(name),
                    {k: record["prior"].get(k) for k in changed}, {k: config.prior.get(k) for k in changed},
                    wd.prior_dir(name))


def fit_priors(config, wd, dataset, *, max_epochs_this_run=None) -> dict:
    """Fits every prior named in config.prior.name to the VAE in workdir `wd`.

    Seeds: the evaluation data (binarization, held-out latents) is the run's, from the VAE's
    config; the priors' initialization and fitting noise come from `config.seed`, so a
    stage-2 rerun with another --config.seed gives another fit of the same latents."""
    vae_config = wd.load_config()
    model, step, _ = wd.restore_vae(vae_config)
    levels = getattr(model, "levels", None)  # a VQ-VAE-2's: its code maps, flattened
    names = prior_names(config.prior, model.latents, levels is not None)
    fitted_to = workdir_lib.vae_fingerprint(model, step)
    wd.log_invocation("prior")
    for other in sorted(set(wd.fitted_prior_names()) - set(names)):
        stale = wd.stale_prior_reason(other, fitted_to)
        if stale:
            log.warning("%s; it is not in config.prior.name, so sample.py and vae.load will refuse it until it "
                        "is refitted (--config.prior.name=%s) or set aside", stale, other)
    eval_data = evaluation_data.EvalData(vae_config, dataset)
    mesh = sharding.make_mesh(config.train.num_devices)
    shards = dataset.train_shards
    num_latents = shards.count * shards.size if shards else len(dataset.train)  # every process's rows
    posteriors = training_posteriors(config, eval_data, model)
    z_val = eval_data.heldout_latents(model)
    fit_key = rng.key(config.seed, "prior_fit")
    fitted = {}
    for i, name in enumerate(names):
        spec = priors.registry.get(name)
        if spec.fit == "none":
            log.info("prior %s has nothing to fit", name)
            continue
        prior_config = fit_config(config, name)
        _prepare_prior_dir(prior_config, wd, name, model.latent_shape, fitted_to)
        prior = priors.build(name, model.latent_shape, config.prior, seed=config.seed, num_codes=model.num_codes,
                             levels=levels)
        key = jax.random.fold_in(fit_key, i)
        if spec.fit == "em":
            fitted[name] = prior_fits.fit_em(prior_config, wd, name, prior, posteriors, z_val, key, mesh)
        else:
            fitted[name] = prior_fits.fit_gradient(prior_config, wd, name, prior, posteriors, num_latents, z_val,
                                                   key, mesh, max_epochs_this_run=max_epochs_this_run)
    return fitted
