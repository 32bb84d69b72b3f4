"""VAEs with learned latent priors: data, models, losses, training, checkpoints, analysis.

In a notebook: `run = vae.load("runs/mnist")` (see vae.loading.Run).
"""


def load(workdir: str, *, step: int | None = None, kind: str = "best", learned_priors: bool = True):
    """The run in `workdir` (config, VAE, fitted priors, metrics); see vae.loading.load."""
    from vae import loading  # deferred: `import vae` stays cheap for the entry points

    return loading.load(workdir, step=step, kind=kind, learned_priors=learned_priors)
