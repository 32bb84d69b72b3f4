"""A prior belongs to the VAE checkpoint it was fitted to. Train the VAE further and the old
priors are refused by sample.py and vae.load (naming both checkpoints), then refitted by
stage 2, with the stale fit kept aside."""

import json
import re
import shutil

import pytest

import vae
from tests.conftest import EPOCHS, cli_args, read_metrics, run_cli, snapshot
from vae import workdir as workdir_lib
from vae.errors import PriorError


def test_priors_of_an_earlier_vae_are_refused_then_refitted(straight_run, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    made_config = workdir / "priors" / "made" / "config.json"
    old = json.loads(made_config.read_text())["fitted_to"]
    more = f"--config.train.num_epochs={EPOCHS + 3}"

    result = run_cli(cli_args(workdir, "--config.stage=vae", more))  # train the VAE further
    assert result.returncode == 0, result.stderr[-2000:]
    best = json.loads((workdir / "best_validation_elbo.json").read_text())["step"]
    assert best > old["step"]  # the best checkpoint moved on, so the MADE prior is stale

    before = snapshot(workdir)
    result = run_cli(["sample.py", "--workdir", str(workdir), "--n", "100", "--k", "2"])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"fitted to the VAE at step {old['step']}" in result.stderr and f"this VAE is step {best}" in result.stderr
    assert snapshot(workdir) == before
    with pytest.raises(PriorError, match=f"step {old['step']}.*step {best}"):
        vae.load(str(workdir))
    assert list(vae.load(str(workdir), learned_priors=False).priors) == ["standard_normal"]

    result = run_cli(cli_args(workdir, "--config.stage=all", more))  # stage 2 refits it
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refitting it" in result.stderr
    new = json.loads(made_config.read_text())["fitted_to"]
    assert new["step"] == best and new["params_sha256"] != old["params_sha256"]
    aside = list((workdir / "stale_priors").iterdir())
    assert len(aside) == 1 and json.loads((aside[0] / "config.json").read_text())["fitted_to"] == old
    made_epochs = [r["epoch"] for r in read_metrics(workdir) if r.get("prior") == "made" and r["split"] == "train"]
    assert made_epochs == [1, 2, 3, 4]  # the stale fit's records left with it
    run = vae.load(str(workdir))
    assert list(run.priors) == ["standard_normal", "made"]
    result = run_cli(["sample.py", "--workdir", str(workdir), "--n", "100", "--k", "2"])
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_prior_record_of_the_old_layout_is_one_clear_error(smoke_workdir, copy_of):
    """A prior fitted before records said which VAE it was fitted to: not guessed, refused."""
    workdir = copy_of(smoke_workdir)
    path = workdir / "priors" / "gmm" / "config.json"
    record = json.loads(path.read_text())
    del record["fitted_to"]  # as written before provenance was recorded
    path.write_text(json.dumps(record))
    with pytest.raises(PriorError, match=re.escape(f"{path} is in an older layout (it has no fitted_to); move ") + ".* away"):
        vae.load(str(workdir))
    wd = workdir_lib.open(workdir)
    model, step, _ = wd.restore_vae()
    assert wd.stale_prior_reason("pixelcnn", workdir_lib.vae_fingerprint(model, step)) is None
