"""A workdir resumes under a config with the same identity (`vae.workdir.identity`): the same
model, data, seed and batch size, with directories compared as the directories they are and
data-source fields the dataset does not read left out; anything else is refused, naming the
field."""

import json
import os
import re

import pytest

from tests.conftest import MNIST_DIR, mlp_config, mnist_config, trained_steps
from vae.errors import TrainingError
from vae.workdir import Workdir, identity


def written(tmp_path, config, name="w") -> Workdir:
    """A workdir whose config.json `config` wrote."""
    wd = Workdir(str(tmp_path / name))
    wd.save_config(config)
    return wd


# ----------------------------------------------------------------------------- the same directory


def test_a_run_started_with_a_relative_idx_dir_resumes_with_the_absolute_one(mnist_dir, tmp_path, monkeypatch):
    """One epoch of the MLP smoke VAE from one directory with a relative idx_dir, then a second
    epoch from another directory with the absolute path: a resume, not a refusal."""
    from vae.train import stages

    first, second = tmp_path / "a" / "b", tmp_path / "c"
    first.mkdir(parents=True)
    second.mkdir()
    workdir = tmp_path / "w"
    config = mlp_config(**{"train.num_epochs": 1})
    config.data.idx_dir = os.path.relpath(mnist_dir, first)
    assert not os.path.isabs(config.data.idx_dir)
    monkeypatch.chdir(first)
    stages.train_and_evaluate(config, str(workdir))
    steps = trained_steps(workdir)
    assert len(steps) == 1
    stored = json.loads((workdir / "config.json").read_text())["data"]["idx_dir"]
    assert stored == os.path.realpath(mnist_dir)  # independent of where the run started

    monkeypatch.chdir(second)  # the relative spelling means nothing here: only the stored path can match
    config = mlp_config(**{"train.num_epochs": 2})
    config.data.idx_dir = str(mnist_dir.resolve())
    stages.train_and_evaluate(config, str(workdir))
    assert trained_steps(workdir) == [steps[0], 2 * steps[0]]  # the second epoch, from the first one's checkpoint


def test_spellings_of_one_directory_are_one_identity(tmp_path, monkeypatch):
    link = tmp_path / "link"
    link.symlink_to(MNIST_DIR)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(MNIST_DIR.parent))
    config = mnist_config("mnist_mlp")
    wd = written(tmp_path, config)
    for spelling in (os.path.relpath(MNIST_DIR, tmp_path), "link", str(link) + "/", "~/mnist", f"{MNIST_DIR}/."):
        config.data.idx_dir = spelling
        wd.check_resumable(config)
    config.data.idx_dir = str(tmp_path)  # another directory
    stored, now = os.path.realpath(MNIST_DIR), os.path.realpath(tmp_path)  # config.json keeps them resolved
    with pytest.raises(TrainingError, match=re.escape(f"data.idx_dir: '{stored}' in workdir, '{now}' now")):
        wd.check_resumable(config)
    assert identity.resolve_dir("") == ""  # not given stays not given, not the current directory


def test_a_data_source_the_dataset_does_not_read_does_not_block_a_resume(tmp_path):
    config = mnist_config("mnist_mlp")  # MNIST from idx_dir: TFDS's directory and local_dir are not read
    wd = written(tmp_path, config)
    config.data.tfds_data_dir = str(tmp_path)
    config.data.local_dir = str(tmp_path)
    wd.check_resumable(config)

    config = mnist_config("mnist_mlp")
    config.data.idx_dir = ""  # MNIST from TFDS: its directory now says which data
    wd = written(tmp_path, config, "tfds")
    config.data.tfds_data_dir = str(tmp_path)
    with pytest.raises(TrainingError, match=f"data.tfds_data_dir: '' in workdir, '{tmp_path}' now"):
        wd.check_resumable(config)


# ----------------------------------------------------------------------------- real differences


def change(config, field: str, value):
    *sections, key = field.split(".")
    section = config
    for s in sections:
        section = section[s]
    section[key] = value


