"""MNIST, MLP VAE with a vector latent (latent_dim=2 gives the 2-D latent map).

Run:
  python train.py --config configs/mnist_mlp.py --workdir runs/mnist_mlp \
      --config.data.idx_dir=../shared/data/mnist --config.vae.latent_dim=2
The learned prior for a vector latent is the MADE-style masked MLP ('made').
Expected on the 2-core CPU: the MLP step runs at about 87 steps/s (batch 128), so training
takes a few minutes; no full run of this config is recorded in README yet.
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_base_config()
    config.data.name = "mnist"
    config.data.validation_size = 1000
    config.vae.arch = "mlp"
    config.vae.latent_dim = 16
    config.prior.name = "gmm,made"
    return base.finish(config, preset)
