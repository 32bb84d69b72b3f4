"""CelebA-64 (183k/20k faces, 148x148 centre crop resized to 64x64), ResNet VAE, 8x8x16 latent.

Four levels, so the latent sits at H/8; sized for one GPU. CelebA cannot be downloaded by
TFDS here (it is on Google Drive): point at img_align_celeba/ (or its zip) and
list_eval_partition.txt with --config.data.local_dir=DIR. CelebA has no class labels, so
sample.py reports the likelihood metrics, ELBO surgery and hole rate without the
classifier-based ones (fd_classifier, precision/recall). Smoke preset (tests, on JPEGs they write): --config configs/celeba64.py:smoke.
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_colour_config("celeb_a", widths=(64, 128, 256, 256), latent_shape=(8, 8, 16), num_epochs=30)
    config.data.validation_size = 10000
    return base.finish(config, preset)
