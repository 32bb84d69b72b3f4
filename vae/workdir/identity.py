"""Resume identity: the fields of a config that a workdir's checkpoints depend on, and how two
configs differ in them. Pure functions of JSON dicts (`json.loads(config.to_json())`).

A workdir resumes only under a config with the same identity (else a resume would silently
mix two runs); the run's length, logging, devices and stage-2 choices may change. Fields
are compared as the run uses them: directories as resolved real paths, so `../data/mnist`
and `/work/data/mnist` are one directory, and what the run does not read (a data source
the dataset does not use, another architecture's config.vae.<arch>) is left out.
"""

from __future__ import annotations

import os

import priors
from vae.data import registry as datasets
from vae.models import registry as archs

# Data fields naming a directory: compared (and stored in config.json) resolved.
DIRECTORY_FIELDS = ("idx_dir", "local_dir", "tfds_data_dir")
_MISSING = object()


def model_fields(config: dict) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """The rule: (paths of the parts of `config` that define the model and its data, paths
    inside them that this run does not read). A section is compared field by field, nested
    sections too (config.vae.<arch>.* as well as config.vae.*)."""
    vae = config.get("vae", {})
    compared = [("data",), ("vae",),
                ("seed",), ("train", "batch_size")]  # these two fix the order and noise of every step
    if vae.get("prior") in priors.registry.names():  # a prior trained inside the VAE is part of the model
        compared.append(("prior", vae["prior"]))
    left_out = [("data", field) for field in unread_sources(config.get("data", {}))]
    left_out += [("vae", arch) for arch in archs.names() if arch != vae.get("arch")]  # other architectures' sections
    return compared, left_out


def resolve_dir(path):
    """Where a directory field points, however it is spelled; '' (not given) stays ''."""
    return os.path.realpath(os.path.expanduser(path)) if isinstance(path, str) and path else path


def unread_sources(data: dict) -> set[str]:
    """The data-source fields that loading `data` does not read (`vae.data.sources`): the local
    directory field of the other datasets, and tfds_data_dir once the local one is given."""
    if data.get("name") not in datasets.names():
        return set()  # not a dataset this code knows: compare every field
    own = datasets.get(data["name"]).local_field
    unread = set(datasets.LOCAL_FIELDS) - {own}
    if data.get(own):
        unread.add("tfds_data_dir")
    return unread


def with_resolved_dirs(config: dict) -> dict:
    """`config` with its data directories resolved: what config.json stores, so that the
    identity does not depend on the directory a run was started from."""
    data = config.get("data")
    if not isinstance(data, dict):
        return config
    return {**config, "data": {k: resolve_dir(v) if k in DIRECTORY_FIELDS else v for k, v in data.items()}}


def _lookup(tree, path):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return _MISSING
        tree = tree[key]
    return tree


def _flatten(value, key: str, out: dict) -> None:
    if isinstance(value, dict):
        for k in sorted(value):
            _flatten(value[k], f"{key}.{k}", out)
    elif value is not _MISSING:
        out[key] = value


def identity(config: dict, paths, left_out=()) -> dict:
    """{dotted field: value} of `config` at `paths` but not under `left_out`, sections
    flattened to their leaves, directories resolved; fields `config` lacks are left out."""
    out = {}
    for path in paths:
        _flatten(_lookup(with_resolved_dirs(config), path), ".".join(path), out)
    dropped = tuple(".".join(path) for path in left_out)
    return {k: v for k, v in out.items() if not any(k == d or k.startswith(d + ".") for d in dropped)}


def differences(old: dict, new: dict) -> tuple[list[str], list[str], list[str]]:
    """How the workdir's config `old` differs from this run's `new`, in the fields that define
    the model (chosen by `new`, the run being resumed): (changed values, as 'field: old in
    workdir, new now'; fields only `old` has; fields only `new` has). Fields only one side has
    mean the two configs have other layouts: written by other code."""
    paths, left_out = model_fields(new)
    was, now = identity(old, paths, left_out), identity(new, paths, left_out)
    changed = [f"{k}: {was[k]!r} in workdir, {now[k]!r} now" for k in was if k in now and was[k] != now[k]]
    return changed, [k for k in was if k not in now], [k for k in now if k not in was]
