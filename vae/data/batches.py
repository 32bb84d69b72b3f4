"""The order in which an epoch visits the training examples."""

from __future__ import annotations

import jax


def epoch_batch_indices(key, epoch: int, num_examples: int, batch_size: int, steps: int | None = None):
    """(steps, batch_size) example indices of epoch `epoch`: a permutation by `fold_in(key,
    epoch)`, cut into full batches (the rest is dropped)."""
    steps = num_examples // batch_size if steps is None else steps
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
    return perm[: steps * batch_size].reshape(steps, batch_size)
