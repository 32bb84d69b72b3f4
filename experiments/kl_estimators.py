"""Analytic vs single-sample Monte-Carlo KL: final ELBO and gradient variance.

  python experiments/kl_estimators.py [--epochs 10] [--root runs/experiments/kl_estimators]
      [--idx_dir ../shared/data/mnist]

Trains the MLP VAE of configs/mnist_mlp.py twice with the same seed and budget, with
`vae.kl=analytic` and `vae.kl=mc` (train.py's path), and reports each run's final test ELBO.
Then, at each run's final parameters and on one fixed batch of 128 test images, draws the
gradient of the training loss 200 times (fresh binarization and z each time) under both
estimators and reports the total gradient variance (trace of the covariance, summed over all
parameters) and the same relative to the squared norm of the mean gradient.
Writes ROOT/kl_estimators.json.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx

from configs import mnist_mlp
from vae import cli
from vae.data import input_pipeline
from vae.models import losses
from vae.train import stages
from vae.workdir import Workdir

DEFAULT_IDX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "mnist")

_EPOCHS = flags.DEFINE_integer("epochs", 10, "Training epochs of each run.")
_DRAWS = flags.DEFINE_integer("draws", 200, "Gradient draws per variance estimate.")
_ROOT = flags.DEFINE_string("root", "runs/experiments/kl_estimators", "Directory of the two runs and kl_estimators.json.")
_IDX_DIR = flags.DEFINE_string("idx_dir", DEFAULT_IDX if os.path.isdir(DEFAULT_IDX) else "",
                               "MNIST IDX directory (config.data.idx_dir).")


def gradient_variance(model, images_uint8, kl: str, draws: int, seed: int = 0) -> dict:
    """Total variance of the minibatch gradient over the loss's own randomness."""
    graphdef, params = nnx.split(model)

    def loss(params, key):
        key_bin, key_z = jax.random.split(key)
        x = input_pipeline.prepare_images(images_uint8, key_bin, True)
        mean, logvar, z, out = nnx.merge(graphdef, params)(x, key_z)
        return jnp.mean(losses.elbo(x, mean, logvar, z, out, model.likelihood, kl=kl)["loss"])

    @jax.jit
    def moments(params, keys):
        def body(acc, key):  # running sums of g and g^2, so memory does not grow with draws
            g = jax.tree.leaves(jax.grad(loss)(params, key))
            return ([a + b for a, b in zip(acc[0], g)], [a + b * b for a, b in zip(acc[1], g)]), None
        zeros = [jnp.zeros_like(x) for x in jax.tree.leaves(params)]
        (s1, s2), _ = jax.lax.scan(body, (zeros, zeros), keys)
        return s1, s2

    s1, s2 = moments(params, jax.random.split(jax.random.key(seed), draws))
    mean = [a / draws for a in s1]
    var = sum(float(jnp.sum(b / draws - m * m)) * draws / (draws - 1) for b, m in zip(s2, mean))
    mean_sq = sum(float(jnp.sum(m * m)) for m in mean)
    return {"total_variance": var, "mean_gradient_sq_norm": mean_sq, "relative_variance": var / mean_sq}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    results = {"command": " ".join(sys.argv)}
    batch = None
    for kl in ("analytic", "mc"):
        config = mnist_mlp.get_config()
        config.data.idx_dir = _IDX_DIR.value
        config.train.num_epochs = _EPOCHS.value
        config.vae.kl = kl
        config.stage = "vae"
        wd = Workdir(os.path.join(_ROOT.value, kl))
        stages.train_and_evaluate(config, wd.path)
        if batch is None:
            batch = input_pipeline.load_dataset(config.data).test.images[:128]
        test = [m for m in wd.read_metrics() if m["split"] == "test" and "elbo" in m][-1]
        model, _, _ = wd.restore_vae(config, kind="latest")
        results[kl] = {"final_test_elbo": test["elbo"], "final_test_kl": test["kl"],
                       "gradient_at_these_params": {est: gradient_variance(model, batch, est, _DRAWS.value)
                                                    for est in ("analytic", "mc")}}
    with open(os.path.join(_ROOT.value, "kl_estimators.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("| trained with | final test ELBO | grad variance (analytic KL) | grad variance (MC KL) | ratio MC/analytic |")
    print("|---|---|---|---|---|")
    for kl in ("analytic", "mc"):
        g = results[kl]["gradient_at_these_params"]
        print(f"| kl={kl} | {results[kl]['final_test_elbo']:.2f} | {g['analytic']['total_variance']:.4g} "
              f"(rel {g['analytic']['relative_variance']:.3g}) | {g['mc']['total_variance']:.4g} "
              f"(rel {g['mc']['relative_variance']:.3g}) | {g['mc']['total_variance'] / g['analytic']['total_variance']:.2f} |")
    print(f"wrote {_ROOT.value}/kl_estimators.json")


if __name__ == "__main__":
    cli.run(main)
