"""Which learned prior is best, with error bars: every prior fitted with several seeds to one VAE.

  python experiments/prior_seeds.py --config configs/fashion_mnist.py --workdir runs/fashion_mnist \
      [--seeds 0,1,2] [--priors gmm,pixelcnn,transformer] [--n 10000] [--out W/prior_seeds]

The VAE in WORKDIR is trained once (train.py); nothing here changes it. For each seed s,
OUT/seed_<s>/ is a workdir holding a copy of that VAE (config.json, checkpoints/, its
metrics), the run's classifier, and priors fitted by stage 2 with --config.seed=s
(initialization, latent draws, batch order): a prior WORKDIR already holds for seed s is
copied with its records, fit time included, not refitted. Each seed's `sample.py` report (sample seed s) gives the metrics.
Writes OUT/summary.json and OUT/summary.md: per prior the mean ± sd over seeds of the held-out
latent NLL (test split), nll_iwae, fd_classifier, precision and recall, the share of the
N(0, I) -> q(z) gap it closes in FD and recall, its fitting time and its sampling time, and
whether the best autoregressive prior beats the GMM on each metric by more than two standard
deviations (the larger sd of the two). The reference rows (q(z), reconstruction) over seeds,
and each prior against q(z): its FD as a multiple of q(z)'s, q(z)'s recall and precision minus
its own, seed by seed. With --temperatures each report sweeps them (best T on validation) and
the summary adds, per prior, the best T and the test numbers and gaps closed there. Reruns resume: fits are
not redone, and a seed's report is reused while it is newer than the seed's metrics.jsonl.
A rerun with another --priors name adds that prior to every seed directory, copied or
fitted as above, and leaves the priors they hold as they are.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from absl import app, flags
from ml_collections import config_flags

import priors
# experiments/summary.py, beside this script (running it puts this folder on sys.path)
from experiments import summary as summary_lib
from vae import cli
from vae import workdir as workdir_lib
from vae.data import input_pipeline
from vae.data import registry as data_registry
from vae.evaluation import classifier, report
from vae.train import stages

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config file[:preset] (as given to train.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir with a trained VAE.")
_SEEDS = flags.DEFINE_list("seeds", "0,1,2", "Fit seeds (config.seed of stage 2), comma separated.")
_PRIORS = flags.DEFINE_list("priors", None, "Priors to fit; default: config.prior.name.")
_N = flags.DEFINE_integer("n", 10000, "Samples per prior in each report.", lower_bound=1)
_K = flags.DEFINE_integer("k", 10, "Importance samples for nll_iwae.", lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "Output directory; default WORKDIR/prior_seeds.")
_TEMPERATURES = flags.DEFINE_list("temperatures", [], "Sampling temperatures of each seed's report (sample.py "
                                  "--temperatures); empty: temperature 1 only.")
flags.mark_flags_as_required(["config", "workdir"])

METRICS = ("latent_nll", "nll_iwae", "fd_classifier", "precision", "recall")
GAPS = ("gap_closed_fd_classifier", "gap_closed_recall")
SAMPLE_METRICS = ("fd_classifier", "precision", "recall")
LOWER_IS_BETTER = {"latent_nll": True, "nll_iwae": True, "fd_classifier": True, "precision": False, "recall": False}
AUTOREGRESSIVE = ("pixelcnn", "transformer", "made")


def same_fit(record: dict, prior_config) -> bool:
    """Was the prior of `record` fitted with these stage-2 settings: config.prior's shared ones (all
    but the name list and the other priors' sections) and its own section, as stage 2 applies them
    (`priors.fit_settings`)?"""
    name = record["name"]
    ours = json.loads(priors.fit_settings(prior_config, name).to_json())
    sections = set(priors.registry.names())

    def relevant(settings):
        return {k: v for k, v in settings.items() if k != "name" and (k not in sections or k == name)}
    return relevant(record["prior"]) == relevant(ours)


def seed_workdir(source: workdir_lib.Workdir, path: str, seed: int, names, prior_config) -> workdir_lib.Workdir:
    """A workdir with the source's VAE, classifier and the priors it fitted with `seed` and
    these stage-2 settings. One an earlier run made is kept, and gets those of these priors it
    lacks: a rerun with another --priors name copies that prior there too, not only into new
    seed directories."""
    wd = workdir_lib.Workdir(path)
    if not os.path.exists(wd.join("config.json")):
        _copy_vae(source, path)
    _copy_priors(source, wd, priors_to_copy(source, wd, seed, names, prior_config))
    return wd


def _copy_vae(source: workdir_lib.Workdir, path: str) -> None:
    """`path` as a workdir with the source's VAE, its records and classifier, and no prior."""
    shutil.rmtree(path + ".partial", ignore_errors=True)  # a copy a kill interrupted
    os.makedirs(path + ".partial")
    for name in ("config.json", "best_validation_elbo.json", "runs.jsonl"):
        if os.path.exists(source.join(name)):
            shutil.copy2(source.join(name), os.path.join(path + ".partial", name))
    for name in ("checkpoints", "classifier"):
        shutil.copytree(source.join(name), os.path.join(path + ".partial", name))
    records = [r for r in source.read_metrics() if "prior" not in r]  # the VAE's records
    with open(os.path.join(path + ".partial", "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(path + ".partial", path)


def priors_to_copy(source: workdir_lib.Workdir, wd: workdir_lib.Workdir, seed: int, names, prior_config) -> list[str]:
    """Those of `names` the source fitted with `seed` and these stage-2 settings, and the seed
    workdir `wd` has no priors/<name>/ for. A fit `wd` holds, finished or not, is its own:
    stage 2 resumes it."""
    fitted = source.fitted_prior_names()
    out = []
    for name in names:
        record = source.prior_record(name)
        if (record is not None and record["seed"] == seed and name in fitted and same_fit(record, prior_config)
                and not os.path.exists(wd.prior_dir(name))):
            out.append(name)
    return out


def _copy_priors(source: workdir_lib.Workdir, wd: workdir_lib.Workdir, names) -> None:
    """Copies the source's priors `names` into `wd` with their metrics records."""
    for name in names:
        # Copied beside priors/, whose every subdirectory with a checkpoint counts as a fitted prior.
        staging = wd.join(f"prior_{name}.partial")
        shutil.rmtree(staging, ignore_errors=True)  # a copy a kill interrupted
        shutil.copytree(source.prior_dir(name), staging)
        # The records before the move: a kill between the two leaves no priors/<name>, so the rerun
        # copies it again, and first drops the records written here rather than doubling them.
        wd.rewind_metrics(-1, prior=name)
        for record in source.read_metrics():
            if record.get("prior") == name:
                wd.append_metrics(record)
        os.makedirs(wd.join("priors"), exist_ok=True)
        os.replace(staging, wd.prior_dir(name))


def seed_report(wd, seed: int) -> dict:
    """The seed's sample.py report (sample seed = fit seed); an earlier one is reused when it
    has the same n, k and seed and no prior was fitted after it."""
    path = wd.join("report", "report.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        fitted_after = os.path.getmtime(wd.join("metrics.jsonl")) > os.path.getmtime(path)  # a fit logs there
        temperatures = (old.get("temperatures") or {}).get("values", [])
        same = (old["n_samples"], old["k"], old.get("seeds"), temperatures) == (_N.value, _K.value, [seed], _temperatures())
        if same and not fitted_after:
            return old
    return report.compare(wd.path, n_samples=_N.value, k=_K.value, seeds=(seed,), command=" ".join(sys.argv),
                          temperatures=_temperatures())


def _temperatures() -> list[float]:
    return [float(t) for t in _TEMPERATURES.value]


def against_ceiling(reports: dict, seeds, name: str) -> dict:
    """Prior `name` against the q(z) row of the same seed's report, over seeds: fd_ratio (its FD
    over q(z)'s), recall_below and precision_below (q(z)'s minus its own); at T = 1, and at its
    best temperature when the reports swept them."""
    out = {}
    rows = {"T=1": [reports[s]["priors"][name] for s in seeds]}
    if all("temperatures" in reports[s] for s in seeds):
        rows["best T"] = [reports[s]["temperatures"]["priors"][name]["at_best"] for s in seeds]
    for label, prior_rows in rows.items():
        ceilings = [reports[s]["references"]["q(z)"] for s in seeds]
        out[label] = {
            "fd_ratio": summary_lib.mean_sd(r["fd_classifier"] / c["fd_classifier"] for r, c in zip(prior_rows, ceilings)),
            "recall_below": summary_lib.mean_sd(c["recall"] - r["recall"] for r, c in zip(prior_rows, ceilings)),
            "precision_below": summary_lib.mean_sd(c["precision"] - r["precision"] for r, c in zip(prior_rows, ceilings)),
        }
    return out


def at_best_temperature(reports: dict, seeds, name: str) -> dict | None:
    """The best temperature (chosen on validation in each report) and the test numbers there, over seeds."""
    if not all("temperatures" in reports[s] for s in seeds):
        return None
    curves = [reports[s]["temperatures"]["priors"][name] for s in seeds]
    out = {"best_temperature": summary_lib.mean_sd(c["best_temperature"] for c in curves)}
    for metric in SAMPLE_METRICS + GAPS:
        if all(metric in c["at_best"] for c in curves):
            out[metric] = summary_lib.mean_sd(c["at_best"][metric] for c in curves)
    return out


def verdicts(table: dict) -> list[dict]:
    """For each metric: does the best autoregressive prior beat the GMM by > 2 sd?"""
    ar = [n for n in table if n in AUTOREGRESSIVE]
    if "gmm" not in table or not ar or len(table["gmm"][METRICS[0]]["values"]) < 2:
        return []  # no sd from one seed
    out = []
    for metric in METRICS:
        sign = 1.0 if LOWER_IS_BETTER[metric] else -1.0
        best = min(ar, key=lambda n: sign * table[n][metric]["mean"])
        a, g = table[best][metric], table["gmm"][metric]
        margin = sign * (g["mean"] - a["mean"])
        out.append({"metric": metric, "best_autoregressive": best, "margin": margin,
                    "two_sd": 2 * max(a["sd"], g["sd"]), "beats_gmm_by_2_sd": bool(margin > 2 * max(a["sd"], g["sd"]))})
    return out


def markdown(summary: dict) -> str:
    seeds = summary["seeds"]
    lines = [f"# {summary['dataset']}: learned priors over fit seeds {seeds} (mean ± sd)", "",
             "| prior | " + " | ".join(METRICS) + f" | fit (s) | sample {summary['n_samples']} + decode (s) |",
             "| --- |" + " --- |" * (len(METRICS) + 2)]
    for name, row in summary["priors"].items():
        cells = [f"{row[m]['mean']:.4g} ± {row[m]['sd']:.2g}" for m in METRICS]
        fit = f"{row['fit_seconds']['mean']:.0f} ± {row['fit_seconds']['sd']:.0f}" if "fit_seconds" in row else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {fit} | {row['sampling_seconds']['mean']:.1f} |")
    if summary["verdicts"]:
        lines += ["", "Best autoregressive prior vs the GMM (margin: how much better; met: margin > 2 sd):", "",
                  "| metric | best autoregressive | margin | 2 sd | met |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {v['metric']} | {v['best_autoregressive']} | {v['margin']:.4g} | {v['two_sd']:.2g} | "
                  f"{'yes' if v['beats_gmm_by_2_sd'] else 'no'} |" for v in summary["verdicts"]]
    if summary.get("references"):
        lines += ["", "Reference rows (decoded from distinct training images) and the gap each prior closes "
                  "(0 at N(0, I), 1 at q(z)):", "", "| row | " + " | ".join(SAMPLE_METRICS) + " |",
                  "| --- |" + " --- |" * len(SAMPLE_METRICS)]
        lines += [f"| {name} | " + " | ".join(_mean_sd(row[m]) for m in SAMPLE_METRICS) + " |"
                  for name, row in summary["references"].items()]
        lines += ["", "| prior | FD gap closed | recall gap closed | FD / q(z)'s | q(z) recall − its | "
                  "q(z) precision − its | best T | FD gap closed at best T | recall gap closed at best T |",
                  "| --- |" + " --- |" * 8]
        for name, row in summary["priors"].items():
            ceiling, best = row.get("against_q_z", {}).get("T=1"), row.get("at_best_temperature")
            cells = [_mean_sd(row[m]) if m in row else "-" for m in GAPS]
            cells += [_mean_sd(ceiling[m]) for m in ("fd_ratio", "recall_below", "precision_below")] if ceiling else ["-"] * 3
            cells += [_mean_sd(best[m]) if best and m in best else "-" for m in ("best_temperature", *GAPS)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{summary['command']}`", ""]
    return "\n".join(lines)


def _mean_sd(stat: dict) -> str:
    return f"{stat['mean']:.3g} ± {stat['sd']:.2g}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    source = workdir_lib.open(_WORKDIR.value)
    names = _PRIORS.value or [n.strip() for n in config.prior.name.split(",")]
    seeds = [int(s) for s in _SEEDS.value]
    out = _OUT.value or source.join("prior_seeds")
    os.makedirs(out, exist_ok=True)
    # One classifier for every seed, so that fd_classifier varies with the priors only.
    dataset = input_pipeline.load_dataset(source.load_config().data)
    if data_registry.get(dataset.name).num_classes:  # CelebA has no labels: no classifier, no classifier metrics
        classifier.load_or_train(source.join("classifier"), dataset, seed=0)
    reports, fit_seconds = {}, {n: {} for n in names}
    for seed in seeds:
        fit = config.copy_and_resolve_references()
        fit.stage, fit.seed, fit.prior.name = "prior", seed, ",".join(names)
        wd = seed_workdir(source, os.path.join(out, f"seed_{seed}"), seed, names, fit.prior)
        stages.train_and_evaluate(fit, wd.path)  # fits what is not fitted yet
        for record in wd.read_metrics():  # the last fit of each prior: its wall time
            if record["split"] == "fit" and record["prior"] in fit_seconds:
                fit_seconds[record["prior"]][seed] = record["fit_seconds"]
        reports[seed] = seed_report(wd, seed)
    table = {}
    for name in [n for n in reports[seeds[0]]["priors"] if all(n in reports[s]["priors"] for s in seeds)]:
        rows = [reports[s]["priors"][name] for s in seeds]
        table[name] = {m: summary_lib.mean_sd(r[m] for r in rows) for m in METRICS + GAPS if all(m in r for r in rows)}
        table[name]["sampling_seconds"] = summary_lib.mean_sd(r["sampling_seconds"] for r in rows)
        if fit_seconds.get(name):
            table[name]["fit_seconds"] = summary_lib.mean_sd(fit_seconds[name].values())
        if all(reports[s].get("references") for s in seeds):
            table[name]["against_q_z"] = against_ceiling(reports, seeds, name)
        best = at_best_temperature(reports, seeds, name)
        if best:
            table[name]["at_best_temperature"] = best
    references = {name: {m: summary_lib.mean_sd(reports[s]["references"][name][m] for s in seeds) for m in SAMPLE_METRICS}
                  for name in (reports[seeds[0]].get("references") or {})}
    summary = {"dataset": reports[seeds[0]]["dataset"], "seeds": seeds, "priors": table, "verdicts": verdicts(table),
               "references": references, "temperatures": _temperatures(),
               "n_samples": _N.value, "k": _K.value, "command": " ".join(sys.argv),
               "code": workdir_lib.code_version(), "vae": reports[seeds[0]]["vae"]}
    summary_lib.write_summary(out, summary, markdown(summary))


if __name__ == "__main__":
    cli.run(main)
