"""MNIST, VQ-VAE: the conv stacks of configs/mnist.py around a codebook of 256 x 16, so the
latent is a 7x7 map of codes; dynamically binarized, Bernoulli decoder. Stage 2 fits the
categorical PixelCNN and transformer to the codes; sample.py compares them with the uniform
prior the VQ-VAE trained with.

Run (offline, the 10k MNIST test split carved 8k train+validation / 2k test):
  python train.py --config configs/mnist_vq.py --workdir runs/mnist_vq \
      --config.data.idx_dir=../shared/data/mnist
  python sample.py --workdir runs/mnist_vq
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_base_config()
    config.data.name = "mnist"
    config.data.validation_size = 1000  # sized for the offline 8k copy, as configs/mnist.py
    config.vae.arch = "vq"
    config.prior.name = "pixelcnn_codes,transformer_codes"
    config = base.finish(config, preset)
    if preset == "smoke":
        config.vae.vq.update(num_codes=32, code_dim=8)
    return config
