"""The optimizer every gradient fit uses (VAE, priors, classifier), and its one update.

Adam with a warmup-cosine schedule (down to 10% of the peak rate) after global-norm
clipping. A train state is the pytree {params, opt_state, step}: what the loop checkpoints.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def make_optimizer(fit_config, total_steps: int) -> optax.GradientTransformation:
    """From a config section with learning_rate, warmup_steps and grad_clip_norm."""
    warmup = min(fit_config.warmup_steps, max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, fit_config.learning_rate, warmup, max(total_steps, warmup + 1), end_value=0.1 * fit_config.learning_rate
    )
    return optax.chain(optax.clip_by_global_norm(fit_config.grad_clip_norm), optax.adam(schedule))


def init_state(tx: optax.GradientTransformation, params) -> dict:
    return {"params": params, "opt_state": tx.init(params), "step": jnp.asarray(0, jnp.int32)}


def apply_gradients(tx: optax.GradientTransformation, state: dict, grads) -> dict:
    """One optimizer step: the next {params, opt_state, step}."""
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state, "step": state["step"] + 1}
