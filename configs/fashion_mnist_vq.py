"""Fashion-MNIST (full 60k/10k), VQ-VAE: the conv stacks of configs/fashion_mnist.py around a
codebook of 256 x 16 (a 7x7 map of codes), 8-bit pixels under the discretized logistic, so
the bound -log p(x|z_q) - log p(z_q) is reported in bits/dim beside the continuous VAE's.

Run (offline: `apt-get install -y dataset-fashion-mnist`):
  python train.py --config configs/fashion_mnist_vq.py --workdir runs/fashion_mnist_vq
  python sample.py --workdir runs/fashion_mnist_vq
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_base_config()
    config.data.name = "fashion_mnist"
    config.data.binarize = False
    config.data.validation_size = 5000
    config.vae.arch = "vq"
    config.train.num_epochs = 10
    config.prior.name = "pixelcnn_codes,transformer_codes"
    config.prior.num_epochs = 10
    config = base.finish(config, preset)
    if preset == "smoke":
        config.vae.vq.update(num_codes=32, code_dim=8)
    return config
