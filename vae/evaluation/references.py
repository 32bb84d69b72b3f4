"""The report's reference rows, and how much of the gap to them each prior closes.

A learned prior is judged against N(0, I) (or uniform codes) below it and against what any
prior could reach with this decoder above it. The rows above:

  q(z)            z ~ q(z|x), one draw per training image, decoded: the samples of a perfect
                  prior, one equal to the aggregate posterior that stage 2 fits its priors to.
  reconstruction  the decoder's mean at each of those images' posterior mean.

Both decode n distinct training images (a fixed subset, numpy's own seed), n the number of
samples per prior: the sample metrics compare equal-size sets of distinct images, and the
validation split is too small for that (Fashion-MNIST: 5,000 images for 10,000 samples).
Drawing twice from each validation image instead put near-twins in the set and shrank the
k-NN manifold recall is measured on (the main job's q(z) recall: 0.39, below the learned
priors'). Only when n exceeds the training set does image i mod N give draw i.
The real side is the test images, never decoded here.

A VQ-VAE's posterior is a point mass, so its q(z) draw is the code map itself and equals the
reconstruction: its report has the q(z) row only. A dVAE's is a categorical q(c|x): its q(z)
row decodes draws c ~ q(c|x) (the images re-encoded), its reconstruction row the argmax codes.

`gap_closed(baseline, prior, reference)` = (m_baseline - m_prior) / (m_baseline - m_reference):
0 at the baseline prior, 1 at q(z), negative when a prior is worse than the baseline. The
report takes it per sample seed for fd_classifier and recall (`GAP_METRICS`).
"""

from __future__ import annotations

import numpy as np

from vae.evaluation import evaluation_data, sampling

Q_Z, RECONSTRUCTION = "q(z)", "reconstruction"
GAP_METRICS = ("fd_classifier", "recall")  # lower FD and higher recall are better: one formula serves both


def names(point_mass: bool) -> tuple[str, ...]:
    """The reference rows of a report on a VAE whose posterior is a point mass (a VQ-VAE's: q(z)
    only, its draws being the reconstructions) or a distribution (Gaussian, dVAE: both)."""
    return (Q_Z,) if point_mass else (Q_Z, RECONSTRUCTION)


def image_order(num_images: int, n: int) -> np.ndarray:
    """n image indices: a fixed permutation of all num_images (numpy's seed 0), cycled only
    when n exceeds num_images."""
    return np.random.default_rng(0).permutation(num_images)[np.arange(n) % num_images]


def aggregate_posterior_draws(key, mean, logvar, n: int, vae=None, x=None):
    """n latents from the aggregate posterior of the encoded images (mean, logvar): draw i from
    q(z|x_j), j the i-th of `image_order`. With logvar None (a point-mass posterior): those
    images' codes, unless `vae`'s posterior is a dVAE's: then c ~ q(c|x_j) of the images x,
    re-encoded, with fold_in(key, i) (`evaluation_data.posterior_draws`)."""
    index = image_order(len(mean), n)
    if vae is not None and evaluation_data.sampled_posterior(vae):
        return evaluation_data.posterior_draws(vae, x[np.asarray(index)], key)
    if logvar is None:
        return mean[index]
    return evaluation_data.draw_latents(key, mean[index], logvar[index])


def latents(name: str, key, mean, logvar, n: int, vae=None, x=None):
    """The latents the reference row `name` decodes, from training posteriors (mean, logvar)
    (a dVAE's: `vae` and the training images x, to draw from)."""
    if name == Q_Z:
        return aggregate_posterior_draws(key, mean, logvar, n, vae, x)
    if name == RECONSTRUCTION:
        return mean[image_order(len(mean), n)]
    raise ValueError(f"unknown reference row {name!r}; expected one of {(Q_Z, RECONSTRUCTION)}")


def images(vae, name: str, key, mean, logvar, n: int, x=None):
    """(latents, decoded images) of the reference row `name`; x: the training images the
    posteriors are of (needed for a dVAE's q(z) row only)."""
    z = latents(name, key, mean, logvar, n, vae, x)
    return z, sampling.decode_images(vae, z)


def gap_closed(baseline: float, prior: float, reference: float) -> float:
    """The fraction of the baseline -> reference gap the prior closes (NaN if there is no gap)."""
    gap = baseline - reference
    return float((baseline - prior) / gap) if gap != 0 else float("nan")


def add_gaps_closed(per_seed: dict, baseline: str) -> None:
    """Adds gap_closed_<metric> for every GAP_METRICS metric to each prior's per-seed results
    {prior: [result per seed]} (in place), against the baseline prior and the q(z) row of the
    same seed. Does nothing without the baseline, the q(z) row or the metric (no classifier)."""
    if baseline not in per_seed or Q_Z not in per_seed:
        return
    for name, runs in per_seed.items():
        if name in (Q_Z, RECONSTRUCTION):
            continue
        for seed_index, r in enumerate(runs):
            base, ceiling = per_seed[baseline][seed_index], per_seed[Q_Z][seed_index]
            for metric in GAP_METRICS:
                if metric in r:
                    r[f"gap_closed_{metric}"] = gap_closed(base[metric], r[metric], ceiling[metric])

