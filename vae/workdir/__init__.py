"""Everything a run keeps on disk, and the only module that knows the layout.

  W/config.json                  the run's config (models are rebuilt from it alone)
  W/checkpoints/{latest,best}/   the VAE train state ({params, opt_state, step})
  W/metrics.jsonl                one JSON record per evaluation; stage-2 records carry "prior"
  W/best_validation_elbo.json    the step and value of the best validation ELBO
  W/runs.jsonl                   one line per train.py run: stage, git commit, command
  W/samples/                     image grids written during training
  W/priors/<name>/               config.json, checkpoints/ (the fitted prior) and, for
                                 gradient-fitted priors, train_state/ (to resume the fit)
  W/classifier/                  the cached feature classifier of the report
  W/report/                      what sample.py writes

Writers (the stages) and readers (sample.py, `vae.load`, diagnostics, experiments) go through
`Workdir`; readers open one with `workdir.open(W)`. Several processes: process 0 writes, and all
enter and leave each writing method together (`_collective`): none reads a file being written.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

import priors
from vae.workdir import checkpoint
from vae import models
from vae.parallel import multihost
from vae.train import optim
from vae.errors import CheckpointError, PriorError, TrainingError

# Config sections that define the model and its data (and config.prior.<p> for a prior trained
# in the VAE): a workdir written with others cannot be resumed (length and logging may change).
MODEL_SECTIONS = ("data", "vae")
# A field a workdir predates: what it was then, for those that select a behaviour; the others
# only size models that did not exist then (if one is asked for, its selector differs).
IMPLIED = {("vae", "prior"): "normal", ("vae", "likelihood"): "auto", ("data", "local_dir"): ""}
# Single fields that must also match to resume: they fix the order and noise of every step.
RESUME_KEYS = (("seed",), ("train", "batch_size"))


def write_atomically(path: str, text: str) -> None:
    """A kill mid-write leaves the old file, never half of the new one."""
    tmp = f"{path}.tmp"
    with io.open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _get(tree: dict, key: tuple):
    for k in key:
        tree = tree.get(k, {}) if isinstance(tree, dict) else {}
    return tree if tree != {} else None


def vae_fingerprint(model, step: int) -> dict:
    """Which VAE checkpoint this is: its step and a hash of its parameters (a --fresh run can
    reach the same step with other weights). Priors record it; readers check it."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(nnx.state(model)):
        digest.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
    return {"step": int(step), "params_sha256": digest.hexdigest()[:16]}


def _describe(fingerprint) -> str:
    return f"step {fingerprint['step']} (params sha256 {fingerprint['params_sha256']})"


