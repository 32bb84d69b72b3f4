"""Bounds on -log p(x) of test images under several priors at once: nll_iwae and the ELBO.

One jitted program per module structure (the graphdefs are static), so every seed and every
later call reuses it; each batch decodes its k draws once and scores them under every prior.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm


@functools.partial(jax.jit, static_argnames=("vae_graphdef", "graphdefs", "k"))
def _iwae_batch(vs, states, xb, kb, *, vae_graphdef, graphdefs, k):
    log_priors = tuple(nnx.merge(g, s).log_prob for g, s in zip(graphdefs, states))
    return nnx.merge(vae_graphdef, vs).iwae(xb, kb, k=k, log_prior=log_priors)


def iwae_under_priors(vae, priors_, x, key, k: int, batch: int = 100):
    """(nll_iwae, elbo), each (P, N), of prepared test images x under each of the P priors in
    `priors_`, from the same k draws per image: the decoder runs once for all of them."""
    vae_graphdef, vae_state = nnx.split(vae)
    graphdefs, states = zip(*(nnx.split(p) for p in priors_))
    out = [_iwae_batch(vae_state, states, jnp.asarray(x[i : i + batch]), jax.random.fold_in(key, i),
                       vae_graphdef=vae_graphdef, graphdefs=graphdefs, k=k)
           for i in tqdm(range(0, len(x), batch), desc="iwae", leave=False)]
    nll_iwae = -np.concatenate([np.asarray(log_px) for log_px, _ in out], axis=1)
    elbo = np.concatenate([np.asarray(elbo_batch) for _, elbo_batch in out], axis=1)
    return nll_iwae, elbo


def k_sensitivity(vae, priors_: dict, x, key, ks, num_images: int) -> dict:
    """How nll_iwae moves with k: the bound at each k in `ks` on a fixed subset of
    `num_images` test images (numpy's own seed: the same images in every report), under every
    prior from the same draws. A margin between two priors smaller than a prior's change
    between the two largest k is within the bound's slack, not evidence about the priors.

    -> {"images", "k", "nll_iwae": {prior: [mean per k]}, "standard_error": {prior: [per k]},
        "last_change": {prior: nll at ks[-2] - nll at ks[-1]}} (the last with two k or more)."""
    ks = sorted(int(k) for k in ks)
    subset = np.sort(np.random.default_rng(0).permutation(len(x))[: min(num_images, len(x))])
    x_subset, names = x[subset], list(priors_)
    means, errors = {name: [] for name in names}, {name: [] for name in names}
    for k in ks:
        # the decoder runs for batch * min(k, 10) latents at a time (losses.iwae_bound's chunks)
        nll, _ = iwae_under_priors(vae, list(priors_.values()), x_subset, jax.random.fold_in(key, k), k)
        for name, row in zip(names, nll):
            means[name].append(float(row.mean()))
            errors[name].append(float(row.std(ddof=1) / np.sqrt(len(row))))
    out = {"images": len(subset), "k": ks, "nll_iwae": means, "standard_error": errors}
    if len(ks) > 1:
        out["last_change"] = {name: means[name][-2] - means[name][-1] for name in names}
    return out


def k_sensitivity_markdown(result: dict) -> list[str]:
    """report.md's section on the bound's slack: nll_iwae per k for each prior."""
    ks = result["k"]
    header = "| prior | " + " | ".join(f"k={k}" for k in ks) + (
        f" | change k={ks[-2]}→{ks[-1]} |" if len(ks) > 1 else " |")
    lines = ["", f"## nll_iwae (nats) against k, on a fixed subset of {result['images']} test images", "",
             header, "| --- |" + " --- |" * (len(ks) + (len(ks) > 1))]
    for name, values in result["nll_iwae"].items():
        cells = [f"{v:.2f} ± {e:.2f}" for v, e in zip(values, result["standard_error"][name])]
        if len(ks) > 1:
            cells.append(f"{result['last_change'][name]:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "± is the standard error over the images; every prior is scored on the same draws, so the "
              "differences between priors are paired and far more precise than that. A margin between priors "
              "below a prior's change over the last step of k is within the bound's slack."]
    return lines
