"""VAE training throughput: this codebase's jitted epoch vs PyTorch peers, same run.

  python benchmarks/train_throughput.py [--arch mlp|conv] [--batch 128] [--epochs 3]
      [--dtype float32|bfloat16] [--data_placement auto|device|streamed]
      [--steps_per_call N] [--unroll true|false] [--torch_compile]

`--arch mlp` is configs/mnist_mlp.py on 8,000 real MNIST digits (binarized, Bernoulli);
`--arch conv` is the main job's model, configs/fashion_mnist.py, on 8,000 real Fashion-MNIST
training images (8-bit, discretized logistic). Random bytes stand in if the offline copy is
missing (speed does not depend on the pixel values). `--steps_per_call 0 --unroll false` is
the accelerator setting (one rolled lax.scan per epoch): the same command on any device.
Times, in this one process:
  * this machine's dense-matmul peak: the best GFLOP/s of a jitted float32 matmul;
  * the training step as `train.py` runs it (`vae_stage.make_step_functions`: device-resident
    uint8 data, dynamic binarization, Adam + clipping, one jitted call per epoch for the MLP,
    unrolled chunks of 8 steps for the conv VAE, `--steps_per_call`/`--unroll` to change it):
    steps/s, images/s, and GFLOP/s from XLA's own FLOP count of one step (before
    compilation), as a share of the matmul peak;
  * the same architecture, loss, batch and optimizer in PyTorch eager, and under torch.compile
    with `--torch_compile` (if torch is installed; CPU: `pip install -e ".[bench]"
    --extra-index-url https://download.pytorch.org/whl/cpu`, GPU: a CUDA build of torch), on
    the device JAX runs on (`--torch_device auto`: CUDA when JAX is on a GPU and torch sees
    one), with TF32 allowed for its matmuls and convolutions as XLA allows it by default on
    GPU. Plain PyTorch: no CUDA graphs, no fused Adam, no cudnn.benchmark.
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
from peak import describe, matmul_peak_gflops, no_compilation

from configs import fashion_mnist, mnist_mlp
from vae import cli, models
from vae.data import idx, input_pipeline, mnist
from vae.models import losses
from vae.parallel import sharding
from vae.train import optim, vae_stage

MNIST_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "mnist")
IDX = {"mlp": (MNIST_DIR, "t10k"), "conv": (mnist.KNOWN_LOCAL_DIRS["fashion_mnist"][0], "train")}

_ARCH = flags.DEFINE_enum("arch", "mlp", ["mlp", "conv"], "VAE architecture (configs/mnist_mlp.py or configs/mnist.py).")
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size.")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Timed epochs of 8,000 images (62 steps at batch 128).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "config.train.compute_dtype.")
_DATA_PLACEMENT = flags.DEFINE_enum("data_placement", "auto", ["auto", "device", "streamed"],
                                    "config.train.data_placement.")
_STEPS_PER_CALL = flags.DEFINE_integer("steps_per_call", None, "config.train.steps_per_call (0: one call per "
                                       "epoch, the accelerator setting); default: the config's.")
_UNROLL = flags.DEFINE_bool("unroll", None, "config.train.unroll; default: the config's.")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", False, "Also time the PyTorch step under torch.compile.")
_TORCH_DEVICE = flags.DEFINE_enum("torch_device", "auto", ["auto", "cpu", "cuda"],
                                  "Where the PyTorch peer runs; auto: cuda when JAX runs on a GPU and torch sees one.")
_IDX_DIR = flags.DEFINE_string("idx_dir", None, "Directory of the arch's IDX files (default: ../shared/data/mnist "
                               "for mlp, the Debian Fashion-MNIST package's directory for conv).")


def training_images(arch, n=8000, directory=None):
    """(images, where they came from): the first n real images of the arch's dataset."""
    default_dir, split = IDX[arch]
    directory = directory or default_dir
    try:
        return idx.read_idx_pair(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"),
                                            os.path.join(directory, f"{split}-labels-idx1-ubyte.gz")).images[:n], directory
    except (OSError, input_pipeline.DataError):
        return np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), "random bytes"


