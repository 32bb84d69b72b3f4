"""Sample-quality metrics in a feature space: Fréchet distance, precision/recall, label entropy.

The features come from the classifier this codebase trains on the same dataset
(`vae.evaluation.classifier`); FID proper needs Inception weights that cannot be downloaded here.
"""

from __future__ import annotations

import functools
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

log = logging.getLogger(__name__)

SQRTM_EPS = 1e-6  # added to both covariances' diagonals when sqrtm of their product is not finite
MAX_IMAGINARY = 1e-3  # largest |imaginary part| on the diagonal of sqrtm taken for rounding noise


def frechet_distance(feats_a, feats_b) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussian fits (float64)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = _sqrtm_product(cov_a, cov_b)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * covmean))


def _sqrtm_product(cov_a, cov_b) -> np.ndarray:
    """(cov_a cov_b)^(1/2), real, with pytorch-fid's safeguards.

    A singular product (a constant or duplicated feature, fewer samples than features) may
    have no square root that sqrtm finds (NaN): then SQRTM_EPS * I is added to both
    covariances and the root taken again, with a warning. The root of a product of two covariances is
    real; an imaginary part beyond MAX_IMAGINARY on its diagonal is not rounding noise and
    raises a ValueError."""
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        log.warning("Fréchet distance: sqrtm of the product of the two %dx%d feature covariances is not finite "
                    "(a singular product); adding %g * I to both covariances and retrying",
                    cov_a.shape[0], cov_a.shape[1], SQRTM_EPS)
        offset = SQRTM_EPS * np.eye(cov_a.shape[0])
        covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
        if not np.isfinite(covmean).all():
            raise ValueError(f"Fréchet distance: sqrtm of the product of the feature covariances is not finite, "
                             f"even with {SQRTM_EPS:g} * I added to both")
    if np.iscomplexobj(covmean):  # rounding noise from a near-singular product
        imaginary = np.max(np.abs(np.diagonal(covmean).imag))
        if imaginary > MAX_IMAGINARY:
            raise ValueError(f"Fréchet distance: sqrtm of the product of the feature covariances has an imaginary "
                             f"diagonal component of {imaginary:.3g} (> {MAX_IMAGINARY:g}): not rounding noise; "
                             "are the covariances positive semi-definite and finite?")
        covmean = covmean.real
    return covmean


@jax.jit
def _sq_dists(a, b):
    # HIGHEST: TF32 (the float32 matmul default on recent NVIDIA GPUs) would move the k-NN radii.
    cross = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(jnp.sum(a**2, 1)[:, None] - 2.0 * cross + jnp.sum(b**2, 1)[None], 0.0)


@functools.partial(jax.jit, static_argnums=2)
def _kth_smallest(a, b, k: int):
    """Per row of a: the k-th smallest (from 0) squared distance to the rows of b, by k rounds
    of masking each row's minimum. On the 2-core CPU precision_recall of 10k x 10k features took
    41.6 s sorting each 10k-long row (35 s with top_k) and 3.6 s this way."""
    d = _sq_dists(a, b)
    rows = jnp.arange(d.shape[0])
    for _ in range(k):
        d = d.at[rows, jnp.argmin(d, axis=1)].set(jnp.inf)
    return jnp.min(d, axis=1)


def manifold_radii(x, k: int = 3, chunk: int = 1000) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row: the radii of the
    k-NN balls whose union is x's manifold (column 0 of the sorted distances is the point itself)."""
    x = jnp.asarray(np.asarray(x, np.float32))
    return np.asarray(jnp.concatenate([_kth_smallest(x[i : i + chunk], x, k) for i in range(0, len(x), chunk)]))


def _inside_manifold(points, centers, radii, chunk: int) -> np.ndarray:
    """For each point: is it within radius of some center (a k-NN ball)?"""
    centers, radii = jnp.asarray(centers), jnp.asarray(radii)
    hits = [jnp.any(_sq_dists(jnp.asarray(points[i : i + chunk]), centers) <= radii[None], axis=1)
            for i in range(0, len(points), chunk)]
    return np.asarray(jnp.concatenate(hits))


def precision_recall(real, fake, k: int = 3, chunk: int = 1000, real_radii=None) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

    precision: share of fake samples inside the real manifold (fidelity);
    recall: share of real samples inside the fake manifold (coverage).
    `real_radii`: `manifold_radii(real, k)` when the caller scores many fakes against one real set.
    """
    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    real_radii = manifold_radii(real, k, chunk) if real_radii is None else real_radii
    precision = _inside_manifold(fake, real, real_radii, chunk).mean()
    recall = _inside_manifold(real, fake, manifold_radii(fake, k, chunk), chunk).mean()
    return {"precision": float(precision), "recall": float(recall)}


def label_stats(predicted_labels, num_classes: int = 10) -> dict:
    """Entropy (nats; log 10 = 2.303 is uniform) and frequencies of predicted labels."""
    freq = np.bincount(np.asarray(predicted_labels), minlength=num_classes) / len(predicted_labels)
    nz = freq[freq > 0]
    return {"label_entropy": float(-(nz * np.log(nz)).sum()), "class_frequencies": freq.round(4).tolist(),
            "max_label_entropy": math.log(num_classes)}
