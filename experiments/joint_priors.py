"""Post-hoc vs jointly trained priors: the same data, the same epochs, the same report.

  python experiments/joint_priors.py --config configs/mnist.py --config.data.idx_dir=../shared/data/mnist \
      --out runs/mnist_joint [--seeds 0,1,2] [--recipes two_stage,vamp,joint_pixelcnn] [--posthoc gmm,pixelcnn]

Each recipe trains its own VAE per seed s (config.seed = s: initialization, noise, batch
order) in OUT/<recipe>/seed_<s>/, for config.train.num_epochs epochs:
  two_stage        the VAE under N(0, I), then the --posthoc priors fitted to its frozen latents
                   (stage 2, config.prior.num_epochs epochs each): the recipe of VQ-VAE / DALL-E
  vamp             the VAE with the VampPrior in its ELBO (config.vae.prior=vamp)
  joint_<prior>    the VAE with that registered prior in its ELBO from the first step
                   (config.vae.prior=<prior>, sized by config.prior.<prior>)
Every workdir is scored by sample.py's report (sample seed s) with one classifier, trained
once in OUT/classifier, so fd_classifier varies with the models only. Writes OUT/summary.json
and OUT/summary.md: per (recipe, prior) row the mean ± sd over seeds of nll_iwae, the ELBO
under that prior, the test latent NLL, fd_classifier, precision and recall, and the compute:
the VAE's training time (the sum of its epochs' step time, compiles included, evaluation
excluded; an epoch resumed mid-way is counted at its resumed part's rate) and each post-hoc
fit's wall time. A dataset without labels (CelebA) gets no classifier and no fd_classifier,
precision or recall columns. Reruns resume: finished trainings and fits are
not redone, and a report is reused while it is newer than its workdir's metrics.jsonl.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
from absl import app, flags
from ml_collections import config_flags

# experiments/summary.py, beside this script (running it puts this folder on sys.path)
from experiments import summary as summary_lib
from vae import cli, models
from vae import workdir as workdir_lib
from vae.data import input_pipeline
from vae.data import registry as data_registry
from vae.errors import ConfigError
from vae.evaluation import classifier, report
from vae.train import stages

_CONFIG = config_flags.DEFINE_config_file("config", None, "The experiment's config file[:preset] (as for train.py).")
_OUT = flags.DEFINE_string("out", None, "Output directory (one workdir per recipe and seed under it).")
_SEEDS = flags.DEFINE_list("seeds", "0,1,2", "Training seeds (config.seed), comma separated.")
_RECIPES = flags.DEFINE_list("recipes", "two_stage,vamp,joint_pixelcnn", "two_stage, vamp and/or joint_<prior>.")
_POSTHOC = flags.DEFINE_list("posthoc", "gmm,pixelcnn", "Priors the two_stage recipe fits after training.")
_N = flags.DEFINE_integer("n", 10000, "Samples per prior in each report.", lower_bound=1)
_K = flags.DEFINE_integer("k", 10, "Importance samples for nll_iwae.", lower_bound=1)
flags.mark_flags_as_required(["config", "out"])

METRICS = ("nll_iwae", "elbo", "latent_nll", "fd_classifier", "precision", "recall")


def recipe_config(base, recipe: str, seed: int, posthoc):
    """The config of one recipe's run with `seed`."""
    config = base.copy_and_resolve_references()
    config.seed = seed
    if recipe == "two_stage":
        config.vae.prior, config.stage, config.prior.name = "standard_normal", "all", ",".join(posthoc)
    elif recipe == "vamp" or recipe.startswith("joint_"):
        config.vae.prior, config.stage = recipe.removeprefix("joint_"), "vae"
        if config.vae.prior not in models.stage1_priors()[1:]:
            raise ConfigError(f"--recipes: {recipe!r} trains no learned prior; the stage-1 priors are "
                                 f"{models.stage1_priors()[1:]} (joint_<name>, or vamp)")
    else:
        raise ConfigError(f"--recipes: unknown recipe {recipe!r}; expected two_stage, vamp or joint_<prior>")
    return config


def seconds(wd: workdir_lib.Workdir) -> dict:
    """{'vae': its epochs' step time, <prior>: that fit's wall time} from the run's records."""
    records = wd.read_metrics()
    train = [r for r in records if r["split"] == "train" and "prior" not in r]
    steps = np.diff([0] + [r["step"] for r in train])
    out = {"vae": float(sum(n / r["steps_per_sec"] for n, r in zip(steps, train)))}
    out.update({r["prior"]: r["fit_seconds"] for r in records if r["split"] == "fit"})
    return out