@pytest.mark.parametrize("module, field, value, message", [
    ("mnist_mlp", "data.name", "fashion_mnist", "data.name: 'mnist' in workdir, 'fashion_mnist' now"),
    ("mnist_mlp", "data.idx_dir", "/usr/share/datasets/fashion-mnist", "data.idx_dir: "),
    ("mnist_mlp", "data.binarize", False, "data.binarize: True in workdir, False now"),
    ("mnist_mlp", "vae.mlp.latent_dim", 8, "vae.mlp.latent_dim: 16 in workdir, 8 now"),
    ("mnist", "vae.conv.latent_shape", (7, 7, 4), "vae.conv.latent_shape: [7, 7, 2] in workdir, [7, 7, 4] now"),
    ("mnist_mlp", "vae.arch", "conv", "vae.arch: 'mlp' in workdir, 'conv' now"),
    ("mnist_mlp", "vae.likelihood", "logistic", "vae.likelihood: 'auto' in workdir, 'logistic' now"),
    ("mnist_mlp", "seed", 3, "seed: 0 in workdir, 3 now"),
    ("mnist_mlp", "train.batch_size", 32, "train.batch_size: 64 in workdir, 32 now"),
])
def test_another_model_data_seed_or_batch_size_is_refused_naming_the_field(tmp_path, module, field, value, message):
    config = mnist_config(module)
    wd = written(tmp_path, config)
    before = (tmp_path / "w" / "config.json").read_text()
    change(config, field, value)
    with pytest.raises(TrainingError, match="written by a different model/data config") as e:
        wd.save_config(config)
    assert message in str(e.value) and "--fresh" in str(e.value) and "\n" not in str(e.value)
    assert (tmp_path / "w" / "config.json").read_text() == before  # refused before anything is written


def test_another_architectures_section_does_not_block_a_resume(tmp_path):
    config = mnist_config("mnist_mlp")
    wd = written(tmp_path, config)
    config.vae.conv.channels = (4, 4)  # an MLP VAE does not read config.vae.conv
    wd.check_resumable(config)


def test_the_run_length_logging_and_stage_two_may_change(tmp_path):
    config = mnist_config("mnist_mlp")
    wd = written(tmp_path, config)
    config.train.num_epochs, config.train.num_sample_images, config.train.eval_batch_size = 60, 4, 100
    config.prior.name, config.prior.num_epochs, config.stage = "gmm", 2, "prior"
    wd.check_resumable(config)


def test_a_prior_trained_inside_the_vae_is_part_of_the_model(tmp_path):
    config = mnist_config("mnist_mlp")
    config.vae.prior = "made"
    wd = written(tmp_path, config)
    config.prior.pixelcnn.features = 8  # not in this VAE: free
    config.prior.num_epochs = 1  # stage 2's
    wd.check_resumable(config)
    config.prior.made.hidden = (7,)
    with pytest.raises(TrainingError, match=r"prior\.made\.hidden: \[.*\] in workdir, \[7\] now"):
        wd.check_resumable(config)
    config = mnist_config("mnist_mlp")  # back to N(0, I): the joint prior's absence is the difference
    with pytest.raises(TrainingError, match="vae.prior: 'made' in workdir, 'standard_normal' now"):
        wd.check_resumable(config)


def test_a_workdir_of_another_config_layout_is_one_clear_error(tmp_path):
    config = mnist_config("mnist_mlp")
    wd = written(tmp_path, config)
    old = json.loads((tmp_path / "w" / "config.json").read_text())
    del old["vae"]["likelihood"]  # as a workdir written before that field existed
    old["vae"]["latent_dim"] = 16  # as one written before config.vae had a section per architecture
    (tmp_path / "w" / "config.json").write_text(json.dumps(old))
    with pytest.raises(TrainingError, match="written by code with another config layout") as e:
        wd.check_resumable(config)
    message = str(e.value)
    assert "lacks vae.likelihood" in message and "it has vae.latent_dim, which this code's config does not" in message
    assert "\n" not in message and "--fresh" in message
