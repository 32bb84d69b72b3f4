"""Where each file of a workdir lives (the tree in `vae.workdir`'s docstring): paths only.

Every other module of the package asks a `Layout` for its paths, so moving a file is a
change here alone.
"""

from __future__ import annotations

import os
import tempfile

from vae.errors import TrainingError


class Layout:
    def __init__(self, path: str):
        self.path = str(path)

    def __repr__(self):
        return f"{type(self).__name__}({self.path!r})"

    def join(self, *parts) -> str:
        return os.path.join(self.path, *parts)

    # ------------------------------------------------------------------ the run

    @property
    def config_file(self) -> str:
        return self.join("config.json")

    @property
    def checkpoints(self) -> str:
        return self.join("checkpoints")

    @property
    def tensorboard_dir(self) -> str:
        return self.join("tensorboard")

    @property
    def metrics_file(self) -> str:
        return self.join("metrics.jsonl")

    @property
    def runs_file(self) -> str:
        return self.join("runs.jsonl")

    @property
    def best_file(self) -> str:
        return self.join("best_validation_elbo.json")

    @property
    def samples(self) -> str:
        return self.join("samples")

    @property
    def classifier(self) -> str:
        return self.join("classifier")

    @property
    def report(self) -> str:
        return self.join("report")

    # ------------------------------------------------------------------ priors

    @property
    def priors_dir(self) -> str:
        return self.join("priors")

    def prior_dir(self, name: str) -> str:
        return self.join("priors", name)

    def prior_config(self, name: str) -> str:
        return self.join("priors", name, "config.json")  # what it is and which VAE it was fitted to

    def prior_checkpoints(self, name: str) -> str:
        return self.join("priors", name, "checkpoints")  # the fitted prior alone

    def prior_train_state(self, name: str) -> str:
        return self.join("priors", name, "train_state")  # + optimizer state: resumes a fit

    def stale_prior(self, name: str, stamp: str) -> str:
        return self.join("stale_priors", f"{name}.{stamp}")  # a fit of an earlier VAE, kept

    def ensure_writable(self) -> None:
        """Fails at once, naming the directory, rather than after an epoch of training."""
        try:
            os.makedirs(self.path, exist_ok=True)
            tempfile.NamedTemporaryFile(dir=self.path, prefix=".write_test").close()
        except OSError as e:
            raise TrainingError(f"workdir {self.path} is not writable: {e.strerror or e}") from e
