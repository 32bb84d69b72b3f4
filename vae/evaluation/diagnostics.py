"""What the aggregate posterior q(z) of a trained VAE looks like, against N(0, I).

  python -m vae.evaluation.diagnostics --workdir W [--out W/diagnostics]

Writes diagnostics.json and PNGs: per-dimension statistics of the posterior means mu(x) and
of z ~ q(z|x) over the training split, the covariance eigen-spectrum, active units (Burda et
al. 2016: Cov_x E[z_i] > 0.01), the per-dimension average KL, and ELBO surgery under N(0, I)
and each fitted prior (the estimators of the comparison report, `vae.evaluation.analysis`). For 2-D
latents: the latent map over the priors' density contours, the aggregate-posterior density
with prior samples overlaid, and the decoded manifold; for more dimensions: per-dimension
histograms against N(0, 1) and a PCA scatter (the 2-D plots are skipped with a log line).
"""

from __future__ import annotations

import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vae import loading, rng
from vae.evaluation import analysis, evaluation_data, plotting

log = logging.getLogger(__name__)
ACTIVE_THRESHOLD = 0.01  # Burda et al.: a unit is active if Cov_x(E_q[z_i|x]) > 0.01


def posterior_statistics(means, logvars, key) -> dict:
    """Per-dimension statistics of mu(x) and of one z ~ q(z|x) per x (flattened latents)."""
    mu = np.asarray(means, np.float64).reshape(len(means), -1)
    logvar = np.asarray(logvars, np.float64).reshape(len(logvars), -1)
    z = mu + np.exp(0.5 * logvar) * np.asarray(jax.random.normal(key, mu.shape))
    var_mu = mu.var(0)
    kl_per_dim = (0.5 * (np.exp(logvar) + mu**2 - 1.0 - logvar)).mean(0)
    return {
        "mean_of_mu": mu.mean(0).tolist(),
        "var_of_mu": var_mu.tolist(),
        "mean_of_z": z.mean(0).tolist(),
        "var_of_z": z.var(0).tolist(),
        "mean_posterior_var": np.exp(logvar).mean(0).tolist(),
        "active_units": int(np.sum(var_mu > ACTIVE_THRESHOLD)),
        "num_dims": int(mu.shape[1]),
        "kl_per_dim": kl_per_dim.tolist(),
        "average_kl": float(kl_per_dim.sum()),
        "eigenvalues_cov_z": np.sort(np.linalg.eigvalsh(np.cov(z, rowvar=False).reshape(mu.shape[1], mu.shape[1])))[::-1].tolist(),
        "eigenvalues_cov_mu": np.sort(np.linalg.eigvalsh(np.cov(mu, rowvar=False).reshape(mu.shape[1], mu.shape[1])))[::-1].tolist(),
    }


def _figure(ncols=1, width=5.0, height=4.0):
    fig = Figure(figsize=(width * ncols, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def plot_statistics(stats, path):
    fig, ax = _figure(3, 4.5, 3.5)
    d = np.arange(stats["num_dims"])
    ax[0].bar(d, stats["var_of_mu"], label="Var_x mu_i (active > 0.01)")
    ax[0].bar(d, stats["mean_posterior_var"], alpha=0.5, label="E_x sigma_i^2")
    ax[0].axhline(ACTIVE_THRESHOLD, color="k", lw=0.8, ls="--")
    ax[0].set(xlabel="latent dimension", title=f"{stats['active_units']}/{stats['num_dims']} active units")
    ax[0].legend(fontsize=7)
    ax[1].bar(d, stats["kl_per_dim"])
    ax[1].set(xlabel="latent dimension", ylabel="nats", title="average KL per dimension")
    ax[2].semilogy(stats["eigenvalues_cov_z"], label="Cov(z), z ~ q(z)")
    ax[2].semilogy(np.maximum(stats["eigenvalues_cov_mu"], 1e-8), label="Cov(mu)")
    ax[2].axhline(1.0, color="k", lw=0.8, ls="--")
    ax[2].set(xlabel="rank", title="covariance eigen-spectrum (N(0,I): all 1)")
    ax[2].legend(fontsize=7)
    return _save(fig, path)


def plot_histograms(z, path, max_dims=16):
    z = np.asarray(z).reshape(len(z), -1)
    dims = min(max_dims, z.shape[1])
    cols = 4
    fig = Figure(figsize=(3 * cols, 2.4 * math.ceil(dims / cols)))
    FigureCanvasAgg(fig)
    grid = np.linspace(-4, 4, 200)
    for i in range(dims):
        ax = fig.add_subplot(math.ceil(dims / cols), cols, i + 1)
        ax.hist(z[:, i], bins=60, range=(-4, 4), density=True, alpha=0.6)
        ax.plot(grid, np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi), "k", lw=1)
        ax.set_title(f"z[{i}]", fontsize=8)
    return _save(fig, path)


def plot_pca(mu, labels, path):
    mu = np.asarray(mu).reshape(len(mu), -1)
    centred = mu - mu.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    fig, (ax,) = _figure()
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, s=3, cmap="tab10")
    fig.colorbar(sc, ax=ax, label="label")
    ax.set_title("posterior means: first two principal components")
    return _save(fig, path)


