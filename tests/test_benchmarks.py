"""The throughput benchmarks time steady-state steps only: `benchmarks/peak.no_compilation`
catches a compile in a timed region, and the prior-fit benchmark, timed under it with one call
per epoch (the accelerator setting) and data-parallel, compiles its fit chunk once."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from benchmarks import peak
from tests.conftest import REPO
from vae.parallel import sharding


def test_no_compilation_raises_on_a_compile_and_passes_a_warm_call():
    double = jax.jit(lambda x: 2 * x)
    with pytest.raises(RuntimeError, match=r"compiled \d+ program"):
        with peak.no_compilation("double"):
            double(jnp.ones(3)).block_until_ready()
    with peak.no_compilation("double"):  # compiled above: nothing new
        double(jnp.ones(3)).block_until_ready()


def test_no_compilation_catches_a_state_placed_otherwise_than_the_step_returns_it():
    """The benchmark bug it guards against: a state placed on the default device, a step that
    returns it replicated over the mesh, so the second call compiles again."""
    mesh = sharding.make_mesh(1)
    step = jax.jit(lambda s: jax.lax.with_sharding_constraint(s + 1, sharding.replicated(mesh)))
    state = step(jnp.zeros(4))
    with pytest.raises(RuntimeError, match="compiled"):
        with peak.no_compilation("step"):
            step(state).block_until_ready()
    placed = sharding.put(jnp.zeros(4), sharding.replicated(mesh))
    state = step(placed)
    with peak.no_compilation("step"):
        step(step(state)).block_until_ready()


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU-sized run of the benchmark")
def test_prior_fit_benchmark_compiles_its_chunk_once_with_one_call_per_epoch():
    """On 2 forced host devices, so the data-parallel placement train.py uses is the one timed."""
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"}
    result = subprocess.run(
        [sys.executable, "benchmarks/prior_fit_throughput.py", "--config", "configs/fashion_mnist.py:smoke",
         "--latents", "256", "--epochs", "2", "--steps_per_call", "0"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SUMMARY prior_fit_throughput prior=pixelcnn device=cpu devices=2:" in result.stdout


def test_report_compiles_its_iwae_and_sampler_once_across_calls():
    """sample.py scores and samples once per seed, and iwae_eval.py times a call after a
    warm-up: the second call of each must reuse the first one's program."""
    import priors
    from configs import mnist_mlp
    from vae import models
    from vae.evaluation import bounds, sampling

    config = mnist_mlp.get_config("smoke")
    vae = models.create_vae(config)
    prior = priors.StandardNormal(vae.latent_shape)
    x = jax.random.bernoulli(jax.random.key(0), 0.3, (4, 28, 28, 1)).astype(jnp.float32)
    first = bounds.iwae_under_priors(vae, [prior], x, jax.random.key(1), k=2, batch=2)
    sampling.draw_samples(prior, jax.random.key(2), 6, batch=3)
    with peak.no_compilation("the second report calls"):
        again = bounds.iwae_under_priors(models.create_vae(config), [prior], x, jax.random.key(1), k=2, batch=2)
        sampling.draw_samples(prior, jax.random.key(3), 6, batch=3)
    assert all((a == b).all() for a, b in zip(first, again))  # a VAE built alike: the same numbers


@pytest.mark.slow  # ~20 s on the 2-core CPU
def test_diffusion_sampling_benchmark_times_every_sampler_without_compiling_in_the_timed_call():
    result = subprocess.run(
        [sys.executable, "benchmarks/diffusion_sampling.py", "--config", "configs/fashion_mnist.py:smoke",
         "--n", "64", "--dpm_sde_steps", "2", "--dpm_steps", "3", "--heun_steps", "2", "--ddim_steps", "3", "--ancestral_steps", "4",
         "--n_ancestral", "32"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [line for line in result.stdout.splitlines() if line.startswith("summary diffusion:")]
    assert [s.split("(")[1].split(",")[0] for s in summaries] == ["dpmpp_2m_sde", "dpmpp_2m", "heun", "ddim"], result.stdout
    assert "dpmpp_2m_sde, 2 evaluations" in summaries[0] and "heun, 4 evaluations" in summaries[2]
