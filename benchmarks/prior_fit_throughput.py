"""Stage-2 fit throughput of a gradient-fitted prior: the step train.py runs, in steps/s.

  python benchmarks/prior_fit_throughput.py [--config configs/fashion_mnist.py] [--prior pixelcnn]
      [--latents 8192] [--epochs 2] [--steps_per_call N] [--xla_baseline]

Times `vae.train.prior_fits.make_fit_chunk` (the jitted chunk of Adam steps fit_gradient runs,
EMA included) on `--latents` latents of the config's latent shape, drawn from N(0, I) (speed
does not depend on the values), `prior.steps_per_call` steps per call (0: one call per
epoch, the accelerator setting), data-parallel over `train.num_devices` devices as train.py
runs it (0, the default: all); compilation and the first epoch are excluded. Prints
steps/s, latents/s and XLA's FLOP count of one step as a share of this machine's matmul peak.
The timed epochs must compile nothing (`peak.no_compilation`).

`--xla_baseline` also times the same command in a child process under XLA:CPU's own
convolution default (`--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`,
which `import vae` otherwise turns off, see vae/__init__.py) and prints the ratio: the two
measured side by side in one run.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time

import jax
from absl import app, flags
from flax import nnx
from peak import describe, matmul_peak_gflops, no_compilation

import priors
from vae import cli, models, xla_flags
from vae.data import registry as data_registry
from vae.data.batches import epoch_batch_indices
from vae.parallel import sharding
from vae.train import loop, optim, prior_fits

_CONFIG = cli.define_config_file("config", "configs/fashion_mnist.py", "Experiment config file[:preset].")
_PRIOR = flags.DEFINE_string("prior", "pixelcnn", "A gradient-fitted prior of the registry.")
_LATENTS = flags.DEFINE_integer("latents", 8192, "Latents per epoch.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Timed epochs (after one untimed: compilation and warm-up).")
_STEPS_PER_CALL = flags.DEFINE_integer("steps_per_call", None, "config.prior.steps_per_call; default: the config's.")
_XLA_BASELINE = flags.DEFINE_bool("xla_baseline", False, "Also time XLA:CPU's own conv default, in a child process.")
XLA_DEFAULT = "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"


def time_fit(config, name, num_latents, epochs):
    """(steps/s, GFLOP per step, devices) of the prior's fit chunk."""
    pc = config.prior
    mesh = sharding.make_mesh(config.train.num_devices)  # as fit_priors: data-parallel over all devices (0)
    latent_shape = models.latent_shape_from_config(config.vae, data_registry.image_shape(config.data.name))
    if priors.registry.get(name).fit != "gradient":
        raise app.UsageError(f"--prior={name} is not fitted by gradient steps")
    prior = priors.build(name, latent_shape, pc)
    steps = num_latents // pc.batch_size
    if steps < 1:
        raise app.UsageError(f"--latents={num_latents} is fewer than one batch (prior.batch_size={pc.batch_size})")
    tx = optim.make_optimizer(pc, steps * (epochs + 1))
    key = jax.random.key(0)
    train_chunk, _ = prior_fits.make_fit_chunk(config, name, prior, tx, key, mesh)
    sharding.check_divisible(pc.batch_size, mesh, "prior.batch_size")
    # Placed as fit_gradient places them: the chunk returns the state replicated over the mesh,
    # and a state placed otherwise would make the second call compile again.
    rep = sharding.replicated(mesh)
    state = sharding.put(prior_fits.init_fit_state(tx, nnx.state(prior)), rep)
    z = sharding.put(jax.random.normal(key, (num_latents, *latent_shape)), rep)

    def epoch(state, e):
        batches = sharding.put(epoch_batch_indices(jax.random.fold_in(key, e), 1, num_latents, pc.batch_size,
                                                        steps), rep)
        chunks = (batches[s] for s in loop.chunk_slices(steps, pc.steps_per_call))
        return loop.run_chunks(lambda st, b: train_chunk(st, z, b), state, chunks)  # as fit_gradient paces them

    state, metrics = epoch(state, 0)
    jax.block_until_ready(metrics)
    with no_compilation(f"{name} fit"):
        t0 = time.perf_counter()
        for e in range(1, epochs + 1):
            state, metrics = epoch(state, e)
        jax.block_until_ready(metrics)
        steps_per_sec = epochs * steps / (time.perf_counter() - t0)
    one = sharding.put(epoch_batch_indices(key, 1, num_latents, pc.batch_size, 1), rep)
    cost = train_chunk.lower(state, z, one).cost_analysis()  # before compilation: see train_throughput.py
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return steps_per_sec, cost["flops"] / 1e9, mesh.size


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, name = _CONFIG.value, _PRIOR.value
    if _STEPS_PER_CALL.value is not None:
        config.prior.steps_per_call = _STEPS_PER_CALL.value
    device = jax.devices()[0]
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"jax {jax.__version__} on {jax.device_count()} x {device.device_kind}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    peak = matmul_peak_gflops()
    steps, gflop, devices = time_fit(config, name, _LATENTS.value, _EPOCHS.value)
    achieved = steps * gflop
    line = (f"{name} fit (batch {config.prior.batch_size}, steps_per_call {config.prior.steps_per_call}): "
            f"{steps:.2f} steps/s = {steps * config.prior.batch_size:.0f} latents/s; {gflop * 1e3:.0f} MFLOP/step "
            f"(XLA count) -> {achieved:.1f} GFLOP/s = {100 * achieved / peak:.1f}% of the {peak:.0f} GFLOP/s {describe()}")
    print(line, flush=True)
    summary = (f"SUMMARY prior_fit_throughput prior={name} device={device.device_kind} "
               f"devices={devices}: {steps:.2f} steps/s")
    if _XLA_BASELINE.value:
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '').replace(xla_flags.CPU_CONV_FLAG, '')} {XLA_DEFAULT}"}
        argv_child = [a for a in sys.argv if not a.startswith("--xla_baseline")]
        out = subprocess.run([sys.executable, *argv_child], env=env, capture_output=True, text=True, check=True).stdout
        base = float(re.search(r"SUMMARY .*: ([\d.]+) steps/s", out).group(1))
        print(f"XLA:CPU's own conv default ({XLA_DEFAULT}), child process: {base:.2f} steps/s")
        summary += f", {steps / base:.2f}x XLA's default ({base:.2f} steps/s)"
    print(summary)


if __name__ == "__main__":
    cli.run(main)
