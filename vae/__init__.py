"""VAEs with learned latent priors, in layers:

  vae.data        datasets (a registry), their sources, splits and preprocessing
  vae.models      encoder/decoder families (a registry), the VAE, likelihoods and bounds
  vae.train       the stages: the VAE (stage 1), priors on its latents (stage 2), the fit loop
  vae.workdir     everything a run keeps on disk
  vae.evaluation  readers of a run: evaluation data, the report and its metrics, diagnostics
  vae.parallel    devices and processes
  vae.rng         every random stream of a run, by name
Priors live in the top-level package `priors` (a registry too).

In a notebook: `run = vae.load("runs/mnist")` (see vae.loading.Run).
"""


def load(workdir: str, *, step: int | None = None, kind: str = "best", learned_priors: bool = True):
    """The run in `workdir` (config, VAE, fitted priors, metrics); see vae.loading.load."""
    from vae import loading  # deferred: `import vae` stays cheap for the entry points

    return loading.load(workdir, step=step, kind=kind, learned_priors=learned_priors)
