import json
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest

from tests.conftest import SMOKE_REPORT_N as N
from tests.conftest import read_metrics, run_cli


def test_writes_every_file(smoke_report):
    out, rep = smoke_report
    names = ["standard_normal", "gmm", "pixelcnn", "transformer"]
    assert list(rep["priors"]) == names
    for name in names:
        img = plt.imread(out / f"samples_{name}.png")
        assert img.shape[0] > 100 and img.std() > 0.01  # a real grid, not a blank
        npz = np.load(out / f"samples_{name}.npz")
        assert npz["z"].shape == (N, 7, 7, 2) and npz["images"].shape == (N, 28, 28, 1)
    assert plt.imread(out / "comparison.png").shape[1] > plt.imread(out / "comparison.png").shape[0]
    on_disk = json.loads((out / "report.json").read_text())
    assert {"dataset", "n_samples", "vae", "priors", "classifier", "command"} <= set(on_disk)
    assert 0.5 < on_disk["classifier"]["test_accuracy"] <= 1.0
    for r in on_disk["priors"].values():
        for key in ("nll_iwae", "elbo", "marginal_kl", "mutual_info", "fd_classifier", "precision", "recall",
                    "label_entropy", "class_frequencies", "prior_hole_rate", "median_log_q", "latent_nll"):
            assert key in r and np.all(np.isfinite(r[key]))
    table = (out / "report.md").read_text().split("## Temperatures")[0]  # the priors' table
    assert table.count("\n| ") == 8  # header, rule, 4 priors, 2 reference rows
    assert on_disk["n_compared"] == N  # FD and precision/recall: N generated vs N real test images
    assert "nll_iwae[10] (nats)" in table


def test_standard_normal_numbers_match_stage_one(smoke_report, smoke_workdir):
    _, rep = smoke_report
    stage1 = [m for m in read_metrics(smoke_workdir) if m["split"] == "test" and "elbo" in m][-1]
    normal = rep["priors"]["standard_normal"]
    # the same test images (same fixed binarization); stage 1 used one z per image, here k=10
    assert normal["elbo"] == pytest.approx(stage1["elbo"], abs=1.5)
    # ELBO surgery: the average KL under N(0, I) is the one stage 1 measured analytically
    assert normal["average_kl"] == pytest.approx(stage1["kl"], rel=0.05)


def test_learned_priors_improve_the_bound(smoke_report):
    _, rep = smoke_report
    normal = rep["priors"]["standard_normal"]
    for name in ("gmm", "pixelcnn", "transformer"):
        learned = rep["priors"][name]
        assert np.isfinite(learned["nll_iwae"]) and learned["nll_iwae"] < normal["nll_iwae"]
        assert learned["marginal_kl"] < normal["marginal_kl"]
        # the gain in the bound cannot exceed the marginal KL it removes (ELBO surgery)
        assert learned["elbo"] - normal["elbo"] <= normal["marginal_kl"] + 1.0


def test_without_fitted_priors_reports_standard_normal_and_says_how(smoke_workdir, tmp_path, mnist_dir):
    work = tmp_path / "w"
    shutil.copytree(smoke_workdir, work, ignore=shutil.ignore_patterns("priors", "report"))
    result = run_cli(["sample.py", "--workdir", str(work), "--n", "200", "--k", "2"])
    assert result.returncode == 0, result.stderr[-2000:]
    rep = json.loads((work / "report" / "report.json").read_text())
    assert list(rep["priors"]) == ["standard_normal"]
    assert "--config.stage=prior" in (work / "report" / "report.md").read_text()


@pytest.mark.parametrize("setup, message", [
    ("missing", "does not exist"),
    ("empty", "has no config.json"),
    ("no_checkpoint", "has no VAE checkpoint"),
])
def test_missing_or_foreign_workdir_is_a_clear_error(smoke_workdir, tmp_path, setup, message):
    work = tmp_path / "w"
    if setup == "empty":
        work.mkdir()
        (work / "notes.txt").write_text("not a workdir")
    if setup == "no_checkpoint":
        work.mkdir()
        shutil.copy(smoke_workdir / "config.json", work / "config.json")
    result = run_cli(["sample.py", "--workdir", str(work)])
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_report_says_where_the_time_went(smoke_report):
    out, rep = smoke_report
    timings = rep["timings_seconds"]
    for stage in ("encode train/validation/test", "classifier: train or load", "classifier features of the test images",
                  "sample and decode", "nll_iwae[10] and ELBO on the test split", "prior hole rate (log q of the samples)"):
        assert timings[stage] > 0, stage
    assert sum(timings.values()) <= rep["wall_seconds"]
    assert sum(timings.values()) > 0.8 * rep["wall_seconds"]  # the stages account for the run
    assert "Where the" in (out / "report.md").read_text()


def test_several_sample_seeds_give_mean_and_sd(smoke_workdir, tmp_path):
    from vae.evaluation import report

    rep = report.compare(str(smoke_workdir), str(tmp_path), n_samples=300, k=2, seeds=(3, 4), command="test")
    assert rep["seeds"] == [3, 4] and rep["n_compared"] == 300
    for name, r in rep["priors"].items():
        assert len(r["per_seed"]) == 2
        for key in ("fd_classifier", "recall", "latent_nll", "nll_iwae"):
            values = [s[key] for s in r["per_seed"]]
            assert r[key] == pytest.approx(np.mean(values)) and r["sd"][key] == pytest.approx(np.std(values, ddof=1))
        assert r["sd"]["fd_classifier"] > 0, name  # other seeds, other samples
    table = (tmp_path / "report.md").read_text()
    assert "mean ± sd over sample seeds [3, 4]" in table and " ± " in table.split("| transformer |")[1]
    with pytest.raises(ValueError, match="distinct integers"):
        report.compare(str(smoke_workdir), str(tmp_path), n_samples=10, seeds=(1, 1))
