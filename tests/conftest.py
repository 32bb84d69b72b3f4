"""Shared fixtures: real MNIST from ../shared, and one smoke main job trained per session."""

import os
import pathlib
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"
FASHION_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


def mnist_config(module="mnist", preset="smoke"):
    import importlib

    config = importlib.import_module(f"configs.{module}").get_config(preset)
    config.data.idx_dir = str(MNIST_DIR)
    return config


@pytest.fixture(scope="session")
def mnist_dir():
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST test split not found at {MNIST_DIR}")
    return MNIST_DIR


@pytest.fixture(scope="session")
def smoke_workdir(mnist_dir, tmp_path_factory):
    """README's main job (VAE + GMM + PixelCNN) on the smoke preset, trained once."""
    from vae import train_lib

    workdir = tmp_path_factory.mktemp("smoke") / "run"
    train_lib.train_and_evaluate(mnist_config(), str(workdir))
    return workdir


@pytest.fixture
def copy_of(tmp_path):
    def _copy(src):
        dst = tmp_path / "copy"
        shutil.copytree(src, dst)
        return dst

    return _copy


def read_metrics(workdir):
    import json

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]
