"""The registry of sample metrics: what the report measures on generated images in the
classifier's feature space, each registered once with its report columns.

A metric is a `SampleMetric`: a `score(real, generated, predicted, prepared) -> dict` and the
(key, header) columns of report.md it fills. The report (`vae.evaluation.report.compare`)
calls every registered metric, in registration order, for each prior and sample seed, with
  real       (n_compared, F) classifier features of real test images
  generated  (n_compared, F) those of the first n_compared generated images (equal-size sets)
  predicted  (n_samples,) the classifier's labels of every generated image
  prepared   what the metric's `prepare(real)` returned (None without one): real-side state
             computed once per report and shared by every prior and seed
and stores the returned numbers (lists are averaged elementwise over seeds, not tabled).

Adding a metric: a function of those four arguments and one call, e.g.
    register(SampleMetric(name="feature_norm", score=mean_norm,
                          columns=(("feature_norm", "mean feature norm"),)))
in this module or any module imported before the report runs. Metrics need class labels
(the classifier is trained on them), so a dataset without labels (CelebA) gets none.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from vae.evaluation import metrics
from vae.registry import Registry


@dataclasses.dataclass(frozen=True)
class SampleMetric:
    name: str  # the registry key (register/unregister) and the report's timing stage
    score: Callable[[np.ndarray, np.ndarray, np.ndarray, Any], dict]  # (real, generated, predicted, prepared)
    columns: tuple[tuple[str, str], ...] = ()  # (key in score's dict, report.md header) of the tabled numbers
    prepare: Callable[[np.ndarray], Any] | None = None  # real features -> state, once per report


def _unknown(name: str, known) -> KeyError:
    return KeyError(f"{name!r} is not a registered sample metric; expected one of {known}")


_REGISTRY: Registry[SampleMetric] = Registry("sample metric", _unknown)


def register(metric: SampleMetric) -> SampleMetric:
    """Adds `metric` after those registered before it (its columns follow theirs)."""
    if metric.name in _REGISTRY.specs:
        raise ValueError(f"sample metric {metric.name!r} is already registered")
    taken = {key for other in registered() for key, _ in other.columns}
    clash = taken & {key for key, _ in metric.columns}
    if clash:
        raise ValueError(f"sample metric {metric.name!r}: columns {sorted(clash)} belong to another metric")
    return _REGISTRY.register(metric)


unregister = _REGISTRY.unregister


def registered() -> list[SampleMetric]:
    """Every registered metric, in registration order (the report's and the table's order)."""
    return list(_REGISTRY.specs.values())


def columns() -> list[tuple[str, str]]:
    """(key, header) of every registered metric's columns, in order."""
    return [column for metric in registered() for column in metric.columns]


# ----------------------------------------------------------------------------- the built-in metrics


def _frechet(real, generated, predicted, prepared) -> dict:
    return {"fd_classifier": metrics.frechet_distance(real, generated)}


def _precision_recall(real, generated, predicted, real_radii) -> dict:
    return metrics.precision_recall(real, generated, real_radii=real_radii)


def _label_stats(real, generated, predicted, prepared) -> dict:
    # every generated image's label, not only the n_compared whose features are compared
    return metrics.label_stats(predicted)


register(SampleMetric(name="fd_classifier", score=_frechet, columns=(("fd_classifier", "fd_classifier"),)))
# The real manifold's k-NN radii do not depend on the samples: computed once for every prior and seed.
register(SampleMetric(name="precision_recall", score=_precision_recall, prepare=metrics.manifold_radii,
                      columns=(("precision", "precision"), ("recall", "recall"))))
register(SampleMetric(name="label_stats", score=_label_stats, columns=(("label_entropy", "label_entropy (nats)"),)))
