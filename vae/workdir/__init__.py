"""Everything a run keeps on disk. `Workdir` is the one object callers use; each file has
one module that owns it:

  W/config.json                  the run's config (models are rebuilt from it alone)  config_store
  W/checkpoints/{latest,best}/   the VAE train state ({params, opt_state, step})       checkpoint, restore
  W/metrics.jsonl                one JSON record per evaluation; stage 2's carry "prior"  metrics
  W/best_validation_elbo.json    the step and value of the best validation ELBO         metrics
  W/runs.jsonl                   one line per train.py run: stage, git commit, command  metrics
  W/samples/                     image grids written during training                    (vae_stage)
  W/tensorboard/                 the same records and grids as TensorBoard events       tensorboard
  W/priors/<name>/config.json    what the prior is, which VAE checkpoint it was fitted to  provenance
  W/priors/<name>/checkpoints/   the fitted prior                                       restore
  W/priors/<name>/train_state/   + optimizer state, to resume a gradient fit            (prior_stage)
  W/stale_priors/<name>.<time>/  a fit of an earlier VAE checkpoint, set aside          provenance
  W/classifier/                  the cached feature classifier of the report            (report)
  W/report/                      what sample.py writes                                  (report)

  layout        where each of these lives (paths only)
  identity      which config fields a resume must keep (the rule: `identity.model_fields`)
  writes        the multi-host write protocol: process 0 writes, all read process 0's reading,
                every writing function is `collective`, files are replaced atomically
  checkpoint    Orbax checkpoints (the only module that imports orbax)

Writers (the stages) and readers (sample.py, `vae.load`, diagnostics, experiments) go through
`Workdir`; readers open one with `workdir.open(W)`.
"""

from __future__ import annotations

import os

from vae.workdir import (
    checkpoint,
    config_store,
    layout,
    metrics,
    provenance,
    restore,
    tensorboard,
)
from vae.workdir.provenance import code_version, vae_fingerprint
from vae.workdir.writes import write_atomically

__all__ = ["Workdir", "checkpoint", "code_version", "open", "vae_fingerprint", "write_atomically"]


class Workdir(layout.Layout):
    """A run's directory: its paths (`layout.Layout`) and what each module does with them."""

    tensorboard_log: tensorboard.TensorBoardLog | None = None  # `log_to_tensorboard` turns it on

    def log_to_tensorboard(self) -> None:
        """From now on, write every metrics record and image grid to W/tensorboard/ as well."""
        if self.tensorboard_log is None:
            self.tensorboard_log = tensorboard.TensorBoardLog(self.tensorboard_dir)

    # config.json
    check_resumable = config_store.check_resumable
    save_config = config_store.save_config
    load_config = config_store.load_config

    # the logs
    append_metrics = metrics.append_metrics
    read_metrics = metrics.read_metrics
    rewind_metrics = metrics.rewind_metrics
    invocations = metrics.invocations
    write_best = metrics.write_best
    log_image = metrics.log_image

    def log_invocation(self, stage: str) -> None:
        """One line per train.py run in W/runs.jsonl: when, which stage, which code, the command."""
        metrics.log_invocation(self, stage, code_version())

    # which VAE a prior belongs to
    save_prior_config = provenance.save_prior_config
    prior_record = provenance.prior_record
    stale_prior_reason = provenance.stale_prior_reason
    set_stale_prior_aside = provenance.set_stale_prior_aside

    # models back
    restore_vae = restore.restore_vae
    fitted_prior_names = restore.fitted_prior_names
    load_priors = restore.load_priors
    load_prior = restore.load_prior


def open(path: str) -> Workdir:  # shadows the builtin on purpose: `workdir.open(W)` reads as what it does
    """An existing run's workdir, for readers: it must hold config.json."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"workdir {path} does not exist")
    wd = Workdir(path)
    wd.load_config()  # a clear error now if it is not a training workdir
    return wd