def config_for(arch, batch, dtype, data_placement, steps_per_call=None, unroll=None):
    config = (mnist_mlp if arch == "mlp" else fashion_mnist).get_config()
    config.train.batch_size = batch
    config.train.compute_dtype = dtype
    config.train.data_placement = data_placement
    if steps_per_call is not None:
        config.train.steps_per_call = steps_per_call
    if unroll is not None:
        config.train.unroll = unroll
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
    state, m = fns.train_epoch(state, data, 0, 0)  # compile + first epoch
    jax.block_until_ready(m)
    with no_compilation(f"jax {config.vae.arch} training"):
        t0 = time.perf_counter()
        for epoch in range(1, epochs + 1):
            state, m = fns.train_epoch(state, data, 0, epoch)
        jax.block_until_ready(m)
        steps_per_sec = epochs * steps_per_epoch / (time.perf_counter() - t0)
    batch = jnp.asarray(images[: config.train.batch_size])
    # XLA's count of the program as written (`Lowered`, before compilation), before any backend
    # turns convolutions into library calls: after compilation a GPU's count leaves out the
    # convolutions that became cuDNN calls (on an H200 it kept 161 MFLOP of the conv VAE's
    # 8,657 MFLOP step, the count here on the CPU, where lowered and compiled agree within 1%).
    cost = jax.jit(fns.train_step).lower(state, batch, key).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return steps_per_sec, cost["flops"] / 1e9


def torch_device(choice):
    """'cpu' or 'cuda' for the PyTorch peer (None if torch is absent)."""
    try:
        import torch
    except ImportError:
        return None
    if choice == "auto":
        return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise app.UsageError(f"--torch_device=cuda, but torch {torch.__version__} sees no CUDA device")
    return choice


