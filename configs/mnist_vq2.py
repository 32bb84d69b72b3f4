"""MNIST, VQ-VAE-2: a 7x7 top and a 14x14 bottom map of codes (256 x 16 codebooks, one per level)
around the conv stacks of configs/mnist_vq.py's width; dynamically binarized, Bernoulli decoder.
Stage 2 fits the two-level PixelCNN, p(top) p(bottom | top); sample.py compares it with the
uniform prior the VQ-VAE-2 trained with, the code usage given per level. The code transformer
over the flat sequence (top map, then bottom map: 245 codes) is the other choice,
--config.prior.name=pixelcnn_codes_2level,transformer_codes; the default fits the PixelCNN only,
whose 30 epochs already take about 40 min on the 2-core CPU.

config.vae.vq2 (vae/models/vq2.py): channels, num_codes, code_dim, commitment, codebook_decay,
dead_code_threshold, bottom_downsampling (2: 14x14 bottom and 7x7 top; 4: 7x7 and 4x4).
config.prior.pixelcnn_codes_2level (priors/two_level.py): features, num_layers, kernel_size,
dropout, embed_dim (both PixelCNNs, as pixelcnn_codes), condition_features (the top codes'
features each gated layer of the bottom PixelCNN reads).

Run (offline, the 10k MNIST test split carved 8k train+validation / 2k test):
  python train.py --config configs/mnist_vq2.py --workdir runs/mnist_vq2 \
      --config.data.idx_dir=../shared/data/mnist
  python sample.py --workdir runs/mnist_vq2
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_base_config()
    config.data.name = "mnist"
    config.data.validation_size = 1000  # sized for the offline 8k copy, as configs/mnist.py
    config.vae.arch = "vq2"
    config.prior.name = "pixelcnn_codes_2level"
    return base.finish(config, preset)  # smoke: vq2's own small size (the registry's), K = 32
