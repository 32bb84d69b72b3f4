"""This machine's dense float32 matmul peak, the yardstick the throughput benchmarks divide by,
and `no_compilation`, the guard they time their steady state under.

On an accelerator the matmul runs at the backend's default precision, as the models do:
TF32 on recent NVIDIA GPUs, bf16 passes on TPU. That is the ceiling the models' float32
convolutions and matmuls can reach, so the share of peak compares like with like.
"""

import contextlib
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


COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax/_src/dispatch.py's BACKEND_COMPILE_EVENT
_compiled: list[tuple[str, float]] = []  # (function, seconds) of every XLA compile since the listener started
_listening = False


def _on_event(event, duration, **kwargs):
    if event == COMPILE_EVENT:
        _compiled.append((str(kwargs.get("fun_name", "?")), duration))


@contextlib.contextmanager
def no_compilation(what: str):
    """Raises if XLA compiles anything inside the block: a benchmark's timed region must hold
    steady-state steps only. (A compile there is silent otherwise: a jitted call that gets its
    state with other shardings than its previous output, for one, compiles a second time, and
    with one call per epoch that second compile lands in the first timed epoch.) One listener,
    registered on first use and never removed (jax < 0.8.1 has no public way to remove one)."""
    global _listening
    if not _listening:
        jax.monitoring.register_event_duration_secs_listener(_on_event)
        _listening = True
    start = len(_compiled)
    yield
    new = _compiled[start:]
    if new:
        names = ", ".join(sorted({name for name, _ in new}))
        raise RuntimeError(f"{what}: XLA compiled {len(new)} program(s) ({sum(t for _, t in new):.1f} s: {names}) "
                           "inside the timed region, so the figure would count compilation as steps; warm every "
                           "program up first")


def timed(what: str, fn, *args) -> float:
    """Wall seconds of one steady-state call fn(*args): a first call compiles and warms up,
    the timed one must compile nothing (`no_compilation`)."""
    jax.block_until_ready(fn(*args))
    with no_compilation(what):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        return time.perf_counter() - t0
