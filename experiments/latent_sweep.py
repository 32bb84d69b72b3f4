"""Does q(z) approach N(0, I) as the latent dimension grows? A sweep over d.

  python experiments/latent_sweep.py [--dims 2,4,8,16,32] [--epochs 20]
      [--root runs/experiments/latent_sweep] [--idx_dir ../shared/data/mnist]

For each d: trains the MLP VAE of configs/mnist_mlp.py (same data, epochs, batch and seed)
and a GMM prior on its latents (`train.py`'s stages), runs the diagnostics
(`vae.evaluation.diagnostics`: active units, per-dimension KL, ELBO surgery) and the comparison report
(`sample.py`'s `report.compare`: fd_classifier under N(0, I) and under the GMM, one
classifier shared by all d). Writes ROOT/sweep.json and ROOT/sweep.png; each d's workdir keeps
its own diagnostics/ and report/. Reruns skip what is already done (every stage resumes).
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from absl import app, flags
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from configs import mnist_mlp
from vae import cli
from vae.evaluation import diagnostics, report
from vae.train import stages
from vae.workdir import Workdir

DEFAULT_IDX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "mnist")

_DIMS = flags.DEFINE_list("dims", "2,4,8,16,32", "Latent dimensions to sweep, comma-separated.")
_EPOCHS = flags.DEFINE_integer("epochs", 20, "Training epochs of each VAE.")
_N_SAMPLES = flags.DEFINE_integer("n_samples", 5000, "Samples per prior for fd_classifier.")
_ROOT = flags.DEFINE_string("root", "runs/experiments/latent_sweep", "Directory of the per-d runs, sweep.json and sweep.png.")
_IDX_DIR = flags.DEFINE_string("idx_dir", DEFAULT_IDX if os.path.isdir(DEFAULT_IDX) else "",
                               "MNIST IDX directory (config.data.idx_dir).")


def run_one(d: int, workdir: str) -> dict:
    config = mnist_mlp.get_config()
    config.data.idx_dir = _IDX_DIR.value
    config.vae.mlp.latent_dim = d
    config.train.num_epochs = _EPOCHS.value
    config.prior.name = "gmm"
    stages.train_and_evaluate(config, workdir)
    diag = diagnostics.diagnose(workdir)
    shared = os.path.join(_ROOT.value, "classifier")  # train the classifier once, reuse it for every d
    if os.path.isdir(shared) and not os.path.isdir(os.path.join(workdir, "classifier")):
        shutil.copytree(shared, os.path.join(workdir, "classifier"))
    rep = report.compare(workdir, n_samples=_N_SAMPLES.value, k=10, seeds=(0,), command="experiments/latent_sweep.py")
    if not os.path.isdir(shared):
        shutil.copytree(os.path.join(workdir, "classifier"), shared)
    stats, normal, gmm = diag["statistics"], rep["priors"]["standard_normal"], rep["priors"]["gmm"]
    test = [m for m in Workdir(workdir).read_metrics() if m["split"] == "test" and "elbo" in m][-1]
    return {
        "latent_dim": d,
        "test_elbo": test["elbo"],
        "average_kl": normal["average_kl"],
        "mutual_info": normal["mutual_info"],
        "marginal_kl": normal["marginal_kl"],
        "marginal_kl_per_dim": normal["marginal_kl"] / d,
        "marginal_kl_gmm": gmm["marginal_kl"],
        "mutual_info_bound_log_n": normal["mutual_info_bound_log_n"],
        "active_units": stats["active_units"],
        "kl_per_dim": stats["kl_per_dim"],
        "var_of_mu": stats["var_of_mu"],
        "mean_posterior_var": stats["mean_posterior_var"],
        "fd_classifier_standard_normal": normal["fd_classifier"],
        "fd_classifier_gmm": gmm["fd_classifier"],
        "fd_ratio_gmm_over_standard_normal": gmm["fd_classifier"] / normal["fd_classifier"],
        "nll_iwae_standard_normal": normal["nll_iwae"],
        "nll_iwae_gmm": gmm["nll_iwae"],
    }


def plot(rows, path):
    d = [r["latent_dim"] for r in rows]
    fig = Figure(figsize=(16, 3.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    ax = axes[0]
    for key, label in (("average_kl", "average KL"), ("mutual_info", "mutual_info"), ("marginal_kl", "marginal_kl")):
        ax.plot(d, [r[key] for r in rows], "o-", label=label)
    ax.plot(d, [r["mutual_info_bound_log_n"] for r in rows], "k:", label="log N (MI bound)")
    ax.set(xscale="log", xlabel="latent dim d", ylabel="nats", title="KL = mutual_info + marginal_kl")
    ax.legend(fontsize=7)
    axes[1].plot(d, [r["marginal_kl_per_dim"] for r in rows], "o-")
    axes[1].set(xscale="log", xlabel="latent dim d", ylabel="nats / dim", title="marginal KL(q(z) || N(0,I)) per dim")
    axes[2].plot(d, [r["active_units"] for r in rows], "o-", label="active units")
    axes[2].plot(d, d, "k:", label="d")
    axes[2].set(xscale="log", yscale="log", xlabel="latent dim d", title="active units (Var mu > 0.01)")
    axes[2].legend(fontsize=7)
    axes[3].plot(d, [r["fd_ratio_gmm_over_standard_normal"] for r in rows], "o-")
    axes[3].axhline(1.0, color="k", ls=":")
    axes[3].set(xscale="log", xlabel="latent dim d", title="fd_classifier: GMM prior / N(0,I)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    rows = [run_one(int(d), os.path.join(_ROOT.value, f"d{d}")) for d in _DIMS.value]
    with open(os.path.join(_ROOT.value, "sweep.json"), "w") as f:
        json.dump({"command": " ".join(sys.argv), "rows": rows}, f, indent=2)
    plot(rows, os.path.join(_ROOT.value, "sweep.png"))
    keys = ("latent_dim", "test_elbo", "average_kl", "mutual_info", "marginal_kl", "marginal_kl_per_dim",
            "active_units", "fd_classifier_standard_normal", "fd_classifier_gmm", "fd_ratio_gmm_over_standard_normal")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    print(f"wrote {_ROOT.value}/sweep.json and sweep.png; per-d diagnostics in {_ROOT.value}/d*/diagnostics")


if __name__ == "__main__":
    cli.run(main)
