"""SVHN cropped digits (73k/26k, 32x32 colour; `extra` unused), ResNet VAE, 8x8x8 latent.

Sized for one GPU, like configs/cifar10.py; reports bits/dim. Run:
  python train.py --config configs/svhn.py --workdir runs/svhn [--config.data.local_dir=DIR]
where DIR holds train_32x32.mat and test_32x32.mat (with internet TFDS fetches them).
Smoke preset (tests, on .mat files they write): --config configs/svhn.py:smoke.
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_colour_config("svhn_cropped", widths=(64, 128, 256), latent_shape=(8, 8, 8), num_epochs=50)
    return base.finish(config, preset)
