"""Bad input is one clear error (exit code 2, no traceback) that leaves the workdir as it was;
damaged checkpoints and full disks lose nothing already saved."""

import errno
import json
import os
import shutil

import pytest

from tests.conftest import (
    EPOCHS,
    MNIST_DIR,
    cli_args,
    mlp_config,
    run_cli,
    snapshot,
    trained_steps,
)
from vae.errors import CheckpointError
from vae.train import stages
from vae.workdir import checkpoint

# ----------------------------------------------------------------------------- bad input


def write_idx_dir(directory, breakage):
    """A copy of the real MNIST IDX files with one thing broken."""
    import gzip

    directory.mkdir()
    for name in os.listdir(MNIST_DIR):
        shutil.copy(MNIST_DIR / name, directory / name)
    images, labels = directory / "t10k-images-idx3-ubyte.gz", directory / "t10k-labels-idx1-ubyte.gz"
    if breakage == "missing":
        labels.unlink()
    elif breakage == "truncated":
        raw = gzip.open(images).read()
        with gzip.open(images, "wb") as f:
            f.write(raw[: len(raw) // 2])
    elif breakage == "magic":
        raw = bytearray(gzip.open(images).read())
        raw[2] = 0x0D
        with gzip.open(images, "wb") as f:
            f.write(bytes(raw))
    elif breakage == "labels":
        raw = bytearray(gzip.open(labels).read())
        raw[8 + 17] = 42
        with gzip.open(labels, "wb") as f:
            f.write(bytes(raw))
    return directory


BAD_TRAIN_INPUT = [
    ("unknown_key", ["--config.vae.no_such_key=1"], "no_such_key"),
    ("wrong_type", ["--config.train.batch_size=many"], "batch_size"),
    ("negative_latent_dim", ["--config.vae.mlp.latent_dim=-3"], "config.vae.mlp.latent_dim=-3"),
    ("zero_batch", ["--config.train.batch_size=0"], "config.train.batch_size=0 is out of range"),
    ("bad_kl", ["--config.vae.kl=exact"], "config.vae.kl='exact'"),
    ("unknown_dataset", ["--config.data.name=svhn"], "config.data.name='svhn' is not a known dataset"),
    ("idx_missing", "missing", "t10k-labels-idx1-ubyte.gz"),
    ("idx_truncated", "truncated", "truncated or corrupt"),
    ("idx_magic", "magic", "bad magic number"),
    ("idx_labels", "labels", "labels up to"),
    ("other_model", ["--config.vae.mlp.latent_dim=8"], "vae.mlp.latent_dim: 16 in workdir, 8 now"),
    ("other_seed", ["--config.seed=3"], "seed: 0 in workdir, 3 now"),
]


@pytest.mark.parametrize("case, change, message", BAD_TRAIN_INPUT, ids=[c[0] for c in BAD_TRAIN_INPUT])
def test_bad_training_input_is_one_clear_error_and_touches_nothing(straight_run, tmp_path, case, change, message):
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    before = snapshot(workdir)
    extra = change
    if isinstance(change, str):  # a broken copy of the data
        extra = [f"--config.data.idx_dir={write_idx_dir(tmp_path / 'idx', change)}"]
    result = run_cli([*cli_args(workdir, "--config.stage=vae"), *extra])
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert snapshot(workdir) == before


def test_fresh_moves_a_foreign_workdir_aside_and_starts_over(straight_run, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    before = snapshot(workdir)
    result = run_cli([*cli_args(workdir, "--config.stage=vae", "--config.train.num_epochs=1"),
                      "--config.vae.mlp.latent_dim=8", "--fresh"])
    assert result.returncode == 0, result.stderr[-2000:]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("w.old-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before  # the old run, untouched
    assert json.loads((workdir / "config.json").read_text())["vae"]["mlp"]["latent_dim"] == 8


def test_corrupt_checkpoint_is_a_clear_error_naming_it(straight_run, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    last = checkpoint.latest(str(workdir / "checkpoints"))
    for root, _, files in os.walk(workdir / "checkpoints" / "latest" / str(last) / "default"):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.write(b"\x00garbage" * 4)
    before = snapshot(workdir)
    result = run_cli(cli_args(workdir, "--config.stage=vae", f"--config.train.num_epochs={EPOCHS + 1}"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot restore checkpoint {workdir}/checkpoints/latest/{last}" in result.stderr
    assert "previous checkpoint (step" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(workdir) == before


def test_partial_checkpoint_directory_is_skipped_and_kept(straight_run, tmp_path):
    """A step directory without orbax's metadata (an interrupted copy) is not a checkpoint:
    the run resumes from the last finished one and the partial directory is kept aside."""
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    last = checkpoint.latest(str(workdir / "checkpoints"))
    partial = workdir / "checkpoints" / "latest" / str(last + 32)
    shutil.copytree(workdir / "checkpoints" / "latest" / str(last) / "default" / "d", partial / "default" / "d")
    result = run_cli(cli_args(workdir, "--config.stage=vae", f"--config.train.num_epochs={EPOCHS + 1}"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "not a finished checkpoint" in result.stderr
    assert checkpoint.latest(str(workdir / "checkpoints")) == last + 32
    assert trained_steps(workdir)[-1] == last + 32
    assert any(p.name.startswith(f"{last + 32}.unfinished") for p in (workdir / "checkpoints" / "latest").iterdir())


def test_disk_full_while_saving_keeps_the_previous_checkpoint(straight_run, tmp_path, monkeypatch):
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    last = checkpoint.latest(str(workdir / "checkpoints"))
    real_save = checkpoint.ocp.CheckpointManager.save

    def full_disk(self, step, *args, **kwargs):  # writes part of the step, then runs out of space
        os.makedirs(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp"), exist_ok=True)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", full_disk)
    config = mlp_config(**{"train.num_epochs": EPOCHS + 1})
    with pytest.raises(CheckpointError, match=rf"No space left on device.*previous one \(step {last}\) is intact"):
        stages.train_and_evaluate(config, str(workdir))
    assert checkpoint.latest(str(workdir / "checkpoints")) == last
    monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", real_save)
    stages.train_and_evaluate(config, str(workdir))  # space freed: resumes from `last`
    assert checkpoint.latest(str(workdir / "checkpoints")) == last + 32


def test_non_writable_workdir_is_a_clear_error(straight_run, tmp_path):
    workdir = tmp_path / "locked"
    shutil.copytree(straight_run, workdir)
    before = snapshot(workdir)
    prefix = ()
    if os.geteuid() == 0:  # root ignores permission bits unless it gives up the capability to
        if not shutil.which("setpriv"):
            pytest.skip("running as root without util-linux's setpriv to drop CAP_DAC_OVERRIDE")
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
    os.chmod(workdir, 0o555)
    try:
        result = run_cli(cli_args(workdir, "--config.stage=vae"), prefix=prefix)
    finally:
        os.chmod(workdir, 0o755)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"workdir {workdir} is not writable" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(workdir) == before


@pytest.mark.parametrize("case, args, message", [
    ("k_zero", ["--k=0"], "--k=0"),
    ("n_negative", ["--n=-5"], "--n=-5"),
    ("prior_of_other_shape", [], "latent shape (8,)"),
])
def test_bad_sample_input_is_one_clear_error(straight_run, tmp_path, case, args, message):
    workdir = tmp_path / "w"
    shutil.copytree(straight_run, workdir)
    if case == "prior_of_other_shape":
        path = workdir / "priors" / "made" / "config.json"
        recorded = json.loads(path.read_text())
        recorded["latent_shape"] = [8]
        path.write_text(json.dumps(recorded))
    before = snapshot(workdir)
    result = run_cli(["sample.py", "--workdir", str(workdir), "--n", "100", "--k", "2", *args])
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert snapshot(workdir) == before
