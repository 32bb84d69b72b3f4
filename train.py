"""Train a VAE and/or fit learned priors to its latents.

  python train.py --config configs/mnist.py --workdir runs/mnist \
      [--config.data.idx_dir=../shared/data/mnist] [--config.stage=vae|prior|all]

A workdir that already has checkpoints is resumed (--fresh moves it aside instead).
SIGTERM/SIGINT save a checkpoint and exit with 128 + the signal number; rerunning resumes.
User mistakes (bad config values, missing or corrupt data, a workdir of another model) end
with one clear message and exit code 2, leaving the workdir as it was.
"""

import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from vae import cli
from vae.errors import ConfigError
from vae.train import stages

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:preset].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, checkpoints, metrics, samples.")
_FRESH = flags.DEFINE_bool(
    "fresh", False, "Move an existing workdir aside to WORKDIR.old-<time> and start over (nothing is deleted).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    workdir = _WORKDIR.value.rstrip("/")
    if _FRESH.value and _CONFIG.value.train.distributed:
        raise ConfigError("--fresh with config.train.distributed=True: every process would move the workdir; "
                          f"move {workdir} aside once, before launching the processes")
    if _FRESH.value and os.path.exists(workdir):
        aside = f"{workdir}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(workdir, aside)
        print(f"--fresh: moved the existing {workdir} to {aside}", file=sys.stderr)
    stages.train_and_evaluate(_CONFIG.value, workdir)


if __name__ == "__main__":
    cli.run(main)
