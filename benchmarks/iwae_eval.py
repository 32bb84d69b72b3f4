"""nll_iwae with k=1000 importance samples over 10,000 test images: time, GFLOP/s, memory.

  python benchmarks/iwae_eval.py [--workdir W] [--k 1000] [--n 10000]

Runs `report.iwae_under_prior`, the function sample.py uses (batches of 100 images, the k
samples drawn 10 at a time inside a lax.scan with a running log-sum-exp), under N(0, I).
With --workdir it evaluates that run's VAE on its test split; without, a freshly initialised
MLP VAE (configs/mnist_mlp.py) on the 10,000 real MNIST test digits: the time does not depend
on the weights. Prints wall time (compilation excluded), achieved GFLOP/s from XLA's FLOP
count of one batch, and peak resident memory of the process (host RSS; on GPU also the
device's peak bytes in use). The last line is the summary.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import priors  # noqa: E402
from configs import mnist_mlp  # noqa: E402
from vae import input_pipeline, losses, prior_lib, report, train_lib  # noqa: E402

MNIST_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "mnist")
BATCH = 100  # report.iwae_under_prior's default


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--n", type=int, default=10000)
    args = parser.parse_args()
    if args.workdir:
        config, vae = prior_lib.load_vae(args.workdir)
        images = input_pipeline.load_dataset(config.data).test.images
        what = f"VAE of {args.workdir}"
    else:
        config = mnist_mlp.get_config()
        vae = train_lib.create_vae(config)
        images = input_pipeline.read_idx_pair(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"),
                                              os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz")).images
        what = "untrained MLP VAE (configs/mnist_mlp.py), real MNIST test digits"
    x = train_lib.fixed_binarization(images[: args.n], config.seed + 2, config.data.binarize)
    n = len(x)
    prior = priors.StandardNormal(vae.latent_shape)
    key = jax.random.key(0)
    print(f"{what}: {n} images, k={args.k}, on {jax.devices()[0].device_kind}; "
          f"host RSS before: {peak_rss_gib():.2f} GiB")

    report.iwae_under_prior(vae, prior, x[:BATCH], key, args.k)  # compile
    t0 = time.perf_counter()
    nll, elbo = report.iwae_under_prior(vae, prior, x, key, args.k)
    seconds = time.perf_counter() - t0

    # FLOPs of one batch, as XLA counts them for the same call report.py makes
    chunk = min(args.k, 10) if args.k % 10 == 0 else args.k
    cost = jax.jit(lambda xb, kb: losses.iwae_bound(vae.encode, vae.decode, vae.likelihood, xb, kb, k=args.k,
                                                    log_prior=prior.log_prob, chunk=chunk, with_elbo=True)
                   ).lower(jnp.asarray(x[:BATCH]), key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    # a rolled scan's body is counted once: scale by the k / chunk iterations
    flops_per_batch = cost["flops"] * (args.k // chunk)
    gflops = flops_per_batch * (n / BATCH) / seconds / 1e9
    device_peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    print(f"nll_iwae[k={args.k}] = {float(np.mean(nll)):.2f} nats, ELBO = {float(np.mean(elbo)):.2f} nats")
    print(f"wall {seconds:.1f} s = {n * args.k / seconds / 1e6:.2f} M decoder samples/s; "
          f"~{gflops:.0f} GFLOP/s (XLA count {flops_per_batch / 1e9:.2f} GFLOP per batch of {BATCH})")
    memory = f"peak host RSS {peak_rss_gib():.2f} GiB"
    if device_peak:
        memory += f", device peak {device_peak / 2**30:.2f} GiB"
    print(memory)
    print(f"SUMMARY iwae_eval k={args.k} n={n}: {seconds:.1f} s, ~{gflops:.0f} GFLOP/s, {memory} (target <= 4 GiB)")


if __name__ == "__main__":
    main()
