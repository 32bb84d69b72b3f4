"""This machine's dense float32 matmul peak, the yardstick the throughput benchmarks divide by."""

import time

import jax
import jax.numpy as jnp


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
