"""Defaults shared by every experiment config; each config file overrides what it needs."""

import ml_collections

import priors
from vae import models


def get_base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # model init, per-step noise and binarization derive from it by fold_in
    # 'vae': train the VAE; 'prior': fit every prior in prior.name to a trained VAE;
    # 'all': both, in that order (the README's main job).
    config.stage = "all"

    config.data = ml_collections.ConfigDict()
    config.data.name = "mnist"
    config.data.idx_dir = ""  # local IDX .gz files; empty: TFDS / known local places
    # Colour datasets (cifar10, svhn_cropped, celeb_a): a directory of their canonical files
    # (vae/colour_data.py says which); empty: TFDS (prepared, or downloaded).
    config.data.local_dir = ""
    config.data.tfds_data_dir = ""  # empty: TFDS's default
    config.data.binarize = True  # dynamic binarization + Bernoulli; False: 8-bit + logistic
    config.data.validation_size = 5000  # carved from train by split_seed
    config.data.split_seed = 0
    config.data.num_train = 0  # 0: all; else the first n training images

    config.vae = ml_collections.ConfigDict()
    # The encoder/decoder family: 'conv' (spatial latent), 'resnet' (spatial, residual), 'mlp'
    # (vector latent) or 'vq' (codes); each has its settings in config.vae.<arch>, built below
    # from the architecture registry (vae/models/registry.py documents the fields).
    config.vae.arch = "conv"
    config.vae.beta = 1.0
    config.vae.kl = "analytic"  # or 'mc' (single-sample Monte-Carlo)
    # p(x|z): 'auto' is Bernoulli on binarized data, the discretized logistic on 8-bit grey and
    # the discretized logistic mixture (logistic_mixtures components, PixelCNN++'s linear
    # channel conditioning) on 8-bit colour; or name one of them.
    config.vae.likelihood = "auto"
    config.vae.logistic_mixtures = 10
    # The prior stage 1 trains with: 'standard_normal' (N(0, I)), 'vamp' (VampPrior: a mixture of the
    # encoder's posteriors at vamp_components learned pseudo-inputs), or a gradient prior of
    # config.prior ('pixelcnn', 'transformer', 'made', 'realnvp') trained jointly in the ELBO
    # from the first step (sized by config.prior.<name>; the KL is then a one-sample estimate).
    config.vae.prior = "standard_normal"
    config.vae.vamp_components = 500
    for name in models.registry.names():
        config.vae[name] = ml_collections.ConfigDict(models.registry.get(name).config)

    config.log = ml_collections.ConfigDict()
    # True: every metrics.jsonl record (and the image grids) also as TensorBoard events in
    # W/tensorboard/ (`tensorboard --logdir W`); metrics.jsonl stays the source of truth.
    config.log.tensorboard = False

    config.train = ml_collections.ConfigDict()
    config.train.num_epochs = 30
    config.train.batch_size = 128
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 200
    config.train.grad_clip_norm = 1.0
    # An epoch runs as jitted calls of steps_per_call steps (0: the whole epoch in one call),
    # each a lax.scan, fully unrolled when `unroll`: XLA:CPU runs convolutions ~10x slower in
    # a rolled loop. On GPU/TPU use steps_per_call=0, unroll=False (one call per epoch): the
    # `accelerator` preset, --config FILE:accelerator.
    config.train.steps_per_call = 8
    config.train.unroll = True
    config.train.data_placement = "auto"  # 'device' (uint8 train split on the device), 'streamed'
    config.train.compute_dtype = "float32"  # 'bfloat16': mixed precision (fp32 params and loss)
    config.train.num_devices = 0  # data-parallel over this many devices (0: all)
    # Several processes (docs/accelerators.md, "Several hosts"): distributed=True joins them via
    # jax.distributed.initialize; address/count/id unset (""/0/-1) come from the environment
    # (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) or the cluster JAX detects.
    config.train.distributed = False
    config.train.coordinator_address = ""  # host:port of process 0
    config.train.num_processes = 0
    config.train.process_id = -1
    config.train.heartbeat_timeout_seconds = 100  # a lost process stops the others after this
    # The training split is cut into this many equal shards (0: one per process); every batch
    # takes batch_size / input_shards examples from each, so the batches depend on this count
    # only: one process with input_shards=N trains on the batches N processes would.
    config.train.input_shards = 0
    config.train.eval_batch_size = 500
    config.train.num_sample_images = 64

    config.prior = ml_collections.ConfigDict()
    config.prior.name = "gmm,pixelcnn,transformer"  # one or several, comma separated
    config.prior.fit_target = "sample"  # 'sample': z ~ q(z|x); 'mean': the posterior means mu(x)
    # Gradient-fitted priors: 'per_epoch' fits fresh draws z ~ q(z|x) every epoch; 'once' fits
    # one fixed draw every epoch (as EM does).
    config.prior.latent_draws = "per_epoch"
    config.prior.em_draws_per_image = 1  # EM-fitted priors (the GMM): draws per training image
    # Binarized data: 'once' encodes the training images binarized once (the run's named
    # seed); 'per_epoch' binarizes them afresh for every epoch/draw, as stage 1 trained.
    config.prior.binarization = "once"
    config.prior.num_epochs = 30
    config.prior.batch_size = 128
    config.prior.learning_rate = 1e-3
    config.prior.warmup_steps = 200
    config.prior.grad_clip_norm = 1.0
    config.prior.steps_per_call = 8
    # As train.unroll: the PixelCNN's convolutions want the steps unrolled on XLA:CPU; a prior
    # without convolutions (MADE, RealNVP, diffusion on vector latents) compiles faster rolled.
    config.prior.unroll = True
    # Model selection on the held-out latents: the best epoch is kept; patience > 0 stops a
    # gradient fit after that many epochs without a new best (0: run every epoch).
    config.prior.patience = 0
    # > 0: evaluate and keep an EMA of the parameters (it did not improve the PixelCNN's
    # held-out NLL on MNIST, so it is off by default).
    config.prior.ema_decay = 0.0
    # One section per registered prior with hyper-parameters: config.prior.<name>. A gradient-fitted
    # prior's section also takes its own epoch count, which wins over prior.num_epochs for that
    # prior alone (None: the shared one; priors.OWN_FIT_SETTINGS lists what a section may set).
    for name in priors.registry.names():
        spec = priors.registry.get(name)
        if spec.config:
            config.prior[name] = ml_collections.ConfigDict(spec.config)
            if spec.fit == "gradient":
                config.prior[name].num_epochs = ml_collections.FieldReference(None, field_type=int)
    return config


