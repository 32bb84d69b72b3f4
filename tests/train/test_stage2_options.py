"""Stage 2's explicit choices: which latents a prior is fitted to (`prior.latent_draws`,
`prior.em_draws_per_image`) and how the training images are binarized (`prior.binarization`)."""

import dataclasses

import numpy as np
import pytest

import priors
from tests.conftest import mlp_config, read_metrics
from vae import workdir as workdir_lib
from vae.data import input_pipeline
from vae.errors import ConfigError, PriorError
from vae.evaluation import evaluation_data
from vae.train import prior_fits, prior_stage, stages


def test_binarization_once_or_per_epoch(smoke_workdir):
    wd = workdir_lib.open(smoke_workdir)
    config = wd.load_config()
    model, _, _ = wd.restore_vae(config)
    eval_data = evaluation_data.EvalData(config, input_pipeline.load_dataset(config.data))
    once = prior_stage.training_posteriors(config, eval_data, model)
    np.testing.assert_array_equal(once(0)[0], once(3)[0])
    np.testing.assert_array_equal(once(0)[0], eval_data.posteriors(model, "train")[0])
    config.prior.binarization = "per_epoch"
    fresh = prior_stage.training_posteriors(config, eval_data, model)
    a, b = np.asarray(fresh(0)[0]), np.asarray(fresh(1)[0])
    assert a.shape == once(0)[0].shape and not np.allclose(a, b)  # a new binarization each index
    np.testing.assert_array_equal(a, np.asarray(fresh(0)[0]))  # and the same one for the same index
    # per-epoch binarizations agree with the fixed one on average (the same images, other noise)
    assert abs(float(a.mean()) - float(np.asarray(once(0)[0]).mean())) < 0.05


def test_non_default_choices_reach_the_fits(straight_run, copy_of, monkeypatch):
    """latent_draws='once': every epoch of a gradient fit reads the latents of draw 0 (the
    default reads draw e at epoch e); em_draws_per_image=2: EM reads draws 0 and 1 and fits twice
    as many latents; binarization='per_epoch': each draw encodes its own binarization."""
    workdir = copy_of(straight_run)
    config = mlp_config()
    config.stage = "prior"
    config.prior.name = "made,gmm"
    config.prior.latent_draws = "once"
    config.prior.binarization = "per_epoch"
    config.prior.em_draws_per_image = 2
    for name in ("made",):  # fitted with the defaults in straight_run: set aside to refit
        workdir_lib.Workdir(workdir).set_stale_prior_aside(name)

    draws_read, em_latents = [], []
    real_posteriors, gmm = prior_stage.training_posteriors, priors.registry.get("gmm")

    def spy_posteriors(*args):
        posteriors = real_posteriors(*args)

        def read(index):
            draws_read.append(index)
            return posteriors(index)
        return read

    def spy_em(prior, key, z, section):
        em_latents.append(len(z))
        return gmm.em(prior, key, z, section)

    monkeypatch.setattr(prior_stage, "training_posteriors", spy_posteriors)
    monkeypatch.setitem(priors.registry._SPECS, "gmm", dataclasses.replace(gmm, em=spy_em))  # noqa: SLF001
    stages.train_and_evaluate(config, str(workdir))

    epochs, num_train = config.prior.num_epochs, config.data.num_train
    assert draws_read == [0] * epochs + [0, 1]  # MADE's epochs, then GMM's two draws
    assert em_latents == [2 * num_train]
    records = {r["prior"]: r for r in read_metrics(workdir) if r.get("prior") and r["split"] == "validation"}
    assert records["gmm"]["latent_nll/gmm"] < records["gmm"]["latent_nll/standard_normal"]


@pytest.mark.parametrize("field, value", [("latent_draws", "sometimes"), ("binarization", "never"),
                                          ("em_draws_per_image", 0), ("fit_target", "median")])
def test_bad_stage_two_choice_is_a_clear_error(field, value):
    config = mlp_config()
    config.prior[field] = value
    with pytest.raises(ConfigError, match=f"config.prior.{field}="):
        stages.check_config(config)


def test_a_prior_section_sets_its_own_learning_rate_ema_and_epochs(straight_run, copy_of, monkeypatch):
    """config.prior.<name>.learning_rate / ema_decay / num_epochs win over the shared ones for that
    prior alone (the diffusion prior's registry section sets the first two; num_epochs None is the
    shared count); the prior's record keeps what it got."""
    workdir = copy_of(straight_run)
    config = mlp_config()
    config.stage, config.prior.name = "prior", "made,diffusion"
    config.prior.diffusion.learning_rate = 2e-3
    config.prior.diffusion.num_epochs = config.prior.num_epochs + 3
    assert config.prior.made.num_epochs is None
    fitted_with = {}

    def spy_fit(fit_config, wd, name, prior, *args, **kwargs):
        fitted_with[name] = (fit_config.prior.learning_rate, fit_config.prior.ema_decay, fit_config.prior.num_epochs)
        return prior

    monkeypatch.setattr(prior_fits, "fit_gradient", spy_fit)
    stages.train_and_evaluate(config, str(workdir))
    shared = (config.prior.learning_rate, config.prior.ema_decay, config.prior.num_epochs)
    assert fitted_with == {"made": shared, "diffusion": (2e-3, 0.999, config.prior.num_epochs + 3)}
    assert config.prior.ema_decay == 0.0  # the run's own config is left as it was
    record = workdir_lib.open(workdir).prior_record("diffusion")["prior"]
    assert (record["learning_rate"], record["ema_decay"], record["num_epochs"]) == fitted_with["diffusion"]


@pytest.mark.parametrize("field, value", [("learning_rate", 0.0), ("ema_decay", 1.0), ("num_epochs", -1)])
def test_a_prior_sections_bad_fit_setting_is_a_clear_error(field, value):
    config = mlp_config()
    config.prior.diffusion[field] = value
    with pytest.raises(ConfigError, match=f"config.prior.diffusion.{field}={value}"):
        stages.check_config(config)


def test_em_copies_of_the_means_are_refused():
    config = mlp_config()
    config.prior.fit_target, config.prior.em_draws_per_image = "mean", 2
    with pytest.raises(ConfigError, match="config.prior.em_draws_per_image=2"):
        stages.check_config(config)


@pytest.mark.slow
def test_stage_two_waits_for_a_finished_vae(mnist_dir, tmp_path):
    config = mlp_config(**{"train.num_epochs": 2})
    config.stage = "all"
    stages.train_and_evaluate(config, str(tmp_path / "w"), max_epochs_this_run=1)
    assert not (tmp_path / "w" / "priors").exists()  # priors of epoch 1 would be stale at epoch 2
    stages.train_and_evaluate(config, str(tmp_path / "w"))
    assert workdir_lib.open(tmp_path / "w").fitted_prior_names() == ["made"]


def test_non_finite_prior_loss_is_a_prior_error(straight_run, copy_of):
    workdir = copy_of(straight_run)
    workdir_lib.Workdir(workdir).set_stale_prior_aside("made")
    config = mlp_config(**{"prior.learning_rate": 1e30, "prior.grad_clip_norm": 1e30})
    config.stage = "prior"
    with pytest.raises(PriorError, match=r"non-finite latent_nll/made at step \d+ .* of prior made"):
        stages.train_and_evaluate(config, str(workdir))