def plot_latent_map_2d(mu, labels, train_means, train_logvars, priors, key, decode, out_dir):
    """The 2-D plots: latent map over prior contours, q(z) density with prior samples, manifold."""
    lim = float(max(4.0, np.abs(np.asarray(mu)).max() * 1.1))
    g = np.linspace(-lim, lim, 120)
    grid = jnp.asarray(np.stack(np.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2), jnp.float32)
    paths = []
    fig, axes = _figure(len(priors), 5, 4.6)
    for ax, (name, prior) in zip(axes, priors.items()):
        density = np.exp(np.asarray(prior.log_prob(grid))).reshape(len(g), len(g))
        ax.contour(g, g, density, levels=8, colors="k", linewidths=0.6)
        ax.scatter(mu[:, 0], mu[:, 1], c=labels, s=2, cmap="tab10")
        ax.set(title=f"mu(x) over {name} contours", xlim=(-lim, lim), ylim=(-lim, lim))
    paths.append(_save(fig, os.path.join(out_dir, "latent_map.png")))

    log_q = np.asarray(analysis.log_aggregate_posterior(grid, train_means, train_logvars, desc=False)).reshape(len(g), len(g))
    fig, axes = _figure(len(priors), 5, 4.6)
    for i, (ax, (name, prior)) in enumerate(zip(axes, priors.items())):
        ax.imshow(np.maximum(log_q, log_q.max() - 12), origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis")
        s = np.asarray(prior.sample(jax.random.fold_in(key, i), 300))
        ax.scatter(s[:, 0], s[:, 1], s=3, c="r")
        ax.set(title=f"log q(z) with {name} samples", xlim=(-lim, lim), ylim=(-lim, lim))
    paths.append(_save(fig, os.path.join(out_dir, "aggregate_posterior.png")))

    n = 15
    t = np.linspace(-lim * 0.8, lim * 0.8, n)
    zs = jnp.asarray(np.stack(np.meshgrid(t, t[::-1], indexing="xy"), -1).reshape(-1, 2), jnp.float32)
    images = np.asarray(decode(zs))
    paths.append(plotting.save_grid(images, os.path.join(out_dir, "manifold.png"), ncol=n))
    return paths


def diagnose(workdir: str, out_dir: str | None = None, *, seed: int = 0, max_train: int = 20000) -> dict:
    run = loading.load(workdir)
    if run.model.latents != "continuous":
        raise ValueError(f"{workdir} holds a VQ-VAE: these diagnostics measure Gaussian posteriors; sample.py's "
                         "report gives its codebook usage and the bound under each prior")
    out_dir = out_dir or os.path.join(workdir, "diagnostics")
    os.makedirs(out_dir, exist_ok=True)
    dataset = run.dataset()
    eval_data = evaluation_data.EvalData(run.config, dataset)
    mean, logvar = eval_data.posteriors(run.model, "train", limit=max_train)
    test_mean, test_logvar = eval_data.posteriors(run.model, "test")
    key = rng.key(seed, "diagnostics")
    stats = posterior_statistics(mean, logvar, key)
    files = [plot_statistics(stats, os.path.join(out_dir, "posterior_statistics.png"))]
    surgery = {name: analysis.elbo_surgery(jax.random.fold_in(key, i), test_mean, test_logvar, jax.jit(p.log_prob))
               for i, (name, p) in enumerate(run.priors.items())}
    labels = dataset.train.labels[: len(mean)]
    if math.prod(run.latent_shape) == 2:
        files += plot_latent_map_2d(np.asarray(mean), labels, mean, logvar, run.priors, key, run.decode, out_dir)
    else:
        log.info("latent has %d dimensions: skipping the 2-D latent map, density map and manifold",
                 math.prod(run.latent_shape))
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        files.append(plot_histograms(z, os.path.join(out_dir, "histograms.png")))
        files.append(plot_pca(np.asarray(mean), labels, os.path.join(out_dir, "pca.png")))
    result = {"workdir": os.path.abspath(workdir), "num_train_encoded": int(len(mean)), "statistics": stats,
              "elbo_surgery_test": surgery, "files": [os.path.basename(f) for f in files]}
    with open(os.path.join(out_dir, "diagnostics.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv):
    from absl import flags

    diagnose(flags.FLAGS.workdir, flags.FLAGS.out)


if __name__ == "__main__":
    from absl import flags

    from vae import cli

    flags.DEFINE_string("workdir", None, "A training workdir.")
    flags.DEFINE_string("out", None, "Output directory; default WORKDIR/diagnostics.")
    flags.mark_flags_as_required(["workdir"])
    cli.run(main)
