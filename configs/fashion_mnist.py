"""Fashion-MNIST (full 60k/10k), conv VAE, 7x7x4 spatial latent, 8-bit discretized logistic.

Run (offline: `apt-get install -y dataset-fashion-mnist` puts the IDX files where the
pipeline finds them unaided):
  python train.py --config configs/fashion_mnist.py --workdir runs/fashion_mnist
  python sample.py --workdir runs/fashion_mnist
Reports bits/dim as well as nats. Expected on the 2-core CPU (README "Results"): VAE 10
epochs in about 19 min, test ELBO about -1947 nats (3.58 bits/dim); priors about 31 min,
held-out latent NLL PixelCNN 204 < GMM 215 < N(0,I) 276 nats; sample.py 8-14 min.
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_base_config()
    config.data.name = "fashion_mnist"
    config.data.binarize = False  # 8-bit data, discretized-logistic decoder
    config.data.validation_size = 5000
    config.train.num_epochs = 10
    config.prior.num_epochs = 10
    return base.finish(config, preset)
