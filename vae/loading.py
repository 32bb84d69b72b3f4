"""Open a training workdir in a notebook: `run = vae.load("runs/mnist")`.

A `Run` holds the config, the VAE (encode / decode / reconstruct / sample), every fitted
prior by name (N(0, I) always) and the metrics history. Restoring targets this process's
devices, so a checkpoint written on GPU/TPU opens on a CPU laptop.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vae import input_pipeline, losses, models, prior_lib, train_lib


@dataclasses.dataclass
class Run:
    workdir: str
    config: ml_collections.ConfigDict
    model: models.VAE
    priors: dict
    step: int
    kind: str  # 'best' or 'latest'

    @property
    def latent_shape(self):
        return self.model.latent_shape

    def encode(self, x):
        """Images in [0, 1] (B, 28, 28, 1) -> posterior (mean, logvar)."""
        return self.model.encode(jnp.asarray(x))

    def decode(self, z):
        """Latents -> E[x|z], images in [0, 1]."""
        return losses.decoder_mean(self.model.likelihood, self.model.decode(jnp.asarray(z)))

    def reconstruct(self, x):
        return self.decode(self.encode(x)[0])

    def sample(self, key, n: int, prior: str = "standard_normal"):
        """(latents, images) of n draws from the named prior."""
        if prior not in self.priors:
            raise KeyError(f"no prior {prior!r} in {self.workdir}; fitted: {sorted(self.priors)}")
        z = self.priors[prior].sample(key, n)
        return z, self.decode(z)

    def dataset(self) -> input_pipeline.Dataset:
        return input_pipeline.load_dataset(self.config.data)

    def metrics(self, split: str | None = None) -> dict:
        """The metrics history as columns {name: np.array}, rows of `split` if given."""
        path = os.path.join(self.workdir, "metrics.jsonl")
        with open(path) as f:
            rows = [json.loads(line) for line in f]
        rows = [r for r in rows if split is None or r.get("split") == split]
        names = sorted({k for r in rows for k in r if not isinstance(r[k], (list, dict))})
        return {k: np.array([r.get(k, np.nan if k not in ("split", "prior") else "") for r in rows]) for k in names}

    def evaluate(self, split: str = "test", dataset=None) -> dict:
        """Stage 1's evaluation (same images, binarization and key) with these parameters."""
        dataset = dataset or self.dataset()
        graphdef, params = nnx.split(self.model)
        eval_batch = train_lib.make_step_functions(graphdef, None, self.config).eval_batch
        x = train_lib.prepared_eval_sets(self.config, dataset)[split]
        return train_lib.evaluate(eval_batch, params, x, train_lib.eval_key(self.config),
                                  self.config.train.eval_batch_size, bits_per_dim=not self.config.data.binarize)


def load(workdir: str, *, step: int | None = None, kind: str = "best") -> Run:
    """The run in `workdir`: its 'best' checkpoint (or 'latest'; `step=` picks one)."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"workdir {workdir} does not exist")
    config = train_lib.load_config(workdir)
    model, step, kind = train_lib.restore_vae(workdir, config, step=step, kind=kind)
    fitted = {"standard_normal": prior_lib.load_prior(workdir, "standard_normal", model.latent_shape)}
    for name in prior_lib.fitted_prior_names(workdir):
        fitted[name] = prior_lib.load_prior(workdir, name, model.latent_shape)
    return Run(workdir, config, model, fitted, step, kind)

