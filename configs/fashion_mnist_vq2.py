"""Fashion-MNIST (full 60k/10k), VQ-VAE-2: a 4x4 top and a 7x7 bottom map of codes (256 x 16
codebooks, one per level), 8-bit pixels under the discretized logistic, so the bound
-log p(x|z_q) - log p(z_q) is reported in bits/dim beside configs/fashion_mnist_vq.py's
one-level VQ-VAE, whose one map is this bottom map's size. Stage 2 fits the two-level PixelCNN,
p(top) p(bottom | top); sample.py compares it with the uniform prior, the code usage given per
level. `--config.vae.vq2.bottom_downsampling=2` gives the 14x14 / 7x7 pair of configs/mnist_vq2.py
(about twice the stage-1 time per step and four times the bottom prior's positions on the
2-core CPU); `--config.prior.name=pixelcnn_codes_2level,transformer_codes` adds the code
transformer over the flat sequence (top map, then bottom map).

config.vae.vq2 (vae/models/vq2.py): channels, num_codes, code_dim, commitment, codebook_decay,
dead_code_threshold, bottom_downsampling (2: 14x14 bottom and 7x7 top; 4: 7x7 and 4x4).
config.prior.pixelcnn_codes_2level (priors/two_level.py): features, num_layers, kernel_size,
dropout, embed_dim (both PixelCNNs, as pixelcnn_codes), condition_features (the top codes'
features each gated layer of the bottom PixelCNN reads).

Run (offline: `apt-get install -y dataset-fashion-mnist`):
  python train.py --config configs/fashion_mnist_vq2.py --workdir runs/fashion_mnist_vq2
  python sample.py --workdir runs/fashion_mnist_vq2
"""

from configs import base


def get_config(preset: str = ""):
    config = base.get_base_config()
    config.data.name = "fashion_mnist"
    config.data.binarize = False
    config.data.validation_size = 5000
    config.vae.arch = "vq2"
    config.vae.vq2.bottom_downsampling = 4
    config.train.num_epochs = 10
    config.prior.name = "pixelcnn_codes_2level"
    config.prior.num_epochs = 20  # held-out code NLL 137.0 nats at epoch 8, 132.4 at 20 (docs/results.md)
    return base.finish(config, preset)  # smoke: vq2's own small size (the registry's), K = 32
