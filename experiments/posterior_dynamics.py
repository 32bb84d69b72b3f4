"""Does the KL term drive each q(z|x) to N(0, 1)? The encoder's (mu, sigma) during training.

  python experiments/posterior_dynamics.py [--latent_dim 2] [--epochs 20] [--probes 12]
      [--workdir runs/experiments/posterior_dynamics] [--idx_dir ../shared/data/mnist]

Trains the MLP VAE of configs/mnist_mlp.py one epoch at a time (train.py's resumable loop,
so the recorded run is the ordinary one) and, after each epoch, encodes fixed probe test
images (one per digit class first) from the saved checkpoint. Draws, per latent dimension,
each probe's trajectory in the (mu, sigma) plane over the per-dimension KL landscape
KL(N(mu, sigma^2) || N(0, 1)) = F(mu) + G(sigma), F = mu^2 / 2, G = (sigma^2 - 1)/2 - log sigma,
whose only minimum is (0, 1). Writes WORKDIR/dynamics.json and dynamics.png.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from configs import mnist_mlp
from vae import cli, models
from vae.data import input_pipeline
from vae.evaluation import evaluation_data
from vae.train import stages
from vae.workdir import Workdir

DEFAULT_IDX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "mnist")

_LATENT_DIM = flags.DEFINE_integer("latent_dim", 2, "Latent dimension of the MLP VAE.")
_EPOCHS = flags.DEFINE_integer("epochs", 20, "Training epochs.")
_PROBES = flags.DEFINE_integer("probes", 12, "Probe test images (one per digit class first).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/experiments/posterior_dynamics",
                               "Training workdir; also gets dynamics.json and dynamics.png.")
_IDX_DIR = flags.DEFINE_string("idx_dir", DEFAULT_IDX if os.path.isdir(DEFAULT_IDX) else "",
                               "MNIST IDX directory (config.data.idx_dir).")


def probe_images(dataset, n):
    """One test image per class first, then the next ones in order: (images, labels)."""
    labels = dataset.test.labels
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(10)]
    rest = [i for i in range(len(labels)) if i not in first]
    idx = (first + rest)[:n]
    return dataset.test.images[idx], labels[idx]


def encode_probes(wd, config, x):
    model, step, _ = wd.restore_vae(config, kind="latest")
    mean, logvar = model.encode(x)
    return step, np.asarray(mean), np.exp(0.5 * np.asarray(logvar))


def plot(record, path):
    mu, sigma = np.asarray(record["mu"]), np.asarray(record["sigma"])  # (epochs+1, probes, d)
    labels, d = record["labels"], mu.shape[-1]
    cols = min(d, 4)
    fig = Figure(figsize=(4.6 * cols, 4.0 * int(np.ceil(d / cols))))
    FigureCanvasAgg(fig)
    m_lim = max(3.0, float(np.abs(mu).max()) * 1.1)
    mg, sg = np.meshgrid(np.linspace(-m_lim, m_lim, 200), np.geomspace(min(0.02, sigma.min() * 0.8), 1.6, 200))
    kl = mg**2 / 2 + (sg**2 - 1) / 2 - np.log(sg)
    colors = [f"C{c}" for c in labels]
    for j in range(d):
        ax = fig.add_subplot(int(np.ceil(d / cols)), cols, j + 1)
        cs = ax.contourf(mg, sg, kl, levels=np.geomspace(0.01, kl.max(), 14), cmap="Greys", alpha=0.6)
        for p in range(mu.shape[1]):
            ax.plot(mu[:, p, j], sigma[:, p, j], "-", color=colors[p], lw=1)
            ax.plot(mu[-1, p, j], sigma[-1, p, j], "o", color=colors[p], ms=4)
        ax.plot(mu[0, :, j], sigma[0, :, j], "kx", ms=4, label="init")
        ax.plot([0], [1], "r*", ms=10, label="N(0,1): KL = 0")
        ax.set(yscale="log", xlabel=f"mu[{j}]", ylabel=f"sigma[{j}]", title=f"dim {j}: (mu, sigma) per probe")
        ax.legend(fontsize=7, loc="lower left")
    fig.colorbar(cs, ax=fig.axes, label="KL per dim (nats)", shrink=0.8)
    fig.savefig(path, dpi=110)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = mnist_mlp.get_config()
    config.data.idx_dir = _IDX_DIR.value
    config.vae.mlp.latent_dim = _LATENT_DIM.value
    config.train.num_epochs = _EPOCHS.value
    config.stage = "vae"
    dataset = input_pipeline.load_dataset(config.data)
    images, labels = probe_images(dataset, _PROBES.value)
    # binarized with the test split's evaluation seed, as stage 1 sees test images
    x = input_pipeline.fixed_binarization(images, evaluation_data.EvalData(config, dataset).seed("test"),
                                          config.data.binarize)

    init_model = models.create_vae(config)  # what checkpoint step 0 would hold
    m0, lv0 = init_model.encode(x)
    steps, mus, sigmas = [0], [np.asarray(m0)], [np.exp(0.5 * np.asarray(lv0))]
    wd = Workdir(_WORKDIR.value)
    for _ in range(_EPOCHS.value):  # one epoch per call: each resumes the last
        stages.train_and_evaluate(config, wd.path, max_epochs_this_run=1)
        step, m, s = encode_probes(wd, config, x)
        steps.append(step), mus.append(m), sigmas.append(s)
    mu, sigma = np.stack(mus), np.stack(sigmas)
    final_kl = mu[-1] ** 2 / 2 + (sigma[-1] ** 2 - 1) / 2 - np.log(sigma[-1])
    record = {
        "command": " ".join(sys.argv), "steps": steps, "labels": [int(v) for v in labels],
        "mu": mu.tolist(), "sigma": sigma.tolist(),
        "final_kl_per_dim_mean_over_probes": final_kl.mean(0).tolist(),
        "final_median_sigma_per_dim": np.median(sigma[-1], 0).tolist(),
        "final_mean_abs_mu_per_dim": np.abs(mu[-1]).mean(0).tolist(),
        "initial_kl_per_dim_mean_over_probes": (mu[0] ** 2 / 2 + (sigma[0] ** 2 - 1) / 2 - np.log(sigma[0])).mean(0).tolist(),
    }
    with open(os.path.join(_WORKDIR.value, "dynamics.json"), "w") as f:
        json.dump(record, f, indent=2)
    plot(record, os.path.join(_WORKDIR.value, "dynamics.png"))
    for j in range(_LATENT_DIM.value):
        print(f"dim {j}: KL per probe {record['initial_kl_per_dim_mean_over_probes'][j]:.3f} -> "
              f"{record['final_kl_per_dim_mean_over_probes'][j]:.3f} nats; median sigma "
              f"{record['final_median_sigma_per_dim'][j]:.3f}; mean |mu| {record['final_mean_abs_mu_per_dim'][j]:.3f}")
    print(f"wrote {_WORKDIR.value}/dynamics.json and dynamics.png")


if __name__ == "__main__":
    cli.run(main)
