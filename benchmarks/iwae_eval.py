"""nll_iwae with k=1000 importance samples over 10,000 test images: time, GFLOP/s, memory.

  python benchmarks/iwae_eval.py [--workdir W] [--k 1000] [--n 10000]

Runs `bounds.iwae_under_priors`, the function sample.py uses (batches of 100 images, the k
samples drawn 10 at a time inside a lax.scan with a running log-sum-exp), under N(0, I).
With --workdir it evaluates that run's VAE on its test split; without, a freshly initialised
MLP VAE (configs/mnist_mlp.py) on the 10,000 real MNIST test digits: the time does not depend
on the weights. Prints wall time (compilation excluded: `peak.no_compilation` checks it),
achieved GFLOP/s from XLA's FLOP count of one batch, and peak resident memory of the process
(host RSS; on GPU also the device's peak bytes in use). The last line is the summary.
"""

from __future__ import annotations

import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from peak import no_compilation

import priors
from configs import mnist_mlp
from vae import cli, models
from vae import workdir as workdir_lib
from vae.data import idx, input_pipeline
from vae.evaluation import bounds, evaluation_data
from vae.models import losses

MNIST_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "mnist")
BATCH = 100  # bounds.iwae_under_priors' default

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir; default: an untrained MLP VAE on MNIST.")
_K = flags.DEFINE_integer("k", 1000, "Importance samples per image.")
_N = flags.DEFINE_integer("n", 10000, "Test images evaluated (the first n).")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _WORKDIR.value:
        wd = workdir_lib.open(_WORKDIR.value)
        config = wd.load_config()
        vae, _, _ = wd.restore_vae(config)
        dataset = input_pipeline.load_dataset(config.data)
        what = f"VAE of {_WORKDIR.value}"
    else:
        config = mnist_mlp.get_config()
        vae = models.create_vae(config)
        test = idx.read_idx_pair(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"),
                                            os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz"))
        dataset = input_pipeline.Dataset("mnist", train=None, validation=None, test=test, source=MNIST_DIR)
        what = "untrained MLP VAE (configs/mnist_mlp.py), real MNIST test digits"
    x = evaluation_data.EvalData(config, dataset).images("test", limit=_N.value)  # binarized as stage 1 sees them
    n, k = len(x), _K.value
    prior = priors.StandardNormal(vae.latent_shape)
    key = jax.random.key(0)
    print(f"{what}: {n} images, k={k}, on {jax.devices()[0].device_kind}; "
          f"host RSS before: {peak_rss_gib():.2f} GiB")

    bounds.iwae_under_priors(vae, [prior], x[:BATCH], key, k)  # compile
    with no_compilation("iwae_under_priors"):
        t0 = time.perf_counter()
        (nll,), (elbo,) = bounds.iwae_under_priors(vae, [prior], x, key, k)
        seconds = time.perf_counter() - t0

    # FLOPs of one batch, as XLA counts them for the same call report.py makes
    chunk = min(k, 10) if k % 10 == 0 else k
    cost = jax.jit(lambda xb, kb: losses.iwae_bound(vae.encode, vae.decode, vae.likelihood, xb, kb, k=k,
                                                    log_prior=prior.log_prob, chunk=chunk, with_elbo=True)
                   ).lower(jnp.asarray(x[:BATCH]), key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    # a rolled scan's body is counted once: scale by the k / chunk iterations
    flops_per_batch = cost["flops"] * (k // chunk)
    gflops = flops_per_batch * (n / BATCH) / seconds / 1e9
    device_peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    print(f"nll_iwae[k={k}] = {float(np.mean(nll)):.2f} nats, ELBO = {float(np.mean(elbo)):.2f} nats")
    print(f"wall {seconds:.1f} s = {n * k / seconds / 1e6:.2f} M decoder samples/s; "
          f"~{gflops:.0f} GFLOP/s (XLA count {flops_per_batch / 1e9:.2f} GFLOP per batch of {BATCH})")
    memory = f"peak host RSS {peak_rss_gib():.2f} GiB"
    if device_peak:
        memory += f", device peak {device_peak / 2**30:.2f} GiB"
    print(memory)
    print(f"SUMMARY iwae_eval k={k} n={n}: {seconds:.1f} s, ~{gflops:.0f} GFLOP/s, {memory} (target <= 4 GiB)")


if __name__ == "__main__":
    cli.run(main)
