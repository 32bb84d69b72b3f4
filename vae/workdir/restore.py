"""Models back from a workdir: the VAE from checkpoints/, and priors from priors/<name>/ (one
fitted for another latent shape is refused; given the VAE's fingerprint, so is one fitted to
another VAE checkpoint). Everything restores onto this process's devices.
"""

from __future__ import annotations

import jax
import ml_collections
from flax import nnx

import priors
from vae import models
from vae.errors import CheckpointError, PriorError
from vae.train import optim
from vae.workdir import checkpoint, config_store, provenance, writes

KINDS = ("best", "latest")


def restore_vae(wd, config=None, *, step: int | None = None, kind: str = "best"):
    """(model, step, kind): the `kind` checkpoint ('best', falling back to 'latest'), or
    the one at `step`."""
    config = config or config_store.load_config(wd)
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected 'best' or 'latest'")
    if checkpoint.latest(wd.checkpoints, "latest") is None:
        raise CheckpointError(
            f"{wd.path} has no VAE checkpoint; train one first (python train.py --config ... "
            f"--workdir {wd.path} --config.stage=vae)")
    if checkpoint.latest(wd.checkpoints, kind) is None:
        kind = "latest"
    if step is not None:
        saved = {k: checkpoint.steps(wd.checkpoints, k) for k in KINDS}
        if not any(step in s for s in saved.values()):
            raise CheckpointError(f"no checkpoint at step {step} in {wd.checkpoints}; "
                                  f"available: {sorted(set(saved['best'] + saved['latest']))}")
        kind = "best" if step in saved["best"] else "latest"
    graphdef, params = nnx.split(models.create_vae(config))
    # The checkpoint holds the whole train state: restore it into that structure, keep the params.
    target = jax.eval_shape(lambda p: optim.init_state(optim.make_optimizer(config.train, 1), p), params)
    state = checkpoint.restore(wd.checkpoints, target, step=step, kind=kind)
    return nnx.merge(graphdef, state["params"]), int(state["step"]), kind


def fitted_prior_names(wd) -> list[str]:
    """Priors with a finished fit here, sorted."""
    names = writes.list_dir(wd.priors_dir)
    return sorted(n for n in names if checkpoint.latest(wd.prior_checkpoints(n)) is not None)


def load_priors(wd, vae, fitted_to: dict, *, learned: bool = True) -> dict:
    """{name: prior} for `vae` (`fitted_to` its fingerprint): N(0, I), the learned prior it trained
    with ('joint_<name>'), then if `learned` each prior fitted to it (stale: refused)."""
    out = {n: load_prior(wd, n, vae.latent_shape, None, vae.num_codes)
           for n in priors.registry.names("none", vae.latents)}
    if vae.joint_prior_label:
        out[vae.joint_prior_label] = vae.prior
    if learned:
        levels = getattr(vae, "levels", None)  # a VQ-VAE-2's code maps
        out |= {n: load_prior(wd, n, vae.latent_shape, fitted_to, vae.num_codes, levels)
                for n in fitted_prior_names(wd)}
    return out


def load_prior(wd, name: str, latent_shape, fitted_to: dict | None = None, num_codes: int | None = None,
               levels=None):
    """A prior for this VAE's `latent_shape` (and `num_codes`, a VQ-VAE's; `levels`, a VQ-VAE-2's):
    built, and restored if it is fitted. With `fitted_to` (a `vae_fingerprint`), one fitted to
    another VAE checkpoint is refused."""
    if name in priors.registry.names(fit="none"):
        return priors.build(name, latent_shape, num_codes=num_codes)
    record = provenance.require_prior_record(wd, name)
    if tuple(record["latent_shape"]) != tuple(latent_shape):
        raise PriorError(
            f"prior {name!r} in {wd.prior_dir(name)} was fitted for latent shape "
            f"{tuple(record['latent_shape'])}, but the VAE's latent shape is {tuple(latent_shape)}")
    stale = fitted_to is not None and provenance.stale_prior_reason(wd, name, fitted_to)
    if stale:
        raise PriorError(
            f"{stale}. Its numbers would pair this encoder/decoder with another one's latents. Refit it "
            f"(python train.py --config <config> --workdir {wd.path} --config.stage=prior fits the best "
            "checkpoint), or open this checkpoint without learned priors: vae.load(W, ..., learned_priors=False)")
    prior = priors.build(name, latent_shape, ml_collections.ConfigDict(record["prior"]), seed=record["seed"],
                         num_codes=num_codes, levels=levels)
    graphdef, state = nnx.split(prior)
    return nnx.merge(graphdef, checkpoint.restore(wd.prior_checkpoints(name), {"prior": state})["prior"])
