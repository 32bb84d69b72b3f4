"""Noise schedules of the diffusion prior (`priors.diffusion`), as in VDM (Kingma et al. 2021).

A schedule is gamma(t) = -log SNR(t) on t in [0, 1], increasing; the forward process is
variance preserving: alpha_t^2 = sigmoid(-gamma(t)), sigma_t^2 = sigmoid(gamma(t)). Both
schedules here are written gamma(t) = gamma_0 + (gamma_1 - gamma_0) u(t) with a shape u
increasing from u(0) = 0 to u(1) = 1, because the two parts play different roles:

  * the endpoints gamma_0, gamma_1 are all the continuous-time bound depends on (changing the
    variable to gamma, the diffusion loss is an integral over [gamma_0, gamma_1]);
  * the shape u only moves where the Monte-Carlo draws of t land: it changes the variance of
    the bound's estimate, and where the samplers' grid (uniform in t) puts its steps.

  FixedLinear    u(t) = t: VDM's fixed linear log-SNR schedule from gamma_min to gamma_max.
  LearnedShape   VDM's monotone network (its `NoiseSchedule_NNet`): g(t) = l1(t) + l3(phi(l2(t))) / n
                 with non-negative weights (|W|) and phi = 2 sigmoid - 1, so g increases in t;
                 u(t) = (g(t) - g(0)) / (g(1) - g(0)). It starts near linear (l1 dominates).
                 Stage 2 trains its weights to reduce the variance of the bound's estimate
                 (VDM sec. 3.5: their expected bound gradient is zero), see `variance_gradient`.
                 `learn_endpoints`: gamma_0 and gamma_1 are parameters too, trained on the
                 bound itself; otherwise fixed at gamma_min, gamma_max.

`variance_gradient` is the custom gradient that does it in the one backward pass of the fit:
the network and the endpoints get the gradient of the mean loss, the shape's values at the
sampled times that of the loss's empirical variance.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx


class FixedLinear(nnx.Module):
    learned_shape = False

    def __init__(self, gamma_min: float, gamma_max: float):
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)

    def endpoints(self):
        return jnp.asarray(self.gamma_min), jnp.asarray(self.gamma_max)

    def shape(self, t):
        """(u(t), du/dt) for t of any shape."""
        return t, jnp.ones_like(t)


class MonotoneLinear(nnx.Module):
    """A dense layer with weights |W| >= 0: increasing in every input (VDM's DenseMonotone)."""

    def __init__(self, features_in, features_out, kernel_init, use_bias=True, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(kernel_init(rngs.params(), (features_in, features_out)))
        self.bias = nnx.Param(jnp.zeros((features_out,))) if use_bias else None

    def __call__(self, x):
        y = x @ jnp.abs(self.kernel[...])
        return y if self.bias is None else y + self.bias[...]


class LearnedShape(nnx.Module):
    learned_shape = True

    def __init__(self, gamma_min: float, gamma_max: float, learn_endpoints: bool = False, hidden: int = 1024, *,
                 rngs: nnx.Rngs):
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        self.hidden = int(hidden)
        # Near linear at first, yet free to bend: l1 at unit slope, the non-linear part ~0.1 of it.
        # (VDM starts l1 at slope gamma_max - gamma_min = 18.3 and l3 at N(0, 1): the curve then
        # bends by under 1% in stage 2's few thousand Adam steps, measured on the 2-D mixture.)
        self.l1 = MonotoneLinear(1, 1, nnx.initializers.constant(1.0), rngs=rngs)
        self.l2 = MonotoneLinear(1, self.hidden, nnx.initializers.normal(1.0), rngs=rngs)
        self.l3 = MonotoneLinear(self.hidden, 1, nnx.initializers.normal(0.1), use_bias=False, rngs=rngs)
        if learn_endpoints:  # gamma_1 = gamma_0 + exp(log_span) > gamma_0
            self.gamma_0 = nnx.Param(jnp.asarray(self.gamma_min))
            self.log_span = nnx.Param(jnp.log(jnp.asarray(self.gamma_max - self.gamma_min)))
        else:
            self.gamma_0 = self.log_span = None

    def endpoints(self):
        if self.gamma_0 is None:
            return jnp.asarray(self.gamma_min), jnp.asarray(self.gamma_max)
        return self.gamma_0[...], self.gamma_0[...] + jnp.exp(self.log_span[...])

    def _raw(self, t):
        t = t.reshape(-1, 1)
        h = 2.0 * jax.nn.sigmoid(self.l2(2.0 * t - 1.0)) - 1.0
        return (self.l1(t) + self.l3(h) / self.hidden)[:, 0]

    def shape(self, t):
        """(u(t), du/dt) for t of any shape: the raw monotone curve rescaled to run from 0 to 1."""
        raw, slope = jax.jvp(self._raw, (t.reshape(-1),), (jnp.ones(t.size, t.dtype),))
        ends = self._raw(jnp.array([0.0, 1.0]))
        span = ends[1] - ends[0]
        return ((raw - ends[0]) / span).reshape(t.shape), (slope / span).reshape(t.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def variance_gradient(per_example_loss, params, shape_values, data):
    """per_example_loss(params, shape_values, data) -> (B,), where row i of each array in
    `shape_values` enters loss i only. The value is the loss; the gradient is that of the mean
    loss for `params` (and `data`), and for `shape_values` that of the batch's empirical variance
    (1/B) sum_i (L_i - mean L)^2, the mean held fixed: a schedule shape that cannot change the
    expected loss is trained to make its estimate less noisy (VDM's variance minimization)."""
    return per_example_loss(params, shape_values, data)


def _variance_gradient_fwd(per_example_loss, params, shape_values, data):
    losses, pullback = jax.vjp(per_example_loss, params, shape_values, data)
    return losses, (losses, pullback)


def _variance_gradient_bwd(per_example_loss, residuals, cotangent):
    losses, pullback = residuals
    d_params, d_shape, d_data = pullback(cotangent)
    # d/du_i of (1/B) sum_j (L_j - m)^2 = 2 (L_i - m) dL_i/du_i / B; the cotangent carries the 1/B.
    weight = 2.0 * (losses - jnp.mean(losses))
    return d_params, jax.tree.map(lambda g: g * weight, d_shape), d_data


variance_gradient.defvjp(_variance_gradient_fwd, _variance_gradient_bwd)


def build(kind: str, gamma_min: float, gamma_max: float, learn_endpoints: bool, *, rngs: nnx.Rngs):
    if not gamma_min < gamma_max:
        raise ValueError(f"config.prior.diffusion: gamma_min={gamma_min} must be below gamma_max={gamma_max}")
    if kind == "fixed":
        if learn_endpoints:
            raise ValueError("config.prior.diffusion.learn_endpoints=True needs schedule='learned'")
        return FixedLinear(gamma_min, gamma_max)
    if kind == "learned":
        return LearnedShape(gamma_min, gamma_max, learn_endpoints, rngs=rngs)
    raise ValueError(f"config.prior.diffusion.schedule={kind!r}; expected 'fixed' or 'learned'")
