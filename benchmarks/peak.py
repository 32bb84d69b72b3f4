"""This machine's dense float32 matmul peak, the yardstick the throughput benchmarks divide by.

On an accelerator the matmul runs at the backend's default precision, as the models do:
TF32 on recent NVIDIA GPUs, bf16 passes on TPU. That is the ceiling the models' float32
convolutions and matmuls can reach, so the share of peak compares like with like.
"""

import time

import jax
import jax.numpy as jnp


def matmul_peak_gflops(sizes=None, repeats=5) -> float:
    """Best float32 GFLOP/s of a jitted square matmul on the default device."""
    if sizes is None:  # big enough to fill the device, small enough to time in seconds on a CPU
        sizes = (1024, 2048, 3072) if jax.default_backend() == "cpu" else (4096, 8192, 12288)
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


PRECISION = {"cpu": "", "gpu": " (default precision: TF32 on NVIDIA GPUs)", "tpu": " (default precision: bf16 passes)"}


def describe() -> str:
    """'dense float32 matmul peak' with the precision it ran at, for the benchmarks' output."""
    backend = jax.default_backend()
    return "dense float32 matmul peak" + PRECISION.get(backend, f" ({backend} default precision)")
