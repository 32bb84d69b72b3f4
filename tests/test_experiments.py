"""experiments/prior_seeds.py (every prior fitted with several seeds to one VAE) and
experiments/joint_priors.py (post-hoc vs jointly trained priors over training seeds): mean ± sd."""

import json

from tests.conftest import read_metrics, run_cli, snapshot


def test_prior_seeds_reuses_a_fit_whose_own_settings_are_unchanged():
    """A source fit is copied when the shared stage-2 settings and the prior's own section match,
    as stage 2 applies them: another prior's section does not matter, the prior's own does, and a
    shared setting its section overrides does not."""
    from configs import base
    from experiments.prior_seeds import same_fit
    import priors

    config = base.get_base_config()
    record = lambda name: {"name": name, "prior": json.loads(priors.fit_settings(config.prior, name).to_json())}  # noqa: E731
    pixelcnn, diffusion = record("pixelcnn"), record("diffusion")
    config.prior.transformer.features += 1
    assert same_fit(pixelcnn, config.prior) and same_fit(diffusion, config.prior)
    config.prior.ema_decay = 0.5  # diffusion's section sets its own
    assert not same_fit(pixelcnn, config.prior) and same_fit(diffusion, config.prior)
    config.prior.diffusion.sample_steps += 1
    assert not same_fit(diffusion, config.prior)


def test_prior_seeds_fits_each_seed_once_and_reports_mean_and_sd(smoke_workdir, copy_of, mnist_dir):
    work = copy_of(smoke_workdir)
    args = ["experiments/prior_seeds.py", "--config", "configs/mnist.py:smoke", f"--config.data.idx_dir={mnist_dir}",
            "--workdir", str(work), "--seeds", "0,1", "--priors", "gmm", "--n", "300", "--k", "2"]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((work / "prior_seeds" / "summary.json").read_text())
    gmm = summary["priors"]["gmm"]
    assert len(gmm["fd_classifier"]["values"]) == 2 and gmm["fd_classifier"]["sd"] > 0
    assert gmm["latent_nll"]["mean"] < summary["priors"]["standard_normal"]["latent_nll"]["mean"]
    assert len(gmm["fit_seconds"]["values"]) == 2
    # seed 0 is the source's own fit, copied; seed 1 is a new one
    source = snapshot(work / "priors" / "gmm" / "checkpoints")
    assert snapshot(work / "prior_seeds" / "seed_0" / "priors" / "gmm" / "checkpoints") == source
    assert snapshot(work / "prior_seeds" / "seed_1" / "priors" / "gmm" / "checkpoints") != source
    nll = lambda w: [r["latent_nll/gmm"] for r in read_metrics(w) if r.get("prior") == "gmm" and r["split"] == "validation"]
    assert nll(work / "prior_seeds" / "seed_0") == nll(work) and nll(work / "prior_seeds" / "seed_1") != nll(work)
    assert "| gmm | " in (work / "prior_seeds" / "summary.md").read_text()
    # a rerun resumes: nothing is refitted, the same numbers come out
    again = run_cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((work / "prior_seeds" / "summary.json").read_text())["priors"]["gmm"]["latent_nll"] == gmm["latent_nll"]


def test_joint_priors_trains_each_recipe_per_seed_and_reports_mean_and_sd(smoke_report, smoke_workdir, tmp_path,
                                                                            mnist_dir):
    import shutil

    out = tmp_path / "joint"
    shutil.copytree(smoke_workdir / "classifier", out / "classifier")  # the data's classifier, reused
    args = ["experiments/joint_priors.py", "--config", "configs/mnist_mlp.py:smoke", f"--config.data.idx_dir={mnist_dir}",
            "--config.train.num_epochs=2", "--out", str(out), "--seeds", "0,1", "--recipes", "two_stage,joint_made",
            "--posthoc", "gmm", "--n", "200", "--k", "2"]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["recipe"], r["prior"]): r for r in summary["rows"]}
    assert list(rows) == [("two_stage", "standard_normal"), ("two_stage", "gmm"),
                          ("joint_made", "standard_normal"), ("joint_made", "joint_made")]
    joint = rows["joint_made", "joint_made"]
    assert len(joint["nll_iwae"]["values"]) == 2 and joint["nll_iwae"]["sd"] > 0 and joint["vae_seconds"]["mean"] > 0
    assert "fit_seconds" in rows["two_stage", "gmm"] and "fit_seconds" not in joint
    config = json.loads((out / "joint_made" / "seed_1" / "config.json").read_text())
    assert (config["vae"]["prior"], config["seed"]) == ("made", 1)
    assert "| joint_made | joint_made |" in (out / "summary.md").read_text()
    # a rerun resumes: nothing is retrained, the same numbers come out
    before = snapshot(out / "joint_made" / "seed_0" / "checkpoints")
    again = run_cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert snapshot(out / "joint_made" / "seed_0" / "checkpoints") == before
    assert json.loads((out / "summary.json").read_text())["rows"] == summary["rows"]

    bad = run_cli([*args[:-8], "--recipes", "joint_gmm"])
    assert bad.returncode == 2 and "joint_gmm" in bad.stderr and "stage-1 priors" in bad.stderr


