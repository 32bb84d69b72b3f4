"""Which code and which VAE: the git commit of this code (`code_version`), a VAE checkpoint's
fingerprint (`vae_fingerprint`), priors/<name>/config.json (what a prior is and which VAE
checkpoint it was fitted to), why a fit is stale, and setting a stale fit aside.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import time

import jax
import numpy as np
from flax import nnx

from vae.errors import PriorError
from vae.workdir import metrics, writes

_REPO = pathlib.Path(__file__).resolve().parents[2]
# What priors/<name>/config.json holds; one without all of them is in an older layout.
PRIOR_RECORD_FIELDS = ("name", "latent_shape", "prior", "seed", "fitted_to")


def code_version() -> dict:
    """The git commit of this code and whether tracked files differ from it (None outside git)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(_REPO), *args], check=False, capture_output=True, text=True, timeout=30)

    try:
        head, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def vae_fingerprint(model, step: int) -> dict:
    """Which VAE checkpoint this is: its step and a hash of its parameters (a --fresh run can
    reach the same step with other weights). Priors record it; readers check it."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(nnx.state(model)):
        digest.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
    return {"step": int(step), "params_sha256": digest.hexdigest()[:16]}


def describe(fingerprint: dict) -> str:
    return f"step {fingerprint['step']} (params sha256 {fingerprint['params_sha256']})"


# ---------------------------------------------------------------------- prior records


@writes.collective
def save_prior_config(wd, config, name: str, latent_shape, fitted_to: dict) -> None:
    """priors/<name>/config.json: the prior's config, latent shape and the VAE checkpoint
    (`vae_fingerprint`) its latents came from."""
    path = wd.prior_config(name)
    record = {"name": name, "latent_shape": list(latent_shape), "prior": json.loads(config.prior.to_json()),
              "seed": config.seed, "fitted_to": fitted_to}
    old = prior_record(wd, name)
    if old is not None and old["latent_shape"] != record["latent_shape"]:
        raise PriorError(
            f"{path} is a prior for latent shape {tuple(old['latent_shape'])}, but this VAE's "
            f"latent shape is {tuple(latent_shape)}; delete {wd.prior_dir(name)} to refit")
    if writes.is_writer():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        writes.write_atomically(path, json.dumps(record, indent=2))


def prior_record(wd, name: str) -> dict | None:
    """priors/<name>/config.json, or None if there is none."""
    record = writes.read_json(wd.prior_config(name))
    missing = [k for k in PRIOR_RECORD_FIELDS if record is not None and k not in record]
    if missing:  # e.g. no fitted_to: nothing says which VAE its latents came from
        raise PriorError(f"{wd.prior_config(name)} is in an older layout (it has no {', '.join(missing)}); "
                         f"move {wd.prior_dir(name)} away and refit prior {name!r}")
    return record


def require_prior_record(wd, name: str) -> dict:
    record = prior_record(wd, name)
    if record is None:
        raise PriorError(f"no prior {name!r} fitted in {wd.path} (missing {wd.prior_config(name)})")
    return record


def stale_prior_reason(wd, name: str, fitted_to: dict) -> str | None:
    """Why prior `name`'s fit does not belong to the VAE `fitted_to` (None if it does)."""
    recorded = require_prior_record(wd, name)["fitted_to"]
    if recorded != fitted_to:
        return (f"prior {name!r} in {wd.prior_dir(name)} was fitted to the VAE at {describe(recorded)}, "
                f"but this VAE is {describe(fitted_to)}")
    return None


@writes.collective
def set_stale_prior_aside(wd, name: str) -> str:
    """Moves a stale fit to W/stale_priors/<name>.<time>/ with its metrics records (nothing
    is deleted); returns where."""
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
    while os.path.exists(aside := wd.stale_prior(name, stamp + (f".{n}" if n else ""))):
        n += 1  # (only process 0's `aside` is used)
    records = [r for r in metrics.read_metrics(wd) if r.get("prior") == name]  # every process: a collective
    if writes.is_writer():
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        shutil.move(wd.prior_dir(name), aside)
        writes.write_atomically(os.path.join(aside, "metrics.jsonl"), writes.json_lines(records))
    metrics.rewind_metrics(wd, -1, prior=name)  # every process: it syncs, so none sees the old fit afterwards
    return aside
