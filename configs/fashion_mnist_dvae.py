"""Fashion-MNIST (full 60k/10k), discrete VAE (DALL-E's dVAE, `vae.models.dvae`): the conv
stacks of configs/fashion_mnist.py around a categorical posterior over 256 codes (code_dim 16)
per position of a 7x7 map, 8-bit pixels under the discretized logistic, so the IWAE bound over
codes sampled from q(c|x) is reported in bits/dim beside the continuous VAE's and the VQ-VAE's.
10 epochs of 430 steps: tau annealed 1 -> 1/4 over the first 3000, the KL's weight 0 -> 1 over
the first 1000.

Run (offline: `apt-get install -y dataset-fashion-mnist`):
  python train.py --config configs/fashion_mnist_dvae.py --workdir runs/fashion_mnist_dvae
  python sample.py --workdir runs/fashion_mnist_dvae
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_base_config()
    config.data.name = "fashion_mnist"
    config.data.binarize = False
    config.data.validation_size = 5000
    config.vae.arch = "dvae"
    config.vae.dvae.update(tau_anneal_steps=3000, kl_warmup_steps=1000)
    config.train.num_epochs = 10
    config.prior.name = "pixelcnn_codes,transformer_codes"
    config.prior.num_epochs = 10
    return base.finish(config, preset)  # :smoke: the registry's small dVAE replaces the schedules' lengths
