"""The entry points set XLA:CPU's convolution default before JAX's backend starts (vae/xla_flags.py)."""

import os
from importlib import metadata

import jax
import jax.numpy as jnp
import pytest

from vae import xla_flags


def test_user_flag_wins_and_others_are_kept(monkeypatch):
    name = xla_flags.CPU_CONV_FLAG.split("=")[0]
    monkeypatch.setenv("XLA_FLAGS", f"{name}=+individual_convolution")
    xla_flags.apply_cpu_defaults()
    assert os.environ["XLA_FLAGS"] == f"{name}=+individual_convolution"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    xla_flags.apply_cpu_defaults()
    flags = os.environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_force_host_platform_device_count=2"
    version = tuple(int(p) for p in metadata.version("jaxlib").split(".")[:3])
    assert (xla_flags.CPU_CONV_FLAG in flags) == (version >= xla_flags.FLAG_SINCE)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU setting")
def test_cpu_convolutions_run_on_xla_not_ynn():
    """The flag reached the backend: a compiled convolution is no YNN fusion."""
    if tuple(int(p) for p in metadata.version("jaxlib").split(".")[:3]) < xla_flags.FLAG_SINCE:
        pytest.skip("jaxlib older than the flag")
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    hlo = conv.lower(jnp.ones((128, 14, 14, 32)), jnp.ones((3, 3, 32, 128))).compile().as_text()  # the VAE's up2
    assert "convolution(" in hlo and "ynn_fusion" not in hlo
