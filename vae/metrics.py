"""Sample-quality metrics in a feature space: Fréchet distance, precision/recall, label entropy.

The features come from the classifier this codebase trains on the same dataset
(`vae.classifier`); FID proper needs Inception weights that cannot be downloaded here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg


def frechet_distance(feats_a, feats_b) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussian fits (float64)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(covmean):  # numerical noise from a near-singular product
        covmean = covmean.real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * covmean))


@jax.jit
def _sq_dists(a, b):
    # HIGHEST: TF32 (the float32 matmul default on recent NVIDIA GPUs) would move the k-NN radii.
    cross = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(jnp.sum(a**2, 1)[:, None] - 2.0 * cross + jnp.sum(b**2, 1)[None], 0.0)


def _kth_nn_radius(x, k: int, chunk: int) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row."""
    x = jnp.asarray(x)
    out = [jnp.sort(_sq_dists(x[i : i + chunk], x), axis=1)[:, k] for i in range(0, len(x), chunk)]
    return np.asarray(jnp.concatenate(out))  # column 0 is the point itself


def _inside_manifold(points, centers, radii, chunk: int) -> np.ndarray:
    """For each point: is it within radius of some center (a k-NN ball)?"""
    centers, radii = jnp.asarray(centers), jnp.asarray(radii)
    hits = [jnp.any(_sq_dists(jnp.asarray(points[i : i + chunk]), centers) <= radii[None], axis=1)
            for i in range(0, len(points), chunk)]
    return np.asarray(jnp.concatenate(hits))


def precision_recall(real, fake, k: int = 3, chunk: int = 1000) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

    precision: share of fake samples inside the real manifold (fidelity);
    recall: share of real samples inside the fake manifold (coverage).
    """
    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    precision = _inside_manifold(fake, real, _kth_nn_radius(real, k, chunk), chunk).mean()
    recall = _inside_manifold(real, fake, _kth_nn_radius(fake, k, chunk), chunk).mean()
    return {"precision": float(precision), "recall": float(recall)}


def label_stats(predicted_labels, num_classes: int = 10) -> dict:
    """Entropy (nats; log 10 = 2.303 is uniform) and frequencies of predicted labels."""
    freq = np.bincount(np.asarray(predicted_labels), minlength=num_classes) / len(predicted_labels)
    nz = freq[freq > 0]
    return {"label_entropy": float(-(nz * np.log(nz)).sum()), "class_frequencies": freq.round(4).tolist(),
            "max_label_entropy": math.log(num_classes)}
