"""The gated PixelCNN body the two PixelCNN priors share (`priors.pixelcnn`).

Causality without masks, by shifting (as PixelCNN++ does), with a full receptive field:
  * the vertical stack v starts as down_shift(conv(z)) whose kernel spans H rows and 2W-1
    columns, so v[i, j] sees every element of every row < i and nothing of row i; its later
    convs (k//2+1 rows, k columns) look at rows <= i of v, which keeps that property;
  * the horizontal stack h starts as v's link plus right_shift(row_conv(z)) with a row kernel
    W wide, so h[i, j] sees every (i, < j); its later convs are 1 x (k//2+1) on the row, left
    of and at j;
  * v feeds h at the same position, so every conditional sees every earlier position at any
    depth (tests/priors/test_priors.py checks it element by element, perturbing each one). The input
    convs cost one (H x 2W-1) and one (1 x W) kernel; the layers stay small.
Training-time dropout (config `dropout`) acts on each gated layer's residual branch when
`log_prob` is given a `dropout_key`.
Conditioning (the conditional PixelCNN's form; `priors.two_level`'s bottom map given the top
one): after `condition_on(channels)`, `features`/`sample` take `cond` (B, H, W, channels), any
function of what is conditioned on; a learned linear map of cond at (i, j) is added to every
v->h link at (i, j), i.e. inside the gate of every horizontal layer there. It is added at the
position itself, never shifted, so position (i, j) sees cond everywhere and the codes only
before it: the masks over its own positions stay causal.

Sampling is a `lax.fori_loop` under jit in two modes that draw identical samples for a key:
  * 'naive': the whole network on the whole canvas for every position (H*W passes);
  * 'fast':  every layer's activations cached; per row, each vertical layer computes that
    row only; per position, each horizontal layer that position only, then the head draws
    the position (channel by channel, or one code). The same numbers on much less data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from priors import mixture


def down_shift(x):
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def right_shift(x):
    return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


class DownConv(nnx.Module):
    """Output (i, j) sees input rows i-kh+1..i, columns j-kw//2..j+kw//2."""

    def __init__(self, cin, cout, kh, kw, *, rngs, as_matmul=False):
        self.kh, self.kw, self.as_matmul = kh, kw, as_matmul
        self.conv = nnx.Conv(cin, cout, (kh, kw), padding="VALID", rngs=rngs)

    def __call__(self, x):
        x = jnp.pad(x, ((0, 0), (self.kh - 1, 0), (self.kw // 2, self.kw // 2), (0, 0)))
        return conv_as_matmul(self.conv, x) if self.as_matmul else self.conv(x)

    def last_row(self, rows):
        """The output row whose window is exactly `rows` (B, kh, W, C) -> (B, 1, W, C')."""
        return conv_as_matmul(self.conv, jnp.pad(rows, ((0, 0), (0, 0), (self.kw // 2, self.kw // 2), (0, 0))))


class RightConv(nnx.Module):
    """Output (i, j) sees input row i, columns j-kw+1..j."""

    def __init__(self, cin, cout, kw, *, rngs, as_matmul=False):
        self.kw, self.as_matmul = kw, as_matmul
        self.conv = nnx.Conv(cin, cout, (1, kw), padding="VALID", rngs=rngs)

    def __call__(self, x):
        x = jnp.pad(x, ((0, 0), (0, 0), (self.kw - 1, 0), (0, 0)))
        return conv_as_matmul(self.conv, x) if self.as_matmul else self.conv(x)


def conv_as_matmul(conv: nnx.Conv, x):
    """A VALID, stride-1 `conv` applied to x (B, H', W', C): (B, H'-kh+1, W'-kw+1, C'), as one
    matmul of the kh*kw shifted windows concatenated along channels. XLA:CPU runs this faster
    than its convolution where the input has few channels (the input convs over the latent's
    c channels) and inside the fast sampler's loops, where small convolutions are slower."""
    kh, kw, cin, cout = conv.kernel.shape
    height, width = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    patches = jnp.concatenate([x[:, dy : dy + height, dx : dx + width] for dy in range(kh) for dx in range(kw)], axis=-1)
    return patches @ conv.kernel[...].reshape(kh * kw * cin, cout) + conv.bias[...]


def gate(x):
    a, b = jnp.split(x, 2, axis=-1)
    return jnp.tanh(a) * jax.nn.sigmoid(b)


class GatedLayer(nnx.Module):
    def __init__(self, features, kernel_size, dropout=0.0, *, rngs):
        f, k = features, kernel_size
        self.dropout = dropout
        self.v_conv = DownConv(f, 2 * f, k // 2 + 1, k, rngs=rngs)
        self.v_to_h = nnx.Linear(2 * f, 2 * f, rngs=rngs)
        self.h_conv = RightConv(f, 2 * f, k // 2 + 1, rngs=rngs)
        self.h_out = nnx.Linear(f, f, rngs=rngs)

    def vertical(self, v, key=None):
        """(v_next, link to h) on whole columns."""
        v_pre = self.v_conv(v)
        return v + mixture.dropout(key, gate(v_pre), self.dropout), self.v_to_h(v_pre)

    def vertical_row(self, v_rows):
        """The same for the last of kh rows of v only: (B, kh, W, F) -> two (B, 1, W, .)."""
        v_pre = self.v_conv.last_row(v_rows)
        return v_rows[:, -1:] + gate(v_pre), self.v_to_h(v_pre)

    def horizontal_position(self, h_cols, link):
        """h at the last of kw columns only: (B, 1, kw, F), link (B, 1, 1, 2F) -> (B, 1, 1, F)."""
        return h_cols[:, :, -1:] + self.h_out(gate(conv_as_matmul(self.h_conv.conv, h_cols) + link))

    def horizontal(self, h, link, key=None):
        """Row-local: needs only the rows of h and of the link it is given."""
        return h + mixture.dropout(key, self.h_out(gate(self.h_conv(h) + link)), self.dropout)


class GatedPixelCNN(nnx.Module):
    """The network body both PixelCNN priors share: an input of `in_channels` per position ->
    features per position that see exactly the positions before it in raster order. Subclasses
    say what the input is (`_input`), what the head makes of the features, and how a sampler
    fills one position (`_fill`)."""

    def __init__(self, grid, in_channels, features, num_layers, kernel_size, dropout, *, rngs: nnx.Rngs):
        if num_layers < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"PixelCNN needs num_layers >= 1 and an odd kernel_size; got {num_layers}, {kernel_size}")
        hgt, wid = grid
        f, k = features, kernel_size
        # The input convs see the whole grid through few channels: patch matmuls (conv_as_matmul)
        self.v_in = DownConv(in_channels, f, hgt, 2 * wid - 1, rngs=rngs, as_matmul=True)  # every row above, every column
        self.v_in_to_h = nnx.Linear(f, f, rngs=rngs)
        self.h_in = RightConv(in_channels, f, wid, rngs=rngs, as_matmul=True)  # every column to the left
        self.layers = nnx.List([GatedLayer(f, k, dropout, rngs=rngs) for _ in range(num_layers)])

    def condition_on(self, channels: int, *, rngs: nnx.Rngs):
        """Adds the maps from `channels` of conditioning features to every link (see the module doc)."""
        f = self.v_in.conv.out_features
        widths = [f] + [2 * f] * len(self.layers)
        self.cond_links = nnx.List([nnx.Linear(channels, w, rngs=rngs) for w in widths])

    def _conditioned(self, links, cond):
        """links plus each one's map of `cond` (the same rows as the links), or links if cond is None."""
        if cond is None:
            return links
        return [link + proj(cond) for link, proj in zip(links, self.cond_links)]

    # ------------------------------------------------------------------ network pieces

    def vertical(self, u, key=None, cond=None):
        """Everything the vertical stack gives h: a list of links, one per h-layer (+ input)."""
        v = down_shift(self.v_in(u))  # rows < i
        links = [self.v_in_to_h(v)]
        for layer, k in zip(self.layers, mixture.dropout_keys(key, len(self.layers))):
            v, link = layer.vertical(v, k)
            links.append(link)
        return self._conditioned(links, cond)

    def horizontal(self, u_rows, links_rows, key=None):
        """Features per position for the given rows of the input and of the vertical links."""
        h = links_rows[0] + right_shift(self.h_in(u_rows))
        for layer, link, k in zip(self.layers, links_rows[1:], mixture.dropout_keys(key, len(self.layers))):
            h = layer.horizontal(h, link, k)
        return self.head.features(h)

    def features(self, z, dropout_key=None, cond=None):
        """z (B, H, W, ...) -> the head's features (B, H, W, F); dropout in the layers when given a
        key; `cond` (B, H, W, C) after `condition_on`."""
        kv, kh = mixture.dropout_keys(dropout_key, 2)
        u = self._input(z)
        return self.horizontal(u, self.vertical(u, kv, cond), kh)

    # ------------------------------------------------------------------ sampling

    def sample(self, key, n: int, mode: str = "fast", *, temperature=1.0, cond=None):
        """n maps drawn position by position; `temperature` as the subclass's `_fill` reads it;
        `cond` (n, H, W, C) after `condition_on`."""
        if mode == "naive":
            return self._sample_naive(key, n, temperature, cond)
        if mode == "fast":
            return self._sample_fast(key, n, temperature, cond)
        raise ValueError(f"sampling mode {mode!r}; expected 'fast' or 'naive'")

    def _sample_naive(self, key, n, temperature, cond=None):
        hgt, wid = self.latent_shape[:2]

        def body(e, z):
            i, j = jnp.divmod(e, wid)
            return self._fill(self.features(z, cond=cond)[:, i, j], z, i, j, key, temperature)

        return jax.lax.fori_loop(0, hgt * wid, body, self._canvas(n))

    def _sample_fast(self, key, n, temperature, cond=None):
        """Row by row, carrying for every layer only the window its causal kernel needs:
        the last kh-1 rows of each vertical layer's input, and within a row the last kw-1
        columns of each horizontal layer's input. The input convs read the input itself: the H
        rows above row i, and the W columns left of (i, j). Each layer then computes one new row
        (or one new position) per step: the same numbers as `features`, on much less data."""
        hgt, wid = self.latent_shape[:2]
        f = self.v_in.conv.out_features
        kh, kw = self.layers[0].v_conv.kh, self.layers[0].h_conv.kw  # the layers' windows
        num_layers = len(self.layers)

        def row(i, carry):
            z, v_prev = carry  # v_prev[l]: rows i-kh+1 .. i-1 of layer l's input (B, kh-1, W, F)
            up = jnp.pad(self._input(z), ((0, 0), (hgt, 0), (0, 0), (0, 0)))
            v = self.v_in.last_row(jax.lax.dynamic_slice_in_dim(up, i, hgt, axis=1))  # input rows i-H .. i-1
            v = jnp.where(i == 0, 0.0, v)  # down_shift: row 0 of v_0 sees nothing
            links, v_next = [self.v_in_to_h(v)], []
            for l, layer in enumerate(self.layers):
                rows = jnp.concatenate([v_prev[l], v], axis=1)  # rows i-kh+1 .. i
                v_next.append(rows[:, 1:])
                v, link = layer.vertical_row(rows)
                links.append(link)
            cond_row = None if cond is None else jax.lax.dynamic_slice_in_dim(cond, i, 1, axis=1)
            links = self._conditioned(links, cond_row)

            def position(j, carry):
                z, h_prev = carry  # h_prev[l]: columns j-kw+1 .. j-1 of layer l's input
                u_row = jnp.pad(self._input(jax.lax.dynamic_slice_in_dim(z, i, 1, axis=1)),
                                ((0, 0), (0, 0), (wid, 0), (0, 0)))
                h_in = conv_as_matmul(self.h_in.conv, jax.lax.dynamic_slice_in_dim(u_row, j, wid, axis=2))  # cols j-W .. j-1
                h = jax.lax.dynamic_slice_in_dim(links[0], j, 1, axis=2) + jnp.where(j == 0, 0.0, h_in)
                h_next = []
                for l, layer in enumerate(self.layers):
                    cols = jnp.concatenate([h_prev[l], h], axis=2)
                    h_next.append(cols[:, :, 1:])
                    h = layer.horizontal_position(cols, jax.lax.dynamic_slice_in_dim(links[l + 1], j, 1, axis=2))
                return self._fill(self.head.features(h)[:, 0, 0], z, i, j, key, temperature), h_next

            h0 = [jnp.zeros((n, 1, kw - 1, f)) for _ in range(num_layers)]
            z, _ = jax.lax.fori_loop(0, wid, position, (z, h0))
            return z, v_next

        v0 = [jnp.zeros((n, kh - 1, wid, f)) for _ in range(num_layers)]
        z, _ = jax.lax.fori_loop(0, hgt, row, (self._canvas(n), v0))
        return z
