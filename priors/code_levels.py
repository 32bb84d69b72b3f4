"""A hierarchy of code maps (VQ-VAE-2) as the one integer array per example the pipeline keeps.

A VQ-VAE-2 (`vae.models.vq2`) encodes an image into several maps of codes, coarse to fine:
  levels = (("top", (7, 7)), ("bottom", (14, 14)))
Its latent is ONE int32 array (B, L), L = sum of h * w over the levels: the first level's map
in raster order, then the next one's, and so on. Stage 2's encoding of the dataset, the report,
`vae.load` and the uniform prior all see an ordinary code sequence; the levels are only a way
of reading it. Raster order over that sequence is VQ-VAE-2's sampling order (the top map
first, then the bottom one), so a prior over it factorizes as p(top) p(bottom | top).

`split` and `join` are pure functions between the sequence and the named maps. The module
lives in priors/ so that both the model (vae/models may import priors) and the two-level
prior (priors/ imports nothing from vae) share it.
"""

from __future__ import annotations

import math

import jax.numpy as jnp


def normalize(levels) -> tuple[tuple[str, tuple[int, int]], ...]:
    """levels as a tuple of (name, (h, w)) with ints; a ValueError if it cannot describe maps."""
    out = tuple((str(name), tuple(int(s) for s in shape)) for name, shape in levels)
    if not out:
        raise ValueError("code levels: expected at least one (name, (h, w)) level; got none")
    names = [name for name, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"code levels: the level names must differ; got {names}")
    for name, shape in out:
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"code levels: level {name!r} has shape {shape}; expected (h, w) with h, w >= 1")
    return out


def length(levels) -> int:
    """L: how many codes the flat sequence of the levels holds."""
    return sum(math.prod(shape) for _, shape in normalize(levels))


def split(codes, levels) -> dict:
    """codes (B, L) -> {name: (B, h, w)} in level order."""
    levels = normalize(levels)
    if codes.shape[-1] != length(levels):
        raise ValueError(f"code levels {levels} hold {length(levels)} codes per example; got shape {codes.shape}")
    maps, start = {}, 0
    for name, (hgt, wid) in levels:
        maps[name] = codes[:, start : start + hgt * wid].reshape(codes.shape[0], hgt, wid)
        start += hgt * wid
    return maps


def join(maps: dict, levels) -> jnp.ndarray:
    """{name: (B, h, w)} -> codes (B, L): each level's map in raster order, in level order."""
    levels = normalize(levels)
    parts = []
    for name, shape in levels:
        level_map = maps[name]
        if tuple(level_map.shape[1:]) != shape:
            raise ValueError(f"code level {name!r} is {shape}; got a map of shape {tuple(level_map.shape)}")
        parts.append(level_map.reshape(level_map.shape[0], -1))
    return jnp.concatenate(parts, axis=1)
