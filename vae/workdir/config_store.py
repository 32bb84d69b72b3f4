"""W/config.json: the run's config (models are rebuilt from it alone), and whether a workdir
may be resumed under a given config (the fields compared: `vae.workdir.identity`).

config.json stores the data directories resolved (`identity.with_resolved_dirs`): a run
started with a relative --config.data.idx_dir resumes from any directory, and readers
(sample.py, `vae.load`) find the data from anywhere.
"""

from __future__ import annotations

import json
import os

import ml_collections

from vae.errors import TrainingError
from vae.workdir import identity, writes

_NAMED = 6  # fields named in a layout error; the rest are counted


def _fields(keys: list[str]) -> str:
    more = f" and {len(keys) - _NAMED} more" if len(keys) > _NAMED else ""
    return ", ".join(keys[:_NAMED]) + more


def check_resumable(wd, config) -> None:
    """Refuses a workdir whose model/data config, seed or batch size differs from `config`
    (a resume would silently mix two runs), naming each differing field."""
    old = writes.read_json(wd.config_file)
    if old is None:
        return
    changed, only_old, only_new = identity.differences(old, json.loads(config.to_json()))
    fix = "Use a new --workdir, or add --fresh to move this one aside and start over."
    if only_old or only_new:  # no field-by-field reading of another layout: it is not this code's run
        parts = ([f"its config.json lacks {_fields(only_new)}"] if only_new else []) + \
                ([f"it has {_fields(only_old)}, which this code's config does not"] if only_old else [])
        raise TrainingError(f"workdir {wd.path} was written by code with another config layout "
                            f"({'; '.join(parts)}), so it cannot be resumed. {fix}")
    if changed:
        raise TrainingError(f"workdir {wd.path} was written by a different model/data config, so it cannot "
                            f"be resumed: {'; '.join(changed)}. {fix}")


@writes.collective
def save_config(wd, config) -> None:
    check_resumable(wd, config)
    if writes.is_writer():
        os.makedirs(wd.path, exist_ok=True)
        stored = identity.with_resolved_dirs(json.loads(config.to_json()))
        writes.write_atomically(wd.config_file, json.dumps(stored, indent=2))


def load_config(wd) -> ml_collections.ConfigDict:
    config = writes.read_json(wd.config_file)
    if config is None:
        raise FileNotFoundError(f"{wd.path} is not a training workdir: it has no config.json")
    return ml_collections.ConfigDict(config)