def code_version() -> dict:
    """The git commit of this code and whether tracked files differ from it (None outside git)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=30)

    try:
        head, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _is_writer() -> bool:
    return jax.process_index() == 0


def _read_json(path: str, lines: bool = False):
    """The JSON file (JSON lines if `lines`) at `path`, None if it is missing: process 0's
    reading, in every process (`multihost.process_0_value`)."""
    value = None
    if jax.process_index() == 0 and os.path.exists(path):
        with io.open(path) as f:
            value = [json.loads(line) for line in f if line.strip()] if lines else json.load(f)
    return multihost.process_0_value(value)


def _collective(write):
    """Workdir methods that write (see the module docstring)."""
    @functools.wraps(write)
    def wrapped(*args, **kwargs):
        multihost.barrier(f"before {write.__name__}")
        result = write(*args, **kwargs)
        multihost.barrier(f"after {write.__name__}")
        return result
    return wrapped


class Workdir:
    def __init__(self, path: str):
        self.path = str(path)

    def __repr__(self):
        return f"Workdir({self.path!r})"

    def join(self, *parts) -> str:
        return os.path.join(self.path, *parts)

    @property
    def checkpoints(self) -> str:
        return self.join("checkpoints")

    def prior_dir(self, name: str) -> str:
        return self.join("priors", name)

    def prior_checkpoints(self, name: str) -> str:
        return self.join("priors", name, "checkpoints")  # the fitted prior alone

    def prior_train_state(self, name: str) -> str:
        return self.join("priors", name, "train_state")  # + optimizer state: resumes a fit

    def ensure_writable(self) -> None:
        """Fails at once, naming the directory, rather than after an epoch of training."""
        try:
            os.makedirs(self.path, exist_ok=True)
            tempfile.NamedTemporaryFile(dir=self.path, prefix=".write_test").close()
        except OSError as e:
            raise TrainingError(f"workdir {self.path} is not writable: {e.strerror or e}") from e

    def check_resumable(self, config) -> None:
        """Refuses a workdir whose model/data config, seed or batch size differs from `config`
        (a resume would silently mix two runs)."""
        old = _read_json(self.join("config.json"))
        if old is None:
            return
        new = json.loads(config.to_json())
        sections = [(s,) for s in MODEL_SECTIONS]
        if new["vae"].get("prior", "normal") in priors.registry.names():  # a prior inside the VAE
            sections.append(("prior", new["vae"]["prior"]))
        now = lambda sec, k: (_get(new, sec) or {}).get(k)  # noqa: E731
        was = lambda sec, k: (_get(old, sec) or {}).get(k, IMPLIED.get((*sec, k), now(sec, k)))  # noqa: E731
        diffs = [f"{'.'.join(sec)}.{k}: {was(sec, k)!r} in workdir, {now(sec, k)!r} now"
                 for sec in sections for k in sorted(set(_get(old, sec) or {}) | set(_get(new, sec) or {}))
                 if was(sec, k) != now(sec, k)]
        diffs += [f"{'.'.join(key)}: {_get(old, key)!r} in workdir, {_get(new, key)!r} now"
                  for key in RESUME_KEYS if _get(old, key) != _get(new, key)]
        if diffs:
            raise TrainingError(
                f"workdir {self.path} was written by a different model/data config, so it cannot "
                "be resumed: " + "; ".join(diffs) + ". Use a new --workdir, or add --fresh to move "
                "this one aside and start over."
            )

    @_collective
    def save_config(self, config) -> None:
        self.check_resumable(config)
        if _is_writer():
            os.makedirs(self.path, exist_ok=True)
            write_atomically(self.join("config.json"), config.to_json(indent=2))

    def load_config(self) -> ml_collections.ConfigDict:
        config = _read_json(self.join("config.json"))
        if config is None:
            raise FileNotFoundError(f"{self.path} is not a training workdir: it has no config.json")
        return ml_collections.ConfigDict(config)

    # ------------------------------------------------------------------ metrics

    @_collective
    def _append_jsonl(self, name: str, record: dict) -> None:
        if _is_writer():
            with io.open(self.join(name), "a") as f:
                f.write(json.dumps(record) + "\n")

    def _read_jsonl(self, name: str) -> list[dict]:
        return _read_json(self.join(name), lines=True) or []

    def append_metrics(self, record: dict) -> None:
        self._append_jsonl("metrics.jsonl", record)

    def read_metrics(self) -> list[dict]:
        return self._read_jsonl("metrics.jsonl")

    @_collective
    def rewind_metrics(self, step: int, *, prior: str | None = None) -> None:
        """Drops the records of one stage (the VAE's, or prior `prior`'s) logged after `step`:
        work a kill threw away, which the resumed run logs again."""
        records = self.read_metrics()
        keep = [r for r in records if r.get("prior") != prior or r["step"] <= step]
        if len(keep) != len(records) and _is_writer():
            write_atomically(self.join("metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in keep))

    def log_invocation(self, stage: str) -> None:
        """One line per train.py run in W/runs.jsonl: when, which stage, which code, the command."""
        self._append_jsonl("runs.jsonl", {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "stage": stage,
                                          "code": code_version(), "command": " ".join(sys.argv)})

    def invocations(self) -> list[dict]:
        return self._read_jsonl("runs.jsonl")

    @_collective
    def write_best(self, step: int, elbo: float) -> None:
        if _is_writer():
            write_atomically(self.join("best_validation_elbo.json"), json.dumps({"step": step, "elbo": elbo}))

    # ------------------------------------------------------------------ the VAE

    def restore_vae(self, config=None, *, step: int | None = None, kind: str = "best"):
        """(model, step, kind): the `kind` checkpoint ('best', falling back to 'latest'), or
        the one at `step`. Restores onto this process's devices."""
        config = config or self.load_config()
        if kind not in ("best", "latest"):
            raise ValueError(f"kind={kind!r}; expected 'best' or 'latest'")
        if checkpoint.latest(self.checkpoints, "latest") is None:
            raise CheckpointError(
                f"{self.path} has no VAE checkpoint; train one first (python train.py --config ... "
                f"--workdir {self.path} --config.stage=vae)")
        if checkpoint.latest(self.checkpoints, kind) is None:
            kind = "latest"
        if step is not None:
            kinds = {k: checkpoint.steps(self.checkpoints, k) for k in ("best", "latest")}
            if not any(step in s for s in kinds.values()):
                raise CheckpointError(f"no checkpoint at step {step} in {self.checkpoints}; "
                                      f"available: {sorted(set(kinds['best'] + kinds['latest']))}")
            kind = "best" if step in kinds["best"] else "latest"
        graphdef, params = nnx.split(models.create_vae(config))
        target = jax.eval_shape(lambda p: optim.init_state(optim.make_optimizer(config.train, 1), p), params)
        state = checkpoint.restore(self.checkpoints, target, step=step, kind=kind)
        return nnx.merge(graphdef, state["params"]), int(state["step"]), kind

    # ------------------------------------------------------------------ priors

    @_collective
    def save_prior_config(self, config, name: str, latent_shape, fitted_to: dict) -> None:
        """priors/<name>/config.json: the prior's config, latent shape and the VAE checkpoint
        (`vae_fingerprint`) its latents came from."""
        path = os.path.join(self.prior_dir(name), "config.json")
        record = {"name": name, "latent_shape": list(latent_shape), "prior": json.loads(config.prior.to_json()),
                  "seed": config.seed, "fitted_to": fitted_to}
        old = self.prior_record(name)
        if old is not None and old["latent_shape"] != record["latent_shape"]:
            raise PriorError(
                f"{path} is a prior for latent shape {tuple(old['latent_shape'])}, but this VAE's "
                f"latent shape is {tuple(latent_shape)}; delete {self.prior_dir(name)} to refit")
        if _is_writer():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_atomically(path, json.dumps(record, indent=2))

    def prior_record(self, name: str) -> dict | None:  # priors/<name>/config.json, or None
        return _read_json(os.path.join(self.prior_dir(name), "config.json"))

    def _prior_record(self, name: str) -> dict:
        record = self.prior_record(name)
        if record is None:
            raise PriorError(f"no prior {name!r} fitted in {self.path} (missing "
                             f"{os.path.join(self.prior_dir(name), 'config.json')})")
        return record

    def stale_prior_reason(self, name: str, fitted_to: dict) -> str | None:
        """Why prior `name`'s fit does not belong to the VAE `fitted_to` (None if it does)."""
        recorded = self._prior_record(name).get("fitted_to")
        if recorded is None:
            return (f"prior {name!r} in {self.prior_dir(name)} does not record which VAE checkpoint it was "
                    f"fitted to (fitted before provenance was recorded); this VAE is {_describe(fitted_to)}")
        if recorded != fitted_to:
            return (f"prior {name!r} in {self.prior_dir(name)} was fitted to the VAE at {_describe(recorded)}, "
                    f"but this VAE is {_describe(fitted_to)}")
        return None

    @_collective
    def set_stale_prior_aside(self, name: str) -> str:
        """Moves a stale fit to W/stale_priors/<name>.<time>/ with its metrics records (nothing
        is deleted); returns where."""
        stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
        while os.path.exists(aside := self.join("stale_priors", f"{name}.{stamp}" + (f".{n}" if n else ""))):
            n += 1  # (only process 0's `aside` is used)
        records = [r for r in self.read_metrics() if r.get("prior") == name]  # every process: a collective
        if _is_writer():
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            shutil.move(self.prior_dir(name), aside)
            write_atomically(os.path.join(aside, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
        self.rewind_metrics(-1, prior=name)  # every process: it syncs, so none sees the old fit afterwards
        return aside

    def fitted_prior_names(self) -> list[str]:
        """Priors with a finished fit here, sorted."""
        root = self.join("priors")
        names = multihost.process_0_value(sorted(os.listdir(root)) if os.path.isdir(root) else [])
        return sorted(n for n in names if checkpoint.latest(self.prior_checkpoints(n)) is not None)

    def load_priors(self, vae, fitted_to: dict, *, learned: bool = True) -> dict:
        """{name: prior} for `vae` (`fitted_to` its fingerprint): N(0, I), the learned prior it trained
        with ('joint_<name>'), then if `learned` each prior fitted to it (stale: refused)."""
        out = {n: self.load_prior(n, vae.latent_shape, None, vae.num_codes) for n in priors.registry.names("none", vae.latents)}
        if vae.joint_prior_label:
            out[vae.joint_prior_label] = vae.prior
        return out | ({n: self.load_prior(n, vae.latent_shape, fitted_to, vae.num_codes) for n in self.fitted_prior_names()}
                      if learned else {})

    def load_prior(self, name: str, latent_shape, fitted_to: dict | None = None, num_codes: int | None = None):
        """A prior for this VAE's `latent_shape` (and `num_codes`, a VQ-VAE's): built, and restored if
        it is fitted. With `fitted_to` (a `vae_fingerprint`), one fitted to another VAE checkpoint is refused."""
        if name in priors.registry.names(fit="none"):
            return priors.build(name, latent_shape, num_codes=num_codes)
        record = self._prior_record(name)
        if tuple(record["latent_shape"]) != tuple(latent_shape):
            raise PriorError(
                f"prior {name!r} in {self.prior_dir(name)} was fitted for latent shape "
                f"{tuple(record['latent_shape'])}, but the VAE's latent shape is {tuple(latent_shape)}")
        stale = fitted_to is not None and self.stale_prior_reason(name, fitted_to)
        if stale:
            raise PriorError(
                f"{stale}. Its numbers would pair this encoder/decoder with another one's latents. Refit it "
                f"(python train.py --config <config> --workdir {self.path} --config.stage=prior fits the best "
                "checkpoint), or open this checkpoint without learned priors: vae.load(W, ..., learned_priors=False)")
        prior = priors.build(name, latent_shape, ml_collections.ConfigDict(record["prior"]), seed=record["seed"],
                             num_codes=num_codes)
        graphdef, state = nnx.split(prior)
        return nnx.merge(graphdef, checkpoint.restore(self.prior_checkpoints(name), {"prior": state})["prior"])


def open(path: str) -> Workdir:  # noqa: A001 - `workdir.open(W)` reads as what it does
    """An existing run's workdir, for readers: it must hold config.json."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"workdir {path} does not exist")
    wd = Workdir(path)
    wd.load_config()  # a clear error now if it is not a training workdir
    return wd
