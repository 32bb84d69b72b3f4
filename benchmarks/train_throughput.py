"""VAE training throughput: this codebase's jitted epoch vs a PyTorch eager peer, same run.

  python benchmarks/train_throughput.py [--arch mlp|conv] [--batch 128] [--epochs 3]
      [--dtype float32|bfloat16] [--data_placement auto|device|streamed]

Times, in this one process and on the same 8,000 real MNIST images (random bytes if the
offline copy is missing; speed does not depend on the pixel values):
  * this machine's dense-matmul peak: the best GFLOP/s of a jitted float32 matmul;
  * the training step as `train.py` runs it (`vae_stage.make_step_functions`: device-resident
    uint8 data, dynamic binarization, Adam + clipping, one jitted call per epoch for the MLP,
    unrolled chunks for the conv VAE): steps/s, images/s, and GFLOP/s from XLA's own FLOP
    count of one step, as a share of the matmul peak;
  * the same architecture, loss, batch and optimizer in PyTorch eager (if torch is installed:
    `pip install -e ".[bench]" --extra-index-url https://download.pytorch.org/whl/cpu`).
Compilation and the first epoch are excluded on both sides. The last line is the summary.
"""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from configs import mnist, mnist_mlp
from vae import cli, input_pipeline, models, optim, sharding, vae_stage

MNIST_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "mnist")

_ARCH = flags.DEFINE_enum("arch", "mlp", ["mlp", "conv"], "VAE architecture (configs/mnist_mlp.py or configs/mnist.py).")
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size.")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Timed epochs of 8,000 images (62 steps at batch 128).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "config.train.compute_dtype.")
_DATA_PLACEMENT = flags.DEFINE_enum("data_placement", "auto", ["auto", "device", "streamed"],
                                    "config.train.data_placement.")


def matmul_peak_gflops(sizes=(1024, 2048, 3072), repeats=5) -> float:
    """Best float32 GFLOP/s of a jitted square matmul on the default device."""
    best = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        f = jax.jit(lambda a, b: a @ b)
        f(a, a).block_until_ready()
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a, a).block_until_ready()
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def training_images(n=8000):
    try:
        return input_pipeline.read_idx_pair(
            os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"), os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz")).images[:n]
    except (OSError, input_pipeline.DataError):
        return np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def config_for(arch, batch, dtype, data_placement):
    config = (mnist_mlp if arch == "mlp" else mnist).get_config()
    config.train.batch_size = batch
    config.train.compute_dtype = dtype
    config.train.data_placement = data_placement
    return config