def run_report(wd: workdir_lib.Workdir, seed: int) -> dict:
    path = wd.join("report", "report.json")
    if os.path.exists(path) and os.path.getmtime(path) > os.path.getmtime(wd.join("metrics.jsonl")):
        with open(path) as f:
            old = json.load(f)
        if (old["n_samples"], old["k"], old.get("seeds")) == (_N.value, _K.value, [seed]):
            return old
    return report.compare(wd.path, n_samples=_N.value, k=_K.value, seeds=(seed,), command=" ".join(sys.argv))


def markdown(summary: dict) -> str:
    metrics = summary["metrics"]
    lines = [f"# {summary['dataset']}: post-hoc vs jointly trained priors, training seeds {summary['seeds']} "
             "(mean ± sd)", "",
             "| recipe | prior | " + " | ".join(metrics) + " | VAE training (s) | prior fit (s) |",
             "| --- | --- |" + " --- |" * (len(metrics) + 2)]
    for row in summary["rows"]:
        cells = [f"{row[m]['mean']:.4g} ± {row[m]['sd']:.2g}" for m in metrics]
        fit = f"{row['fit_seconds']['mean']:.0f} ± {row['fit_seconds']['sd']:.0f}" if "fit_seconds" in row else "–"
        vae_s = row["vae_seconds"]
        lines.append(f"| {row['recipe']} | {row['prior']} | " + " | ".join(cells)
                     + f" | {vae_s['mean']:.0f} ± {vae_s['sd']:.0f} | {fit} |")
    lines += ["", f"Command: `{summary['command']}`", ""]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    base, out = _CONFIG.value, os.path.abspath(_OUT.value)
    seeds = [int(s) for s in _SEEDS.value]
    configs = {(r, s): recipe_config(base, r, s, _POSTHOC.value) for s in seeds for r in _RECIPES.value}
    os.makedirs(out, exist_ok=True)
    for config in configs.values():  # every recipe's config checked before anything trains
        stages.check_config(config)
        models.create_vae(config)  # e.g. joint_made on a spatial latent: refused now, not after other trainings
    dataset = input_pipeline.load_dataset(base.data)
    if data_registry.get(dataset.name).num_classes:  # one classifier for every report (none without labels)
        classifier.load_or_train(os.path.join(out, "classifier"), dataset, seed=0)
    reports, times = {}, {}
    for seed in seeds:  # every recipe of a seed before the next seed: a partial run is a whole comparison
        for recipe in _RECIPES.value:
            wd = workdir_lib.Workdir(os.path.join(out, recipe, f"seed_{seed}"))
            stages.train_and_evaluate(configs[recipe, seed], wd.path)
            if os.path.exists(os.path.join(out, "classifier")) and not os.path.exists(wd.join("classifier")):
                shutil.copytree(os.path.join(out, "classifier"), wd.join("classifier"))
            reports[recipe, seed], times[recipe, seed] = run_report(wd, seed), seconds(wd)
    rows, first = [], reports[_RECIPES.value[0], seeds[0]]["priors"]
    metrics = [m for m in METRICS if m in next(iter(first.values()))]  # no classifier metrics without labels
    for recipe in _RECIPES.value:
        for name in reports[recipe, seeds[0]]["priors"]:
            per_seed = [reports[recipe, s]["priors"][name] for s in seeds]
            row = {"recipe": recipe, "prior": name, **{m: summary_lib.mean_sd(r[m] for r in per_seed) for m in metrics},
                   "vae_seconds": summary_lib.mean_sd(times[recipe, s]["vae"] for s in seeds)}
            if all(name in times[recipe, s] for s in seeds):
                row["fit_seconds"] = summary_lib.mean_sd(times[recipe, s][name] for s in seeds)
            rows.append(row)
    summary = {"dataset": reports[_RECIPES.value[0], seeds[0]]["dataset"], "seeds": seeds, "rows": rows, "metrics": metrics,
               "epochs": {"vae": base.train.num_epochs, "prior": base.prior.num_epochs},
               "n_samples": _N.value, "k": _K.value, "command": " ".join(sys.argv),
               "code": workdir_lib.code_version()}
    summary_lib.write_summary(out, summary, markdown(summary))


if __name__ == "__main__":
    cli.run(main)
