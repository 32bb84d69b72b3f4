"""MNIST, MLP VAE with a vector latent (latent_dim=2 gives the 2-D latent map of
docs/diagnostics.md); the GMM and the MADE-style masked MLP ('made') fitted to its latents.

Run:
  python train.py --config configs/mnist_mlp.py --workdir runs/mnist_mlp \
      --config.data.idx_dir=../shared/data/mnist --config.vae.mlp.latent_dim=2
  python sample.py --workdir runs/mnist_mlp
Expect the learned priors' held-out latent NLL below N(0, I)'s. The smoke preset is what the
resume and bad-input tests train.
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_base_config()
    config.data.name = "mnist"
    config.data.validation_size = 1000
    config.vae.arch = "mlp"
    config.train.steps_per_call = 0  # dense layers: one rolled scan per epoch is fastest
    config.train.unroll = False
    config.prior.name = "gmm,made"
    return base.finish(config, preset)
