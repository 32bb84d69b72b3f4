"""MNIST, discrete VAE (DALL-E's dVAE, `vae.models.dvae`): the conv stacks of configs/mnist.py
around a categorical posterior over 256 codes (code_dim 16) per position of a 7x7 map;
dynamically binarized, Bernoulli decoder. Trained through the Gumbel-softmax relaxation, tau
annealed 1 -> 1/4 over 1000 steps (of ~1650: 30 epochs of 55), the KL's weight 0 -> 1 over the
first 500. Stage 2 fits the categorical PixelCNN and transformer to code maps drawn from q(c|x)
(the aggregate posterior, a fresh draw per image each epoch); sample.py
compares them with the uniform prior the dVAE trained with, by an IWAE bound over codes sampled
from q(c|x).

Run (offline, the 10k MNIST test split carved 8k train+validation / 2k test):
  python train.py --config configs/mnist_dvae.py --workdir runs/mnist_dvae \
      --config.data.idx_dir=../shared/data/mnist
  python sample.py --workdir runs/mnist_dvae
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_base_config()
    config.data.name = "mnist"
    config.data.validation_size = 1000  # sized for the offline 8k copy, as configs/mnist.py
    config.vae.arch = "dvae"
    config.prior.name = "pixelcnn_codes,transformer_codes"
    return base.finish(config, preset)  # :smoke: the registry's small dVAE (K=32, schedules within 192 steps)
