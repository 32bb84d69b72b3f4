"""VAEs with learned latent priors: data, models, losses, training, checkpoints, analysis.

In a notebook: `run = vae.load("runs/mnist")` (see vae.loading.Run).

Importing `vae` sets one XLA:CPU default before JAX starts its backend (see
`_xla_cpu_defaults`); a flag the user put in XLA_FLAGS wins.
"""

import os
from importlib import metadata

# XLA:CPU (jaxlib 0.10) hands every convolution to its YNN library by default, which runs this
# codebase's small-channel convolutions ~2x slower than XLA's Eigen path: measured on the
# 2-core CPU (README "Performance"), the main job's conv VAE train step 6.6 -> 9.3 steps/s
# and its PixelCNN fit 7.0 -> 9.7 steps/s. The flag leaves YNN's other fusions at their default.
# Only CPU compilation reads it; GPU/TPU are unaffected.
CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_FLAG_SINCE = (0, 10, 2)  # the oldest jaxlib it was measured with; older ones may not know it (XLA aborts)


def _xla_cpu_defaults() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_CONV_FLAG.split("=")[0] in flags:
        return  # the user's setting
    try:
        version = tuple(int(p) for p in metadata.version("jaxlib").split(".")[:3])
    except (metadata.PackageNotFoundError, ValueError):
        return
    if version >= _FLAG_SINCE:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_CONV_FLAG}".strip()


_xla_cpu_defaults()


def load(workdir: str, *, step: int | None = None, kind: str = "best", learned_priors: bool = True):
    """The run in `workdir` (config, VAE, fitted priors, metrics); see vae.loading.load."""
    from vae import loading  # deferred: `import vae` stays cheap for the entry points

    return loading.load(workdir, step=step, kind=kind, learned_priors=learned_priors)