def time_torch(config, images, epochs, device, compile_step=False):
    """steps/s of the same VAE, loss, batch and optimizer in PyTorch on `device`, eager or
    under torch.compile (None if torch is absent, or torch.compile fails here)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # XLA's GPU default
    torch.manual_seed(0)
    vc, tc = config.vae, config.train
    binarize = config.data.binarize
    gelu = lambda h: F.gelu(h, approximate="tanh")  # flax's nnx.gelu default
    if vc.arch == "mlp":
        def mlp(sizes):
            return torch.nn.ModuleList([torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        enc = mlp([784, *vc.hidden, 2 * vc.latent_dim])
        dec = mlp([vc.latent_dim, *reversed(vc.hidden), 784 * (1 if binarize else 2)])

        def run(layers, h):
            for i, layer in enumerate(layers):
                h = layer(h)
                h = gelu(h) if i < len(layers) - 1 else h
            return h
        encode = lambda x: run(enc, x.reshape(x.shape[0], -1))
        decode = lambda z: run(dec, z).reshape(z.shape[0], -1, 28, 28)
        modules = [enc, dec]
    else:
        c1, c2 = vc.channels
        lc = vc.latent_shape[-1]
        conv = lambda a, b, s=1: torch.nn.Conv2d(a, b, 3, stride=s, padding=1)
        enc = torch.nn.ModuleList([conv(1, c1, 2), conv(c1, c2, 2), conv(c2, 2 * lc)])
        dec = torch.nn.ModuleList([conv(lc, c2), conv(c2, 4 * c1), conv(c1, 4 * c1), conv(c1, 1 if binarize else 2)])

        def encode(x):
            return enc[2](gelu(enc[1](gelu(enc[0](x)))))

        def decode(z):
            h = gelu(dec[0](z))
            h = F.pixel_shuffle(gelu(dec[1](h)), 2)
            h = F.pixel_shuffle(gelu(dec[2](h)), 2)
            return dec[3](h)
        modules = [enc, dec]

    def log_likelihood(x, out):  # vae.models.losses: bernoulli_log_prob / discretized_logistic_log_prob
        if binarize:
            return -F.binary_cross_entropy_with_logits(out, x, reduction="none")
        mean, log_scale = out.chunk(2, dim=1)
        log_scale = log_scale.clamp_min(-7.0)
        inv_s = torch.exp(-log_scale)
        half_bin = 0.5 / (losses.NUM_LEVELS - 1)
        plus, minus, mid = inv_s * (x - mean + half_bin), inv_s * (x - mean - half_bin), inv_s * (x - mean)
        cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid) - np.log(losses.NUM_LEVELS - 1)
        log_mid = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp_min(1e-12)), log_pdf_mid)
        return torch.where(x < half_bin, F.logsigmoid(plus), torch.where(x > 1 - half_bin, -F.softplus(minus), log_mid))

    for m in modules:
        m.to(device)
    parameters = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(parameters, lr=tc.learning_rate)
    data = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)  # NCHW uint8
    steps_per_epoch = len(images) // tc.batch_size

    def loss_fn(x_uint8):
        x = x_uint8.float() / 255.0
        x = torch.bernoulli(x) if binarize else x
        mean, logvar = encode(x).chunk(2, dim=1)
        logvar = logvar.clamp(-12.0, 8.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        recon = log_likelihood(x, decode(z)).flatten(1).sum(1)
        kl = 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
        return (-recon + vc.beta * kl).mean()

    if compile_step:
        loss_fn = torch.compile(loss_fn)

    def step(x_uint8):
        loss = loss_fn(x_uint8)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, tc.grad_clip_norm)
        opt.step()
        return loss.detach()

    def epoch():
        perm = torch.randperm(len(data), device=device)
        for i in range(steps_per_epoch):
            loss = step(data[perm[i * tc.batch_size : (i + 1) * tc.batch_size]])
        return float(loss)  # waits for the device

    try:
        epoch()  # warm-up (and compilation), as on the JAX side
    except Exception as e:  # noqa: BLE001 - inductor needs a C++ toolchain; report and go on
        print(f"pytorch {'compiled' if compile_step else 'eager'}: failed ({type(e).__name__}: {str(e)[:200]})")
        return None
    t0 = time.perf_counter()
    for _ in range(epochs):
        epoch()
    return epochs * steps_per_epoch / (time.perf_counter() - t0)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    arch, batch, dtype = _ARCH.value, _BATCH.value, _DTYPE.value
    config = config_for(arch, batch, dtype, _DATA_PLACEMENT.value, _STEPS_PER_CALL.value, _UNROLL.value)
    images, source = training_images(arch, directory=_IDX_DIR.value)
    device = jax.devices()[0]
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"jax {jax.__version__} on {jax.device_count()} x {device.device_kind} ({device.platform}); "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"data: {len(images)} images from {source}; steps_per_call={config.train.steps_per_call} "
          f"unroll={config.train.unroll}")
    peak = matmul_peak_gflops()
    print(f"{describe()}: {peak:.1f} GFLOP/s")
    steps, gflop = time_jax(config, images, _EPOCHS.value)
    achieved = steps * gflop
    print(f"jax ({arch}, batch {batch}, {dtype}): {steps:.1f} steps/s = {steps * batch:.0f} images/s; "
          f"{gflop * 1e3:.1f} MFLOP/step (XLA count) -> {achieved:.1f} GFLOP/s = {100 * achieved / peak:.1f}% of peak")
    ratios = []
    tdev = torch_device(_TORCH_DEVICE.value)
    for compiled in (False, True) if _TORCH_COMPILE.value else (False,):
        torch_steps = time_torch(config, images, _EPOCHS.value, tdev, compiled) if dtype == "float32" else None
        mode = "compile" if compiled else "eager"
        if torch_steps is None:
            print(f"pytorch {mode}: not run (torch not installed or failed, or bf16 asked)")
            ratios.append(f"jax/pytorch-{mode} n/a")
            continue
        import torch

        print(f"pytorch {torch.__version__} {mode} on {tdev} ({arch}, batch {batch}): {torch_steps:.1f} steps/s "
              f"= {torch_steps * batch:.0f} images/s")
        ratios.append(f"jax/pytorch-{mode} {steps / torch_steps:.2f}x")
    print(f"SUMMARY train_throughput arch={arch} batch={batch} dtype={dtype} device={device.device_kind}: "
          f"{steps:.1f} steps/s, {100 * achieved / peak:.1f}% of matmul peak ({achieved:.1f}/{peak:.1f} GFLOP/s), "
          + ", ".join(ratios))


if __name__ == "__main__":
    cli.run(main)
