"""XLA:CPU defaults this codebase wants, applied by the entry points (`vae.cli.run`) and the
test suite before JAX starts its backend; a flag the user put in XLA_FLAGS wins.

XLA:CPU (jaxlib 0.10) hands every convolution to its YNN library by default, which runs this
codebase's small-channel convolutions ~2x slower than XLA's Eigen path on the 2-core CPU
(docs/performance.md): the flag leaves YNN's other fusions at their default. Only CPU
compilation reads it; GPU/TPU are unaffected. A notebook that wants the same speed calls
`apply_cpu_defaults()` before its first JAX computation.
"""

from __future__ import annotations

import os
from importlib import metadata

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
FLAG_SINCE = (0, 10, 2)  # the oldest jaxlib known to accept it; older ones may abort on it


def apply_cpu_defaults() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_CONV_FLAG.split("=")[0] in flags:
        return  # the user's setting
    try:
        version = tuple(int(p) for p in metadata.version("jaxlib").split(".")[:3])
    except (metadata.PackageNotFoundError, ValueError):
        return
    if version >= FLAG_SINCE:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_CONV_FLAG}".strip()