def apply_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A tiny model trained just long enough for its latents to become active (KL ~40 nats
    on MNIST; fewer epochs leave q(z|x) ~ N(0, I) and nothing for a prior to learn)."""
    config.data.num_train = 2048
    config.data.validation_size = 1000
    for name in models.registry.names():  # each architecture's own small size
        config.vae[name].update(models.registry.get(name).smoke)
    config.vae.vamp_components = 50
    config.train.num_epochs = 6
    config.train.learning_rate = 3e-3
    config.train.batch_size = 64
    config.train.steps_per_call = 4
    config.train.warmup_steps = 10
    config.train.num_sample_images = 16
    config.prior.num_epochs = 4
    config.prior.learning_rate = 3e-3
    config.prior.batch_size = 64
    config.prior.warmup_steps = 10
    # One step per jitted call: the small priors' fits are compile-bound, and XLA compiles every
    # unrolled step of a chunk (the smoke transformer fits in about half the time). The conv VAE
    # keeps its chunks of 4: one call per step runs its epochs ~1.8x slower.
    config.prior.steps_per_call = 1
    for name in priors.registry.names():  # each prior's own small size, and the shared epochs
        smoke = priors.registry.get(name).smoke
        if smoke:
            config.prior[name].update(smoke)
        if "num_epochs" in config.prior.get(name, {}):
            config.prior[name].num_epochs = None
    return config


def get_colour_config(name: str, *, widths, latent_shape, num_epochs: int) -> ml_collections.ConfigDict:
    """A colour dataset on one GPU/TPU: the ResNet VAE, 8-bit pixels under the discretized
    logistic mixture, one jitted call per epoch (steps_per_call=0, rolled: the accelerator
    setting; the smoke preset returns to the CPU's)."""
    config = get_base_config()
    config.data.name = name
    config.data.binarize = False
    config.data.validation_size = 5000
    config.vae.arch = "resnet"
    config.vae.resnet.widths = tuple(widths)
    config.vae.resnet.latent_shape = tuple(latent_shape)
    config.train.num_epochs = num_epochs
    config.train.steps_per_call = 0
    config.train.unroll = False
    config.prior.num_epochs = 30
    config.prior.steps_per_call = 0
    config.prior.unroll = False
    config.prior.pixelcnn.features = 128
    return config


def apply_colour_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke preset of a colour config: a tiny ResNet (the same number of levels, so the
    same latent grid) with one block per level, sized for tests on ~600 images on a CPU."""
    grid, levels = tuple(config.vae.resnet.latent_shape[:2]), len(config.vae.resnet.widths)
    config = apply_smoke(config)
    config.vae.resnet.widths = tuple(8 * 2 ** min(i, 2) for i in range(levels))
    config.vae.resnet.blocks = 1
    config.vae.resnet.latent_shape = (*grid, 2)
    config.vae.logistic_mixtures = 3
    config.data.num_train = 512
    config.data.validation_size = 64
    config.train.update(num_epochs=2, batch_size=32, steps_per_call=4, unroll=True, eval_batch_size=128)
    config.prior.update(name="gmm", steps_per_call=4, unroll=True, batch_size=32)
    config.prior.gmm.num_components = 4
    return config


def apply_accelerator(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """One GPU/TPU: every epoch of the VAE and of the gradient-fitted priors as one jitted,
    rolled lax.scan (the CPU defaults unroll chunks of 8 steps, which XLA:CPU's convolutions
    need and an accelerator does not). The model, data and epochs are the config's own, so
    results compare with a CPU run's; the colour configs already run this way."""
    config.train.steps_per_call = 0
    config.train.unroll = False
    config.prior.steps_per_call = 0
    config.prior.unroll = False
    return config


PRESETS = ("smoke", "accelerator")


def finish(config: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
    """The config under `preset` (the part after ':' in --config FILE:PRESET)."""
    if preset == "smoke":
        config = apply_colour_smoke(config) if config.vae.arch == "resnet" else apply_smoke(config)
    elif preset == "accelerator":
        config = apply_accelerator(config)
    elif preset:
        raise ValueError(f"unknown config preset {preset!r}; expected '' or one of {PRESETS}")
    return config
