"""Temperature curves: every prior's samples at several temperatures T, scored against real
validation images (where each prior's best T is chosen) and real test images (what is
reported), so that no reported number chose its own temperature.

What T does is one documented meaning per prior family (`priors.Prior.sample`): N(0, T² I),
a mixture's covariances times T², each autoregressive conditional's logistic scales times T,
a flow's base noise times T, softmax(logits / T) over codes. The draws at each T use the
report's sample key of that seed, so T = 1 reproduces the report's samples exactly.

`sweep` returns report["temperatures"]:
  values, chosen_on ('validation'), selection_metric ('fd_classifier')
  priors: {name: {"validation": [row per T], "test": [row per T], "best_temperature": T*,
                  "at_best": the test row at T*, with gap_closed_<metric> against the baseline
                  at T = 1 and the q(z) row}}
each row {temperature, fd_classifier, precision, recall, sd, per_seed}: mean and sd over the
sample seeds.
"""

from __future__ import annotations

import logging

import numpy as np

from vae.evaluation import classifier, references, sampling, scoring

log = logging.getLogger(__name__)
SELECTION_METRIC = "fd_classifier"
METRICS = ("fd_classifier", "precision_recall")  # the sample metrics of a curve (registry names)


def parse(values) -> list[float]:
    """Temperatures from strings or numbers: positive, distinct, in the order given."""
    temperatures = [float(t) for t in values]
    if any(t <= 0 for t in temperatures) or len(set(temperatures)) != len(temperatures):
        raise ValueError(f"--temperatures: expected distinct positive numbers, got {list(values)}")
    return temperatures


def sweep(vae, fitted: dict, temperatures, seeds, key, n_samples: int, test_side, validation_side, timed,
          reference_per_seed: dict, baseline: str) -> dict:
    """The temperature curves of every prior in `fitted` (see the module docstring). `key(seed)`
    is the report's sample key of a seed; `reference_per_seed` the report's per-seed results of
    the baseline prior and the q(z) row (for the gap closed at the best T)."""
    out = {"values": list(temperatures), "chosen_on": "validation", "selection_metric": SELECTION_METRIC, "priors": {}}
    for name, prior in fitted.items():
        rows = {"validation": [], "test": []}
        for t in temperatures:
            per_seed = {"validation": [], "test": []}
            for seed in seeds:
                with timed("temperature sweep: sample and decode"):
                    images = sampling.decode_images(vae, sampling.draw_samples(prior, key(seed), n_samples, t))
                with timed("temperature sweep: classifier features"):
                    feats, predicted = classifier.features_and_labels(test_side.classifier, images)
                for split, side in (("validation", validation_side), ("test", test_side)):
                    per_seed[split].append(scoring.score_features(side, feats, predicted, timed, only=METRICS))
            for split in rows:
                rows[split].append({"temperature": t} | scoring.summarize(per_seed[split]))
            log.info("%s at T=%g: test %s", name, t, {m: round(rows["test"][-1][m], 4)
                                                       for m in ("fd_classifier", "precision", "recall")})
        best = int(np.argmin([row[SELECTION_METRIC] for row in rows["validation"]]))
        at_best = dict(rows["test"][best])
        at_best.update(_gaps_at(at_best, reference_per_seed, baseline))
        out["priors"][name] = rows | {"best_temperature": temperatures[best], "at_best": at_best}
    return out


def _gaps_at(row: dict, reference_per_seed: dict, baseline: str) -> dict:
    """gap_closed_<metric> (mean and sd over seeds) of a test row, seed by seed against the
    baseline prior at T = 1 and the q(z) row of the same seed."""
    if baseline not in reference_per_seed or references.Q_Z not in reference_per_seed:
        return {}
    gaps = {}
    for metric in references.GAP_METRICS:
        values = [references.gap_closed(base[metric], r[metric], ceiling[metric])
                  for r, base, ceiling in zip(row["per_seed"], reference_per_seed[baseline],
                                              reference_per_seed[references.Q_Z])]
        gaps[f"gap_closed_{metric}"] = float(np.mean(values))
        gaps[f"gap_closed_{metric}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return gaps


def curves(result: dict) -> dict:
    """{prior: (precisions, recalls, temperatures)} of the test rows, for the figure."""
    return {name: ([r["precision"] for r in p["test"]], [r["recall"] for r in p["test"]],
                   [r["temperature"] for r in p["test"]])
            for name, p in result["priors"].items()}


def markdown(result: dict) -> list[str]:
    """report.md's temperature section: each prior's test fd / precision / recall per T, and
    the T chosen on validation with the gap it closes there."""
    lines = ["", f"## Temperatures (best T per prior chosen on validation {result['selection_metric']}; "
             "test numbers)", "", "| prior | T | fd_classifier | precision | recall |", "| --- | --- | --- | --- | --- |"]
    for name, p in result["priors"].items():
        for row in p["test"]:
            mark = " (best)" if row["temperature"] == p["best_temperature"] else ""
            lines.append(f"| {name} | {row['temperature']:g}{mark} | " + " | ".join(
                _mean_sd(row, m) for m in ("fd_classifier", "precision", "recall")) + " |")
    gaps = [(name, p["at_best"]) for name, p in result["priors"].items() if "gap_closed_fd_classifier" in p["at_best"]]
    if gaps:
        lines += ["", "Gap closed at the best T (fraction of the baseline → q(z) gap, mean ± sd over sample seeds): "
                  + "; ".join(f"{name} (T={result['priors'][name]['best_temperature']:g}) FD "
                              f"{g['gap_closed_fd_classifier']:.2f} ± {g['gap_closed_fd_classifier_sd']:.2f}, recall "
                              f"{g['gap_closed_recall']:.2f} ± {g['gap_closed_recall_sd']:.2f}" for name, g in gaps) + "."]
    return lines


def _mean_sd(row: dict, metric: str) -> str:
    sd = row["sd"].get(metric, 0.0)
    return f"{row[metric]:.4g} ± {sd:.2g}" if len(row["per_seed"]) > 1 else f"{row[metric]:.4g}"
