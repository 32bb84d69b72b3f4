"""The orchestrator: `train_and_evaluate(config, workdir)` runs the stages `config.stage` names.

  'vae'    stage 1, `vae_stage.train_vae`: the VAE with its prior (N(0, I), or config.vae.prior)
  'prior'  stage 2, `prior_stage.fit_priors`: learned priors on the frozen VAE's latents
  'all'    both, in that order (README's main job)

Stage 1 never imports stage 2; both sit on the fit loop (`vae.train.loop`) and the workdir
(`vae.workdir`). Config values are checked here, before anything is written.
"""

from __future__ import annotations

import functools
import logging
import signal

import priors
from vae import models
from vae.data import input_pipeline
from vae.data import registry as data_registry
from vae.errors import ConfigError, Stopped, TrainingError
from vae.parallel import multihost, sharding
from vae.train import loop, prior_stage, vae_stage
from vae.workdir import Workdir

STAGES = ("vae", "prior", "all")
log = logging.getLogger(__name__)


FIT_SETTING_RULES = {"learning_rate": (lambda v: v > 0, "> 0"),
                     "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1) (0: no EMA)"),
                     "num_epochs": (lambda v: v >= 0, ">= 0")}


def check_config(config) -> None:
    """Raises ConfigError naming the first field whose value cannot work."""
    tc, pc = config.train, config.prior
    rules = [
        ("seed", config.seed >= 0, ">= 0"),
        ("data.validation_size", config.data.validation_size >= 1, ">= 1"),
        ("data.num_train", config.data.num_train >= 0, ">= 0 (0: all)"),
        ("data.binarize", not (config.data.binarize and data_registry.get(config.data.name).colour),
         "False for a colour dataset (8-bit pixels, discretized logistic likelihood)"),
        ("vae.beta", config.vae.beta >= 0, ">= 0"),
        ("vae.kl", config.vae.kl in ("analytic", "mc"), "'analytic' or 'mc'"),
        ("vae.prior", config.vae.prior in models.stage1_priors(),
         " or ".join(repr(p) for p in models.stage1_priors())),
        ("vae.vamp_components", config.vae.vamp_components >= 1, ">= 1"),
        ("train.num_epochs", tc.num_epochs >= 0, ">= 0"),
        ("train.batch_size", tc.batch_size >= 1, ">= 1"),
        ("train.learning_rate", tc.learning_rate > 0, "> 0"),
        ("train.warmup_steps", tc.warmup_steps >= 0, ">= 0"),
        ("train.grad_clip_norm", tc.grad_clip_norm > 0, "> 0"),
        ("train.steps_per_call", tc.steps_per_call >= 0, ">= 0 (0: one call per epoch)"),
        ("train.eval_batch_size", tc.eval_batch_size >= 1, ">= 1"),
        ("train.input_shards", tc.input_shards >= 0, ">= 0 (0: one per process)"),
        ("train.heartbeat_timeout_seconds", tc.heartbeat_timeout_seconds >= 1, ">= 1"),
        ("train.data_placement", tc.data_placement in ("auto", "device", "streamed"),
         "'auto', 'device' or 'streamed'"),
        ("train.compute_dtype", tc.compute_dtype in models.COMPUTE_DTYPES,
         " or ".join(repr(d) for d in models.COMPUTE_DTYPES)),
        ("prior.batch_size", pc.batch_size >= 1, ">= 1"),
        ("prior.steps_per_call", pc.steps_per_call >= 0, ">= 0"),
        ("prior.patience", pc.patience >= 0, ">= 0 (0: no early stopping)"),
        ("prior.fit_target", pc.fit_target in ("sample", "mean"), "'sample' or 'mean'"),
        ("prior.latent_draws", pc.latent_draws in ("per_epoch", "once"), "'per_epoch' or 'once'"),
        ("prior.em_draws_per_image", pc.em_draws_per_image >= 1, ">= 1"),
        ("prior.binarization", pc.binarization in ("once", "per_epoch"), "'once' or 'per_epoch'"),
        ("prior.em_draws_per_image", pc.em_draws_per_image == 1 or pc.fit_target == "sample",
         "1 with prior.fit_target='mean' (more draws of the means are copies of the same points)"),
    ]
    # The shared fit settings, and those a prior's own section sets for it (priors.OWN_FIT_SETTINGS).
    sections = [("prior", pc)] + [(f"prior.{name}", pc[name]) for name in priors.registry.names() if name in pc]
    for path, section in sections:
        for key, (ok, expected) in FIT_SETTING_RULES.items():
            if section.get(key) is not None:
                rules.append((f"{path}.{key}", ok(section[key]), expected))
    for field, ok, expected in rules:
        if not ok:
            value = functools.reduce(lambda c, k: c[k], field.split("."), config)
            raise ConfigError(f"config.{field}={value!r} is out of range; expected {expected}")
    image_shape = data_registry.image_shape(config.data.name)
    models.latent_shape_from_config(config.vae, image_shape)
    models.likelihood_from_config(config, image_shape[-1])
    if config.stage == "all":  # before training a VAE whose latents stage 2's priors cannot model
        arch = models.registry.get(config.vae.arch)
        prior_stage.prior_names(config.prior, arch.latents, arch.levels)


def train_and_evaluate(config, workdir: str, *, max_epochs_this_run: int | None = None):
    """Runs the stages named by `config.stage` ('vae', 'prior' or 'all') in `workdir`."""
    if config.stage not in STAGES:
        raise TrainingError(f"config.stage={config.stage!r} is unknown; expected one of {STAGES}")
    check_config(config)
    sharding.initialize_distributed(config.train)  # before anything touches a device
    wd = Workdir(workdir)
    wd.ensure_writable()
    if config.log.tensorboard:
        wd.log_to_tensorboard()
    # Handlers cover setup and the gaps between stages too: a signal there stops the run
    # cleanly after the last saved checkpoint instead of killing it outright.
    with loop.stop_on_signals() as signals:
        dataset = input_pipeline.load_dataset(config.data)
        # Several processes: each keeps only its own shards of the training split.
        dataset = input_pipeline.keep_shards(dataset, sharding.input_shards(len(dataset.train), config.train))
        if config.stage in ("vae", "all"):
            state = vae_stage.train_vae(config, wd, dataset, max_epochs_this_run=max_epochs_this_run)
            if multihost.any_process(bool(signals)):  # arrived after the last epoch's checkpoint
                raise Stopped(signals[0] if signals else signal.SIGTERM, int(state["step"]), wd.checkpoints)
            total = dataset.train_shards.steps_per_epoch(config.train.batch_size) * config.train.num_epochs
            if config.stage == "all" and int(state["step"]) < total:
                # A partly trained VAE: priors fitted now would go stale at the next epoch.
                log.info("the VAE is at step %d of %d: stage 2 waits for it", int(state["step"]), total)
                return
        if config.stage in ("prior", "all"):
            prior_stage.fit_priors(config, wd, dataset, max_epochs_this_run=max_epochs_this_run)
            if multihost.any_process(bool(signals)):
                raise Stopped(signals[0] if signals else signal.SIGTERM, None, wd.join("priors"))
