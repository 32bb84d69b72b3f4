"""Prior sampling speed. Autoregressive priors: naive (whole network per element) vs each
prior's quick mode: the PixelCNN's 'fast' (row-local caches) and the transformer's 'cached'
(a KV cache). The others (the RealNVP flow: one pass; diffusion: its sampler's steps;
the VampPrior of a `config.vae.prior=vamp` VAE: one encoder pass over its pseudo-inputs):
n latents, beside one log_prob pass (diffusion's: its variational bound).

  python benchmarks/prior_sampling.py [--config configs/mnist.py] [--n 10000] [--n_naive 200]

Every mode runs in this one process on the default spatial latent of the config, with each
prior's default size; prints samples/s of each, their ratio, and the time for n latents.
Timings exclude compilation (each function is run once before it is timed;
`peak.no_compilation` checks it). For scale it also times one forward pass (log_prob) over the
same n latents: the least work any autoregressive sampler of this network can do.
"""

import os
import platform

import jax
import ml_collections
from absl import app, flags
from flax import nnx
from peak import timed

import priors
from vae import cli, models

_CONFIG = cli.define_config_file("config", "configs/mnist.py", "Experiment config file[:preset].", lock_config=True)
_N = flags.DEFINE_integer("n", 10000, "Latents drawn in fast mode (one batch).")
_N_NAIVE = flags.DEFINE_integer("n_naive", 200, "Latents drawn in naive mode.")



MODES = {"pixelcnn": "fast", "transformer": "cached"}  # each autoregressive prior's quick sampler
OTHERS = {"realnvp": "one pass", "diffusion": "Heun steps on the probability-flow ODE", "vamp": "one encoder pass"}  # non-autoregressive


def build(name, config):
    """The prior `name` at its default size; 'vamp' is the prior of a VAE trained with it."""
    if name != "vamp":
        return priors.build(name, tuple(config.vae.conv.latent_shape), config.prior)
    vamp_config = ml_collections.ConfigDict(config.to_dict())
    vamp_config.vae.prior = "vamp"
    return models.create_vae(vamp_config).prior


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, n, n_naive = _CONFIG.value, _N.value, _N_NAIVE.value
    shape = tuple(config.vae.conv.latent_shape)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} cpus, {platform.processor() or platform.machine()}")
    for name, quick in MODES.items():
        prior = priors.build(name, shape, config.prior)
        graphdef, state = nnx.split(prior)
        sample = jax.jit(lambda s, k, n, mode: nnx.merge(graphdef, s).sample(k, n, mode=mode), static_argnums=(2, 3))
        key = jax.random.key(0)
        t_naive = timed(f"{name} naive", sample, state, key, n_naive, "naive")
        t_quick = timed(f"{name} {quick}", sample, state, key, n, quick)
        # Reference: one forward pass (log_prob) over as many latents, the least work any
        # autoregressive sampler of this network can do.
        z = sample(state, key, n, quick)
        log_prob = jax.jit(lambda s, z: nnx.merge(graphdef, s).log_prob(z))
        t_pass = timed(f"{name} log_prob", log_prob, state, z)
        naive_rate, quick_rate = n_naive / t_naive, n / t_quick
        size = ", ".join(f"{k}={v}" for k, v in config.prior[name].items())
        print(f"{name} on latent {shape} ({size}; {sum(x.size for x in jax.tree.leaves(state))} parameters)")
        print(f"  naive:  {n_naive} latents in {t_naive:.2f} s = {naive_rate:.1f} samples/s")
        print(f"  {quick + ':':7} {n} latents in {t_quick:.2f} s = {quick_rate:.1f} samples/s")
        print(f"  one forward pass (log_prob) over {n} latents: {t_pass:.2f} s; {quick} sampling = "
              f"{t_quick / t_pass:.1f} passes")
        print(f"summary {name}: {quick}/naive = {quick_rate / naive_rate:.1f}x; {n} latents in {t_quick:.2f} s ({quick})")
    for name, how in OTHERS.items():
        prior = build(name, config)
        graphdef, state = nnx.split(prior)
        sample = jax.jit(lambda s, k, n: nnx.merge(graphdef, s).sample(k, n), static_argnums=2)
        log_prob = jax.jit(lambda s, z: nnx.merge(graphdef, s).log_prob(z))
        key = jax.random.key(0)
        t_sample = timed(f"{name} sample", sample, state, key, n)
        t_pass = timed(f"{name} log_prob", log_prob, state, sample(state, key, n))
        size = (", ".join(f"{k}={v}" for k, v in config.prior[name].items()) if name != "vamp"
                else f"{config.vae.vamp_components} pseudo-inputs, the VAE's encoder")
        print(f"{name} on latent {shape} ({size}; {sum(x.size for x in jax.tree.leaves(state))} parameters)")
        print(f"  {n} latents in {t_sample:.2f} s = {n / t_sample:.1f} samples/s; one log_prob pass {t_pass:.2f} s")
        print(f"summary {name}: {n} latents in {t_sample:.2f} s ({how})")


if __name__ == "__main__":
    cli.run(main)
