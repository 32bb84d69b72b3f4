"""Every random stream of a run, by name, in one table.

A stream is derived from a root seed: a run's streams from its `config.seed` s, a report's
from its sample seed t (sample.py --seeds). `key(root, name)` gives the stream's key; the
steps, epochs or batches inside it fold their index into that key.

  stream            key                      used by, and what is folded in below it
  ----------------  -----------------------  ----------------------------------------------
  vae_step          fold_in(key(s), 0)       stage 1: step's noise, fold_in(., step)
  vae_epoch_order   fold_in(key(s), 1)       stage 1: epoch e's permutation, fold_in(., e)
  elbo_noise        fold_in(key(s), 2)       the ELBO's z ~ q(z|x), fold_in(., batch start)
  vae_grid          fold_in(key(s), 3)       the image grids written during training
  validation        key(s + 1)               validation images, binarized once
  test              key(s + 2)               test images, binarized once
  train_latents     key(s + 11)              training images binarized once for encoding
                                             (prior.binarization='per_epoch': fold_in(., i))
  heldout_draw      key(s + 12)              one z ~ q(z|x) per validation image (stage 2)
  prior_fit         key(s + 13)              stage 2: prior i's fit, fold_in(., i); inside a
                                             fit the FIT_STREAMS below
  samples           fold_in(key(t), 0)       report: the latents each prior samples
  iwae              fold_in(key(t), 1)       report: importance samples, fold_in(., batch start)
  elbo_surgery      fold_in(key(t), 2)       report: log q(z) estimates
  hole_threshold    fold_in(key(t), 3)       report: log q of half the validation latents
  heldout_draws     fold_in(key(t), 4)       report: one z ~ q(z|x) per test image (latent NLL)
  hole_check        fold_in(key(t), 5)       report: the other validation half's hole rate
  references        fold_in(key(t), 6)       report: the q(z) row's draws from the validation
                                             posteriors
  k_sensitivity     fold_in(key(t), 7)       report: importance samples at each k, fold_in(., k)
  classifier        key(t)                   the report's feature classifier: batch order of
                                             epoch e, fold_in(., e)
  diagnostics       key(d)                   the diagnostics (their --seed d): prior i's ELBO
                                             surgery and map samples, fold_in(., i)

The evaluation data's streams are seed offsets, two use their root's key itself, the others
are fold_ins: the derivations give different keys, and every published number was computed
with these, so the table keeps them all. A new stream is a new row with a fold_in number no other row of its root uses.
"""

from __future__ import annotations

import jax

RUN_FOLD_IN = {"vae_step": 0, "vae_epoch_order": 1, "elbo_noise": 2, "vae_grid": 3}  # root: config.seed
REPORT_FOLD_IN = {"samples": 0, "iwae": 1, "elbo_surgery": 2, "hole_threshold": 3, "heldout_draws": 4,
                  "hole_check": 5, "references": 6, "k_sensitivity": 7}  # root: a report's sample seed
FOLD_IN = RUN_FOLD_IN | REPORT_FOLD_IN
ROOT = ("classifier", "diagnostics")  # the root seed's own key (roots: a sample seed; diagnostics' --seed)
SEED_OFFSET = {"validation": 1, "test": 2, "train_latents": 11, "heldout_draw": 12, "prior_fit": 13}
# Inside one prior's fit (the key `fold_in(key(prior_fit), i)`): EM's draws of the training
# latents and its own noise; a gradient fit's dropout and fit-loss noise (fold_in(., step)).
# A gradient fit's epoch e draws its latents from fold_in(fold_in(key, e), 0) and orders its
# batches by fold_in(key, e): these numbers stay clear of any epoch index.
FIT_STREAMS = {"em_draws": 0, "em": 1, "dropout": 2**31 - 1, "fit_loss": 2**31 - 2}


def seed(root: int, name: str) -> int:
    """The integer seed of a seed-offset stream (the evaluation data's)."""
    if name not in SEED_OFFSET:
        raise KeyError(f"{name!r} is not a seed-offset stream; expected one of {tuple(SEED_OFFSET)}")
    return int(root) + SEED_OFFSET[name]


def key(root: int, name: str) -> jax.Array:
    """The key of stream `name` under the root seed `root` (the table above)."""
    if name in SEED_OFFSET:
        return jax.random.key(seed(root, name))
    if name in ROOT:
        return jax.random.key(root)
    if name not in FOLD_IN:
        raise KeyError(f"unknown random stream {name!r}; expected one of {(*FOLD_IN, *SEED_OFFSET, *ROOT)}")
    return jax.random.fold_in(jax.random.key(root), FOLD_IN[name])


def within_fit(fit_key: jax.Array, name: str) -> jax.Array:
    """A stream inside one prior's fit (FIT_STREAMS)."""
    return jax.random.fold_in(fit_key, FIT_STREAMS[name])
