"""CIFAR-10 (50k/10k, 32x32 colour), ResNet VAE with an 8x8x8 latent, discretized logistic mixture.

Sized for one GPU (8.2M VAE parameters); reports bits/dim. Run (with internet TFDS fetches
the python batches; offline, point at them):
  python train.py --config configs/cifar10.py --workdir runs/cifar10 [--config.data.local_dir=DIR]
  python sample.py --workdir runs/cifar10
or `benchmarks/accelerator.py` (both stages and the report in one process, timed).
Smoke preset (what tests use, on CIFAR-format files they write):
--config configs/cifar10.py:smoke. No CIFAR-10 result is published: the data needs a machine
with internet or a local copy.
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_colour_config("cifar10", widths=(64, 128, 256), latent_shape=(8, 8, 8), num_epochs=100)
    return base.finish(config, preset)
