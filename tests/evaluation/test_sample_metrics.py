"""The sample-metric registry (vae.evaluation.sample_metrics): the built-in metrics and their
columns, and a metric registered here reaching report.json and report.md with no other change."""

import json

import numpy as np
import pytest

from tests.conftest import SMOKE_REPORT_N
from vae.evaluation import report_table, sample_metrics
from vae.evaluation.sample_metrics import SampleMetric

N = min(200, SMOKE_REPORT_N)  # generated images per prior: enough for a mean, quick on 2 cores


def mean_feature_norm(real, generated, predicted, real_mean_norm):
    """The generated images' mean feature norm, and its ratio to the real images' (prepared once)."""
    norm = float(np.linalg.norm(generated, axis=1).mean())
    return {"feature_norm": norm, "feature_norm_vs_real": norm / real_mean_norm}


def real_mean_norm(real):
    return float(np.linalg.norm(real, axis=1).mean())


@pytest.fixture
def feature_norm():
    """The metric, registered for one test and unregistered after it, so other reports lack it."""
    metric = sample_metrics.register(SampleMetric(
        name="feature_norm", score=mean_feature_norm, prepare=real_mean_norm,
        columns=(("feature_norm", "mean feature norm"), ("feature_norm_vs_real", "feature norm / real"))))
    yield metric
    sample_metrics.unregister(metric.name)


def test_built_in_metrics_fill_the_sample_columns_in_order():
    names = [metric.name for metric in sample_metrics.registered()]
    assert names[:3] == ["fd_classifier", "precision_recall", "label_stats"]
    keys = [key for key, _ in report_table.all_columns()]
    # the report table's column order, which the results blocks docs/tables.py writes depend on
    assert keys[keys.index("mutual_info") + 1 : keys.index("prior_hole_rate")] == [
        "fd_classifier", "precision", "recall", "label_entropy", "gap_closed_fd_classifier", "gap_closed_recall"]


def test_register_refuses_a_taken_name_or_column(feature_norm):
    with pytest.raises(ValueError, match="already registered"):
        sample_metrics.register(feature_norm)
    clash = SampleMetric(name="other", score=mean_feature_norm, columns=(("precision", "precision again"),))
    with pytest.raises(ValueError, match="belong to another metric"):
        sample_metrics.register(clash)
    assert "other" not in [metric.name for metric in sample_metrics.registered()]


def test_a_registered_metric_reaches_report_json_and_md(feature_norm, smoke_workdir, tmp_path):
    from vae.evaluation import report

    rep = report.compare(str(smoke_workdir), str(tmp_path), n_samples=N, k=2, command="test")
    on_disk = json.loads((tmp_path / "report.json").read_text())
    for name, r in on_disk["priors"].items():
        assert r["feature_norm"] > 0 and np.isfinite(r["feature_norm_vs_real"]), name
        assert r["feature_norm"] == rep["priors"][name]["feature_norm"]
        assert "fd_classifier" in r and "label_entropy" in r  # the built-in metrics still run
    table = (tmp_path / "report.md").read_text().split("Where the")[0]
    header = next(line for line in table.splitlines() if line.startswith("| prior |"))
    cells = [cell.strip() for cell in header.strip("|").split("|")]
    # after the built-in sample metrics, before the gap-closed columns and the hole rate
    assert cells.index("mean feature norm") == cells.index("label_entropy (nats)") + 1
    assert cells.index("feature norm / real") == cells.index("mean feature norm") + 1
    after = [header for _, header in report_table.GAP_COLUMNS] + ["prior_hole_rate"]
    assert cells[cells.index("feature norm / real") + 1 :][: len(after)] == after
    gmm_row = next(line for line in table.splitlines() if line.startswith("| gmm |"))
    gmm_cells = [cell.strip() for cell in gmm_row.strip("|").split("|")]
    assert gmm_cells[cells.index("mean feature norm")] == report_table.cell(on_disk["priors"]["gmm"], "feature_norm")
    assert rep["timings_seconds"]["sample metric feature_norm"] > 0
