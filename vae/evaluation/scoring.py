"""Scoring generated images: the real side (the classifier, real features, every sample
metric's prepared state) and the scores of one set of generated images against it.

The report scores every prior, reference row and temperature against the real test images;
the temperature sweep also against real validation images, where a best temperature is
chosen (`vae.evaluation.temperatures`). Each real side is built once and shared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any

import numpy as np

from vae.data import input_pipeline
from vae.data import registry as data_registry
from vae.evaluation import classifier, metrics, sample_metrics

log = logging.getLogger(__name__)


class Stopwatch:
    """Wall seconds per stage of the report (summed over priors), in the order first seen.
    Each timed block ends with its results on the host, so the device's work is counted."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


def load_classifier(wd, dataset, seed: int, timed: Stopwatch):
    """(classifier, its test accuracy), trained once per workdir; None for a dataset without
    class labels to train it on."""
    if not data_registry.get(dataset.name).num_classes:
        log.warning("%s has no class labels: no classifier, so no fd_classifier, precision/recall or label "
                    "statistics in this report", dataset.name)
        return None
    with timed("classifier: train or load"):
        return classifier.load_or_train(wd.join("classifier"), dataset, seed=seed)


@dataclasses.dataclass(frozen=True)
class RealSide:
    """One split's real images' half of the sample metrics, shared by every prior and seed."""
    classifier: Any
    feats: np.ndarray  # classifier features of n_compared real images
    registered: list  # the sample metrics registered when the report began, in order
    prepared: dict  # metric name -> what its `prepare` made of `feats` (None without one)


def real_side(clf, images_uint8, n_compared: int, timed: Stopwatch, split: str = "test") -> RealSide:
    """The real side of `split`'s images: the features of a fixed subset of n_compared of them
    (numpy's own seed, no report key) and every registered sample metric's prepared state."""
    with timed(f"classifier features of the {split} images"):
        feats, _ = classifier.features_and_labels(clf, input_pipeline.to_float(images_uint8))
    feats = feats[np.random.default_rng(0).permutation(len(feats))[:n_compared]]
    registered = sample_metrics.registered()
    prepared = {}
    for metric in registered:
        with timed(f"sample metric {metric.name}"):
            prepared[metric.name] = None if metric.prepare is None else metric.prepare(feats)
    return RealSide(clf, feats, registered, prepared)


def score_samples(real: RealSide, images, timed: Stopwatch) -> dict:
    """Every registered sample metric of one set of generated images, against the real side."""
    with timed("classifier features of the samples"):
        feats, predicted = classifier.features_and_labels(real.classifier, images)
    return score_features(real, feats, predicted, timed)


def score_features(real: RealSide, feats, predicted, timed: Stopwatch, only=None) -> dict:
    """The registered sample metrics (those named in `only`, if given) of generated images'
    features and predicted labels: the first len(real.feats) generated against as many real."""
    generated = feats[: len(real.feats)]
    scores = {}
    for metric in real.registered:
        if only is None or metric.name in only:
            with timed(f"sample metric {metric.name}"):
                scores.update(metric.score(real.feats, generated, predicted, real.prepared[metric.name]))
    return scores


def label_statistics(dataset) -> dict:
    """Label statistics of the test split's own labels (the reference for the samples')."""
    return metrics.label_stats(dataset.test.labels)


def summarize(per_seed: list[dict]) -> dict:
    """One row's metrics over sample seeds: each number's mean (lists: elementwise), with
    `sd` (sample standard deviation, ddof=1; 0 for one seed) and the `per_seed` values."""
    out = {k: (np.mean([r[k] for r in per_seed], axis=0).tolist() if isinstance(v, list)
               else float(np.mean([r[k] for r in per_seed])))
           for k, v in per_seed[0].items()}
    scalars = [k for k, v in per_seed[0].items() if not isinstance(v, list)]
    out["sd"] = {k: float(np.std([r[k] for r in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0 for k in scalars}
    out["per_seed"] = [{k: r[k] for k in scalars} for r in per_seed]
    return out