def time_jax(config, images, epochs):
    """(steps/s, GFLOP per step) of train.py's epoch function."""
    mesh = sharding.make_mesh(config.train.num_devices)
    model = models.create_vae(config)
    graphdef, params = nnx.split(model)
    steps_per_epoch = len(images) // config.train.batch_size
    tx = optim.make_optimizer(config.train, steps_per_epoch * (epochs + 1))
    state = sharding.put(optim.init_state(tx, params), sharding.replicated(mesh))
    fns = vae_stage.make_step_functions(graphdef, tx, config, mesh)
    resident = sharding.device_resident(config, images, mesh)
    data = sharding.put(images, sharding.replicated(mesh)) if resident else images
    key = jax.random.key(0)
    state, m = fns.train_epoch(state, data, key, 0)  # compile + first epoch
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        state, m = fns.train_epoch(state, data, key, epoch)
    jax.block_until_ready(m)
    steps_per_sec = epochs * steps_per_epoch / (time.perf_counter() - t0)
    batch = jnp.asarray(images[: config.train.batch_size])
    cost = jax.jit(fns.train_step).lower(state, batch, key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return steps_per_sec, cost["flops"] / 1e9


def time_torch(config, images, epochs):
    """steps/s of the same VAE, loss, batch and optimizer in PyTorch eager (None if absent)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    vc, tc = config.vae, config.train
    gelu = lambda h: F.gelu(h, approximate="tanh")  # flax's nnx.gelu default
    if vc.arch == "mlp":
        def mlp(sizes):
            return torch.nn.ModuleList([torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        enc = mlp([784, *vc.hidden, 2 * vc.latent_dim])
        dec = mlp([vc.latent_dim, *reversed(vc.hidden), 784])

        def run(layers, h):
            for i, layer in enumerate(layers):
                h = layer(h)
                h = gelu(h) if i < len(layers) - 1 else h
            return h
        encode = lambda x: run(enc, x.reshape(x.shape[0], -1))
        decode = lambda z: run(dec, z).reshape(-1, 1, 28, 28)
        modules = [enc, dec]
    else:
        c1, c2 = vc.channels
        lc = vc.latent_shape[-1]
        conv = lambda a, b, s=1: torch.nn.Conv2d(a, b, 3, stride=s, padding=1)
        enc = torch.nn.ModuleList([conv(1, c1, 2), conv(c1, c2, 2), conv(c2, 2 * lc)])
        dec = torch.nn.ModuleList([conv(lc, c2), conv(c2, 4 * c1), conv(c1, 4 * c1), conv(c1, 1)])

        def encode(x):
            return enc[2](gelu(enc[1](gelu(enc[0](x)))))

        def decode(z):
            h = gelu(dec[0](z))
            h = F.pixel_shuffle(gelu(dec[1](h)), 2)
            h = F.pixel_shuffle(gelu(dec[2](h)), 2)
            return dec[3](h)
        modules = [enc, dec]
    parameters = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(parameters, lr=tc.learning_rate)
    data = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # NCHW uint8
    steps_per_epoch = len(images) // tc.batch_size

    def step(x_uint8):
        x = torch.bernoulli(x_uint8.float() / 255.0)
        stats = encode(x)
        mean, logvar = stats.chunk(2, dim=1)
        logvar = logvar.clamp(-12.0, 8.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        logits = decode(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
        loss = (recon + vc.beta * kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, tc.grad_clip_norm)
        opt.step()
        return loss

    def epoch():
        perm = torch.randperm(len(data))
        for i in range(steps_per_epoch):
            loss = step(data[perm[i * tc.batch_size : (i + 1) * tc.batch_size]])
        return float(loss)

    epoch()  # warm-up, as on the JAX side
    t0 = time.perf_counter()
    for _ in range(epochs):
        epoch()
    return epochs * steps_per_epoch / (time.perf_counter() - t0)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    arch, batch, dtype = _ARCH.value, _BATCH.value, _DTYPE.value
    config = config_for(arch, batch, dtype, _DATA_PLACEMENT.value)
    images = training_images()
    device = jax.devices()[0]
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"jax {jax.__version__} on {jax.device_count()} x {device.device_kind} ({device.platform})")
    peak = matmul_peak_gflops()
    print(f"dense float32 matmul peak: {peak:.1f} GFLOP/s")
    steps, gflop = time_jax(config, images, _EPOCHS.value)
    achieved = steps * gflop
    print(f"jax ({arch}, batch {batch}, {dtype}): {steps:.1f} steps/s = {steps * batch:.0f} images/s; "
          f"{gflop * 1e3:.1f} MFLOP/step (XLA count) -> {achieved:.1f} GFLOP/s = {100 * achieved / peak:.0f}% of peak")
    torch_steps = time_torch(config, images, _EPOCHS.value) if dtype == "float32" else None
    if torch_steps is None:
        print("pytorch eager: not run (torch not installed, or bf16 asked)")
        ratio = "n/a"
    else:
        import torch

        print(f"pytorch {torch.__version__} eager ({arch}, batch {batch}): {torch_steps:.1f} steps/s "
              f"= {torch_steps * batch:.0f} images/s")
        ratio = f"{steps / torch_steps:.2f}x"
    print(f"SUMMARY train_throughput arch={arch} batch={batch} dtype={dtype} device={device.device_kind}: "
          f"{steps:.1f} steps/s, {100 * achieved / peak:.0f}% of matmul peak ({achieved:.1f}/{peak:.1f} GFLOP/s), "
          f"jax/pytorch-eager {ratio}")


if __name__ == "__main__":
    cli.run(main)
