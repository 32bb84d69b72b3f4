"""Open a training workdir in a notebook: `run = vae.load("runs/mnist")`.

A `Run` holds the config, the VAE (encode / decode / reconstruct / sample), every fitted
prior by name (N(0, I) always) and the metrics history. Restoring targets this process's
devices, so a checkpoint written on GPU/TPU opens on a CPU laptop.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import ml_collections
import numpy as np

import priors
from vae import models
from vae import workdir as workdir_lib
from vae.data import input_pipeline
from vae.evaluation import evaluation_data
from vae.models import losses


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
        """Images in [0, 1] (B, H, W, C) -> posterior (mean, logvar); a VQ-VAE's: (codes, None)."""
        return self.model.encode(jnp.asarray(x))

    def decode(self, z):
        """Latents -> E[x|z], images in [0, 1]."""
        return losses.decoder_mean(self.model.likelihood, self.model.decode(jnp.asarray(z)))

    def reconstruct(self, x):
        return self.decode(self.encode(x)[0])

    def sample(self, key, n: int, prior: str | None = None):
        """(latents, images) of n draws from the named prior (default: the one the VAE trained with)."""
        prior = prior or self.model.joint_prior_label or priors.BASELINES[self.model.latents]
        if prior not in self.priors:
            raise KeyError(f"no prior {prior!r} in {self.workdir}; fitted: {sorted(self.priors)}")
        z = self.priors[prior].sample(key, n)
        return z, self.decode(z)

    def dataset(self) -> input_pipeline.Dataset:
        return input_pipeline.load_dataset(self.config.data)

    def metrics(self, split: str | None = None) -> dict:
        """The metrics history as columns {name: np.array}, rows of `split` if given."""
        rows = [r for r in workdir_lib.Workdir(self.workdir).read_metrics() if split is None or r.get("split") == split]
        names = sorted({k for r in rows for k in r if not isinstance(r[k], (list, dict))})
        return {k: np.array([r.get(k, np.nan if k not in ("split", "prior") else "") for r in rows]) for k in names}

    def evaluate(self, split: str = "test", dataset=None) -> dict:
        """Stage 1's evaluation (same images, binarization and key) with these parameters."""
        return evaluation_data.EvalData(self.config, dataset or self.dataset()).elbo(self.model, split)


def load(workdir: str, *, step: int | None = None, kind: str = "best", learned_priors: bool = True) -> Run:
    """The run in `workdir`: its 'best' checkpoint (or 'latest'; `step=` picks one), with every
    prior fitted to that checkpoint. A prior fitted to another checkpoint is refused (its
    numbers would pair this decoder with another encoder's latents); `learned_priors=False`
    opens the checkpoint with N(0, I) alone."""
    wd = workdir_lib.open(workdir)
    config = wd.load_config()
    model, step, kind = wd.restore_vae(config, step=step, kind=kind)
    fitted = wd.load_priors(model, workdir_lib.vae_fingerprint(model, step), learned=learned_priors)
    return Run(wd.path, config, model, fitted, step, kind)
