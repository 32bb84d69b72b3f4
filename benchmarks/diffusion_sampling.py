"""Diffusion prior sampling speed by sampler: the few-step samplers (DPM-Solver++(2M) SDE, the
default; the probability-flow ODE's 'dpmpp_2m', 'heun', 'ddim') against VDM's ancestral sampler,
side by side.

  python benchmarks/diffusion_sampling.py [--config configs/fashion_mnist.py] [--n 10000]
      [--dpm_sde_steps 10] [--dpm_steps 6] [--heun_steps 8] [--ddim_steps 16] [--ancestral_steps 256]
      [--n_ancestral 2000]

On the config's spatial latent (configs/fashion_mnist.py: 7x7x4) with the diffusion prior at its
default size (config.prior.diffusion; untrained weights cost what trained ones do). DPM-Solver++(2M)
(SDE or ODE), DDIM and ancestral sampling take one network evaluation a step, Heun two. Ancestral sampling draws
`n_ancestral` latents (its cost is linear in n) and its time for n is scaled from them, as
benchmarks/prior_sampling.py does for naive sampling.
Timings exclude compilation (each function runs once before it is timed; `peak.no_compilation`
checks it). Prints each sampler's time for n latents and the ancestral / few-step ratio.
"""

import os
import platform

import jax
from absl import app, flags
from flax import nnx
from peak import timed

import priors
from vae import cli

_CONFIG = cli.define_config_file("config", "configs/fashion_mnist.py", "Experiment config file[:preset].",
                                 lock_config=True)
_N = flags.DEFINE_integer("n", 10000, "Latents drawn by the few-step samplers (one batch).")
_DPM_SDE_STEPS = flags.DEFINE_integer("dpm_sde_steps", 10,
                                     "DPM-Solver++(2M) SDE steps (the prior's default sampler and sample_steps).")
_DPM_STEPS = flags.DEFINE_integer("dpm_steps", 6, "DPM-Solver++(2M) (the ODE's) steps.")
_HEUN_STEPS = flags.DEFINE_integer("heun_steps", 8, "Heun steps (2 evaluations each).")
_DDIM_STEPS = flags.DEFINE_integer("ddim_steps", 16, "DDIM steps.")
_ANCESTRAL_STEPS = flags.DEFINE_integer("ancestral_steps", 256, "Ancestral sampler steps.")
_N_ANCESTRAL = flags.DEFINE_integer("n_ancestral", 2000, "Latents drawn by the ancestral sampler.")



def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, n = _CONFIG.value, _N.value
    shape = tuple(config.vae.conv.latent_shape)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} cpus, "
          f"{platform.processor() or platform.machine()}")
    prior = priors.build("diffusion", shape, config.prior)
    graphdef, state = nnx.split(prior)
    size = ", ".join(f"{k}={v}" for k, v in config.prior.diffusion.items())
    print(f"diffusion on latent {shape} ({size}; {sum(x.size for x in jax.tree.leaves(state))} parameters)")

    def sample_with(sampler, steps):
        def run(s, key, count):
            model = nnx.merge(graphdef, s)
            model.sampler, model.sample_steps = sampler, steps
            return model.sample(key, count)
        return jax.jit(run, static_argnums=2)

    key = jax.random.key(0)
    runs = [("dpmpp_2m_sde", _DPM_SDE_STEPS.value, _DPM_SDE_STEPS.value, n),
            ("dpmpp_2m", _DPM_STEPS.value, _DPM_STEPS.value, n), ("heun", _HEUN_STEPS.value, 2 * _HEUN_STEPS.value, n),
            ("ddim", _DDIM_STEPS.value, _DDIM_STEPS.value, n),
            ("ancestral", _ANCESTRAL_STEPS.value, _ANCESTRAL_STEPS.value, _N_ANCESTRAL.value)]
    evaluations_of = {sampler: e for sampler, _, e, _ in runs}
    seconds = {}
    for sampler, steps, evaluations, count in runs:
        t = timed(f"diffusion {sampler}", sample_with(sampler, steps), state, key, count)
        seconds[sampler] = t * n / count
        scaled = f" (timed on {count}, scaled)" if count != n else ""
        print(f"  {sampler + ':':14} {steps:4d} steps, {evaluations:4d} network evaluations: {n} latents in "
              f"{seconds[sampler]:.2f} s{scaled} = {n / seconds[sampler]:.0f} samples/s")
    for fast in ("dpmpp_2m_sde", "dpmpp_2m", "heun", "ddim"):
        print(f"summary diffusion: {n} latents in {seconds[fast]:.2f} s ({fast}, {evaluations_of[fast]} evaluations) vs "
              f"{seconds['ancestral']:.1f} s (ancestral, {_ANCESTRAL_STEPS.value} steps): "
              f"{seconds['ancestral'] / seconds[fast]:.1f}x")


if __name__ == "__main__":
    cli.run(main)
