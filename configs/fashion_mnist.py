"""Fashion-MNIST (full 60k/10k), conv VAE, 7x7x4 spatial latent, 8-bit discretized logistic.

Run (offline: `apt-get install -y dataset-fashion-mnist` puts the IDX files where the
pipeline finds them unaided):
  python train.py --config configs/fashion_mnist.py --workdir runs/fashion_mnist
  python sample.py --workdir runs/fashion_mnist
Reports bits/dim as well as nats. Measured on the quiet 2-core CPU (README "Results", commit
bf83958): VAE 10 epochs in 7.5 min, test ELBO -1947.1 nats (3.583 bits/dim); priors 10.7 min,
held-out latent NLL PixelCNN 204.2 < GMM 214.7 < N(0,I) 276.4 nats; sample.py 5.7 min
(training the classifier).
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
