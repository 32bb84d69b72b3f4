"""The report's reference rows (q(z), reconstruction), the gap each prior closes, the
temperature curves and the bound against k, on the smoke main job's report."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae.evaluation import references


def test_reference_rows_decode_distinct_images_before_repeating_any():
    order = references.image_order(5, 12)
    assert sorted(order[:5]) == [0, 1, 2, 3, 4]  # every image once first
    np.testing.assert_array_equal(order[5:10], order[:5])  # then the same order again
    mean = jnp.arange(3.0)[:, None] * 10.0
    logvar = jnp.zeros((3, 1))
    z = np.asarray(references.aggregate_posterior_draws(jax.random.key(0), mean, logvar, 7))[:, 0]
    expected = np.asarray(mean)[references.image_order(3, 7), 0]
    assert np.all(np.abs(z - expected) < 5)  # draw i from the i-th image of the order, unit noise
    assert z[0] != z[3]  # independent draws of the same image
    codes = jnp.arange(12).reshape(3, 2, 2)  # a point-mass posterior: the code maps themselves
    np.testing.assert_array_equal(references.aggregate_posterior_draws(None, codes, None, 3),
                                  np.asarray(codes)[references.image_order(3, 3)])


def test_gap_closed_is_zero_at_the_baseline_and_one_at_the_reference():
    assert references.gap_closed(300.0, 300.0, 50.0) == 0.0
    assert references.gap_closed(300.0, 50.0, 50.0) == 1.0
    assert references.gap_closed(300.0, 175.0, 50.0) == 0.5
    assert references.gap_closed(0.2, 0.4, 0.6) == pytest.approx(0.5)  # recall: higher is better, the same formula
    assert references.gap_closed(300.0, 400.0, 50.0) < 0  # worse than the baseline


def test_reference_rows_bound_what_a_prior_can_reach(smoke_report):
    out, rep = smoke_report
    assert set(rep["references"]) == {"q(z)", "reconstruction"} and rep["baseline"] == "standard_normal"
    ceiling, normal = rep["references"]["q(z)"], rep["priors"]["standard_normal"]
    # Decoding the aggregate posterior is far closer to real test images than decoding N(0, I).
    assert ceiling["fd_classifier"] < 0.5 * normal["fd_classifier"]
    assert ceiling["recall"] > normal["recall"] and ceiling["precision"] > normal["precision"]
    assert "nll_iwae" not in ceiling  # sample metrics only
    assert (out / "samples_qz.png").exists() and (out / "samples_reconstruction.png").exists()
    table = (out / "report.md").read_text()
    assert "| q(z) (reference) |" in table and "| reconstruction (reference) |" in table


def test_gap_closed_is_computed_per_seed_from_the_rows(smoke_report):
    _, rep = smoke_report
    ceiling, normal = rep["references"]["q(z)"], rep["priors"]["standard_normal"]
    for name, r in rep["priors"].items():
        for metric in references.GAP_METRICS:
            want = (normal[metric] - r[metric]) / (normal[metric] - ceiling[metric])  # one seed: per seed = mean
            assert r[f"gap_closed_{metric}"] == pytest.approx(want, rel=1e-6), (name, metric)
    assert rep["priors"]["standard_normal"]["gap_closed_fd_classifier"] == 0.0
    # the learned priors, fitted to q(z), close part of the FD gap
    for name in ("gmm", "pixelcnn", "transformer"):
        assert 0.2 < rep["priors"][name]["gap_closed_fd_classifier"] <= 1.0


def test_temperature_one_reproduces_the_report_and_the_best_is_chosen_on_validation(smoke_report):
    out, rep = smoke_report
    sweep = rep["temperatures"]
    assert sweep["values"] == [0.8, 1.0] and sweep["chosen_on"] == "validation"
    for name, curve in sweep["priors"].items():
        at_one = curve["test"][1]
        assert at_one["temperature"] == 1.0
        for metric in ("fd_classifier", "precision", "recall"):  # the same samples as the table's row
            assert at_one[metric] == rep["priors"][name][metric], (name, metric)
        validation_fd = [row["fd_classifier"] for row in curve["validation"]]
        assert curve["best_temperature"] == sweep["values"][int(np.argmin(validation_fd))]
        assert curve["at_best"]["temperature"] == curve["best_temperature"]
        assert [row["fd_classifier"] for row in curve["validation"]] != [row["fd_classifier"] for row in curve["test"]]
    assert (out / "precision_recall.png").stat().st_size > 10_000
    assert "## Temperatures" in (out / "report.md").read_text()


def test_the_bound_tightens_with_k(smoke_report):
    _, rep = smoke_report
    sens = rep["k_sensitivity"]
    assert sens["k"] == [1, 10] and sens["images"] == 50
    for name, (at_1, at_10) in sens["nll_iwae"].items():
        # IWAE is non-decreasing in k in expectation: -log p(x) bounds fall, by several nats here.
        assert at_10 < at_1 - 1.0, name
        assert sens["last_change"][name] == pytest.approx(at_1 - at_10)
