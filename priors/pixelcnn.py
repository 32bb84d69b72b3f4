"""Gated PixelCNN prior over spatial latents (H, W, C) (van den Oord et al. 2016).

Order: positions in raster order, channels in order within a position. The density of each
element is a continuous mixture of logistics (`priors.mixture`).

Causality without masks, by shifting (as PixelCNN++ does):
  * the vertical stack v starts as down_shift(conv(z)), so v[i, j] sees rows < i only;
    its later convs look at rows <= i of v, which keeps that property;
  * the horizontal stack h starts as v's link plus right_shift(row_conv(z)), so h[i, j]
    sees rows < i and (i, < j); its later convs are 1 x (k//2+1) on the row, left of and at j;
  * v feeds h at the same position (no blind spot: v covers everything above, left to right).
Within a position, channel c's parameters add a strictly lower-triangular linear map of the
channels < c to the position's features (`channel_head`).

Sampling is a `lax.fori_loop` under jit in two modes that draw identical samples for a key:
  * 'naive': the whole network on the whole canvas for every element (H*W*C passes);
  * 'fast':  per row, the vertical stack once; per position, the horizontal stack on that
    one row; per channel, the channel head at that one position. Every stack is row-local
    once v is known, so these are the same numbers computed on less data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from priors import mixture


def down_shift(x):
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def right_shift(x):
    return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


class DownConv(nnx.Module):
    """Output (i, j) sees input rows i-kh+1..i, columns j-kw//2..j+kw//2."""

    def __init__(self, cin, cout, kh, kw, *, rngs):
        self.kh, self.kw = kh, kw
        self.conv = nnx.Conv(cin, cout, (kh, kw), padding="VALID", rngs=rngs)

    def __call__(self, x):
        return self.conv(jnp.pad(x, ((0, 0), (self.kh - 1, 0), (self.kw // 2, self.kw // 2), (0, 0))))


class RightConv(nnx.Module):
    """Output (i, j) sees input row i, columns j-kw+1..j."""

    def __init__(self, cin, cout, kw, *, rngs):
        self.kw = kw
        self.conv = nnx.Conv(cin, cout, (1, kw), padding="VALID", rngs=rngs)

    def __call__(self, x):
        return self.conv(jnp.pad(x, ((0, 0), (0, 0), (self.kw - 1, 0), (0, 0))))


def gate(x):
    a, b = jnp.split(x, 2, axis=-1)
    return jnp.tanh(a) * jax.nn.sigmoid(b)


class GatedLayer(nnx.Module):
    def __init__(self, features, kernel_size, *, rngs):
        f, k = features, kernel_size
        self.v_conv = DownConv(f, 2 * f, k // 2 + 1, k, rngs=rngs)
        self.v_to_h = nnx.Linear(2 * f, 2 * f, rngs=rngs)
        self.h_conv = RightConv(f, 2 * f, k // 2 + 1, rngs=rngs)
        self.h_out = nnx.Linear(f, f, rngs=rngs)

    def vertical(self, v):
        """(v_next, link to h) on whole columns."""
        v_pre = self.v_conv(v)
        return v + gate(v_pre), self.v_to_h(v_pre)

    def horizontal(self, h, link):
        """Row-local: needs only the rows of h and of the link it is given."""
        return h + self.h_out(gate(self.h_conv(h) + link))


class PixelCNN(nnx.Module):
    def __init__(self, latent_shape, features=64, num_layers=4, kernel_size=3, num_mixtures=5, *, rngs: nnx.Rngs):
        if len(latent_shape) != 3:
            raise ValueError(f"PixelCNN models spatial latents (h, w, c); got {tuple(latent_shape)}: use 'made'")
        self.latent_shape = tuple(latent_shape)
        self.num_mixtures = num_mixtures
        c, f, k = latent_shape[-1], features, kernel_size
        self.v_in = DownConv(c, f, k // 2 + 1, k, rngs=rngs)
        self.v_in_to_h = nnx.Linear(f, f, rngs=rngs)
        self.h_in = RightConv(c, f, k // 2 + 1, rngs=rngs)
        self.layers = nnx.List([GatedLayer(f, k, rngs=rngs) for _ in range(num_layers)])
        # Channel head: element (p, c) sees features[p] and z[p, :c] (strictly lower mask).
        p = mixture.num_params(num_mixtures)
        self.head_in = nnx.Linear(f, f, rngs=rngs)
        self.channel_mix = nnx.Param(jax.random.normal(rngs.params(), (c, c, f)) * 0.1)
        self.head_out = nnx.Param(jax.random.normal(rngs.params(), (c, f, p)) / np.sqrt(f))
        self.head_bias = nnx.Param(mixture.initial_bias(c, num_mixtures))

    # ------------------------------------------------------------------ network pieces

    def vertical(self, z):
        """Everything the vertical stack gives h: a list of links, one per h-layer (+ input)."""
        v = down_shift(self.v_in(z))  # rows < i
        links = [self.v_in_to_h(v)]
        for layer in self.layers:
            v, link = layer.vertical(v)
            links.append(link)
        return links

    def horizontal(self, z_rows, links_rows):
        """Features per position for the given rows of z and of the vertical links."""
        h = links_rows[0] + right_shift(self.h_in(z_rows))
        for layer, link in zip(self.layers, links_rows[1:]):
            h = layer.horizontal(h, link)
        return jax.nn.gelu(self.head_in(jax.nn.gelu(h)))

    def channel_head(self, features, z_pos):
        """features (..., F), z at the same positions (..., C) -> mixture params (..., C, 3K)."""
        c = self.latent_shape[-1]
        mask = jnp.tril(jnp.ones((c, c)), k=-1)  # mask[c, d] = 1 where d < c
        mix = jnp.einsum("...d,cdf->...cf", z_pos, self.channel_mix[...] * mask[:, :, None])
        u = jax.nn.gelu(features[..., None, :] + mix)
        return jnp.einsum("...cf,cfp->...cp", u, self.head_out[...]) + self.head_bias[...]

    def params(self, z):
        """z (B, H, W, C) -> (B, H, W, C, 3K)."""
        return self.channel_head(self.horizontal(z, self.vertical(z)), z)

    # ------------------------------------------------------------------ the Prior interface

    def log_prob(self, z):
        return jnp.sum(mixture.log_prob(self.params(z), z).reshape(z.shape[0], -1), axis=-1)

    def sample(self, key, n: int, mode: str = "fast"):
        if mode == "naive":
            return self._sample_naive(key, n)
        if mode == "fast":
            return self._sample_fast(key, n)
        raise ValueError(f"sampling mode {mode!r}; expected 'fast' or 'naive'")

    def _draw(self, key, element, params):
        return mixture.sample(jax.random.fold_in(key, element), params)

    def _sample_naive(self, key, n):
        hgt, wid, ch = self.latent_shape

        def body(e, z):
            i, rest = jnp.divmod(e, wid * ch)
            j, c = jnp.divmod(rest, ch)
            p = self.params(z)[:, i, j, c]
            return z.at[:, i, j, c].set(self._draw(key, e, p))

        return jax.lax.fori_loop(0, hgt * wid * ch, body, jnp.zeros((n, *self.latent_shape)))

    def _sample_fast(self, key, n):
        hgt, wid, ch = self.latent_shape

        def row(i, z):
            links = [jax.lax.dynamic_slice_in_dim(l, i, 1, axis=1) for l in self.vertical(z)]

            def position(j, z):
                z_row = jax.lax.dynamic_slice_in_dim(z, i, 1, axis=1)
                feat = jax.lax.dynamic_index_in_dim(self.horizontal(z_row, links)[:, 0], j, axis=1, keepdims=False)

                def channel(c, z):
                    z_pos = z[:, i, j]
                    p = self.channel_head(feat, z_pos)[:, c]
                    return z.at[:, i, j, c].set(self._draw(key, (i * wid + j) * ch + c, p))

                return jax.lax.fori_loop(0, ch, channel, z)

            return jax.lax.fori_loop(0, wid, position, z)

        return jax.lax.fori_loop(0, hgt, row, jnp.zeros((n, *self.latent_shape)))