def fake_source(root, prior_config, seed=0):
    """A workdir with what prior_seeds copies: a VAE (files only, nothing trains here) and GMM and
    PixelCNN fits with `seed`, each a finished checkpoint's markers and metrics records."""
    root.mkdir()
    (root / "config.json").write_text("{}")
    for name in ("checkpoints", "classifier"):
        (root / name).mkdir()
        (root / name / "weights").write_text(name)
    records = [{"step": 10, "split": "validation", "elbo": -100.0}]
    for name in ("gmm", "pixelcnn"):
        prior = root / "priors" / name
        (prior / "checkpoints" / "latest" / "5" / "default").mkdir(parents=True)
        (prior / "checkpoints" / "latest" / "5" / "_CHECKPOINT_METADATA").write_text("{}")
        (prior / "checkpoints" / "latest" / "5" / "default" / "_METADATA").write_text(name)
        (prior / "config.json").write_text(json.dumps(
            {"name": name, "latent_shape": [2], "prior": json.loads(prior_config.to_json()), "seed": seed,
             "fitted_to": {"step": 10}}))
        records += [{"prior": name, "step": 5, "split": "validation", f"latent_nll/{name}": 1.5},
                    {"prior": name, "step": 5, "split": "fit", "fit_seconds": 3.0}]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_prior_seeds_rerun_with_a_new_prior_adds_it_to_existing_seed_dirs(tmp_path):
    """seed_workdir on a seed directory an earlier run made: a prior --priors names now and the
    source fitted with that seed is copied in (stage 2 fits the others); the rest stays as it was."""

    import ml_collections

    from experiments import prior_seeds
    from vae import workdir as workdir_lib

    prior_config = ml_collections.ConfigDict({"name": "gmm,pixelcnn", "num_components": 3})
    source = workdir_lib.Workdir(fake_source(tmp_path / "run", prior_config))
    seed_0, seed_1 = str(tmp_path / "out" / "seed_0"), str(tmp_path / "out" / "seed_1")
    for seed, path in ((0, seed_0), (1, seed_1)):  # the first run: --priors gmm
        prior_seeds.seed_workdir(source, path, seed, ["gmm"], prior_config)
    assert workdir_lib.Workdir(seed_0).fitted_prior_names() == ["gmm"]
    assert workdir_lib.Workdir(seed_1).fitted_prior_names() == []  # the source's fits are seed 0's
    gmm_before = snapshot(tmp_path / "out" / "seed_0" / "priors" / "gmm")
    vae_records = [r for r in read_metrics(seed_0) if "prior" not in r]

    # The rerun: --priors gmm,pixelcnn
    for seed, path in ((0, seed_0), (1, seed_1)):
        prior_seeds.seed_workdir(source, path, seed, ["gmm", "pixelcnn"], prior_config)
    wd = workdir_lib.Workdir(seed_0)
    assert wd.fitted_prior_names() == ["gmm", "pixelcnn"]
    assert snapshot(wd.prior_dir("pixelcnn")) == snapshot(source.prior_dir("pixelcnn"))
    assert snapshot(wd.prior_dir("gmm")) == gmm_before
    records = read_metrics(seed_0)
    assert [r for r in records if "prior" not in r] == vae_records
    assert [r for r in records if r.get("prior") == "pixelcnn"] == [
        r for r in source.read_metrics() if r.get("prior") == "pixelcnn"]
    assert workdir_lib.Workdir(seed_1).fitted_prior_names() == []  # stage 2 fits both there
    # and a third run has nothing left to copy: no record is doubled
    assert prior_seeds.priors_to_copy(source, wd, 0, ["gmm", "pixelcnn"], prior_config) == []
    prior_seeds.seed_workdir(source, seed_0, 0, ["gmm", "pixelcnn"], prior_config)
    assert read_metrics(seed_0) == records
    # a prior the seed directory began fitting itself is resumed by stage 2, not replaced by the source's
    (tmp_path / "out" / "seed_0" / "priors" / "made").mkdir()
    assert prior_seeds.priors_to_copy(source, wd, 0, ["made", "pixelcnn"], prior_config) == []


def test_diffusion_samplers_scores_each_sampler_over_sample_seeds(smoke_report, smoke_workdir, copy_of):
    """experiments/diffusion_samplers.py on a one-epoch smoke diffusion fit: a row per SAMPLER:STEPS,
    mean ± sd over sample seeds, and one clear line for a sampler that does not exist."""
    import numpy as np

    from tests.conftest import mnist_config
    from vae.train import stages

    work = copy_of(smoke_workdir)  # with the classifier smoke_report trained
    config = mnist_config()
    config.stage, config.prior.name, config.prior.num_epochs = "prior", "diffusion", 1
    stages.train_and_evaluate(config, str(work))
    args = ["experiments/diffusion_samplers.py", "--workdir", str(work), "--seeds", "0,1", "--n", "64"]
    result = run_cli([*args, "--samplers", "dpmpp_2m_sde:2,ancestral:3"])
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((work / "diffusion_samplers" / "samplers.json").read_text())
    results = written["samplers"]
    assert list(results) == ["dpmpp_2m_sde:2", "ancestral:3"] and written["seeds"] == [0, 1]
    for row in results.values():
        assert np.isfinite(row["fd_classifier"]) and len(row["per_seed"]) == 2
        assert row["sd"]["fd_classifier"] > 0 and 0 <= row["recall"] <= 1
    assert results["dpmpp_2m_sde:2"]["per_seed"] != results["ancestral:3"]["per_seed"]
    assert "| ancestral:3 | " in (work / "diffusion_samplers" / "samplers.md").read_text()
    bad = run_cli([*args, "--samplers", "euler:4"])
    assert bad.returncode == 2 and "error: --samplers: 'euler:4'" in bad.stderr, bad.stderr[-2000:]
