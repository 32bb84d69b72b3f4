"""PixelCNN prior sampling: naive (whole network per element) vs fast (row-local) mode.

  python benchmarks/prior_sampling.py [--config configs/mnist.py] [--n 10000] [--n_naive 200]

Both modes run in this one process on the default spatial latent of the config, with the
prior's default size; prints samples/s of each, their ratio, and the time for n latents.
Timings exclude compilation (each function is run once before it is timed). For scale it
also times one forward pass (log_prob) over the same n latents: the least work any
autoregressive sampler of this network can do.
"""

import argparse
import importlib.util
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from flax import nnx  # noqa: E402

import priors  # noqa: E402


def load_config(path):
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile + warm up
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/mnist.py")
    parser.add_argument("--n", type=int, default=10000, help="latents drawn in fast mode (one batch)")
    parser.add_argument("--n_naive", type=int, default=200, help="latents drawn in naive mode")
    args = parser.parse_args()
    config = load_config(args.config)
    shape = tuple(config.vae.latent_shape)
    prior = priors.build("pixelcnn", shape, config.prior)
    graphdef, state = nnx.split(prior)
    sample = jax.jit(lambda s, k, n, mode: nnx.merge(graphdef, s).sample(k, n, mode=mode), static_argnums=(2, 3))
    key = jax.random.key(0)
    t_naive = timed(sample, state, key, args.n_naive, "naive")
    t_fast = timed(sample, state, key, args.n, "fast")
    # Reference: one forward pass (log_prob) over as many latents, the least work any
    # autoregressive sampler of this network can do.
    z = sample(state, key, args.n, "fast")
    log_prob = jax.jit(lambda s, z: nnx.merge(graphdef, s).log_prob(z))
    t_pass = timed(log_prob, state, z)
    naive_rate, fast_rate = args.n_naive / t_naive, args.n / t_fast
    pc = config.prior.pixelcnn
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} cpus, {platform.processor() or platform.machine()}")
    print(f"latent {shape}, pixelcnn features={pc.features} layers={pc.num_layers} mixtures={pc.num_mixtures}")
    print(f"naive: {args.n_naive} latents in {t_naive:.2f} s = {naive_rate:.1f} samples/s")
    print(f"fast:  {args.n} latents in {t_fast:.2f} s = {fast_rate:.1f} samples/s")
    print(f"one forward pass (log_prob) over {args.n} latents: {t_pass:.2f} s; fast sampling = {t_fast / t_pass:.1f} passes")
    print(f"summary: fast/naive = {fast_rate / naive_rate:.1f}x; {args.n} latents in {t_fast:.2f} s (fast)")


if __name__ == "__main__":
    main()
