"""The run's logs: W/metrics.jsonl (one JSON record per evaluation; stage-2 records carry
"prior"), W/runs.jsonl (one line per train.py run) and W/best_validation_elbo.json; with
TensorBoard on (`Workdir.log_to_tensorboard`), every metrics record and image grid also goes
to W/tensorboard/ (`vae.workdir.tensorboard`). metrics.jsonl is the source of truth.
"""

from __future__ import annotations

import json
import sys
import time

from vae.workdir import writes


@writes.collective
def _append(path: str, record: dict) -> None:
    if writes.is_writer():
        writes.append_json_line(path, record)


def append_metrics(wd, record: dict) -> None:
    _append(wd.metrics_file, record)
    if wd.tensorboard_log is not None and writes.is_writer():
        wd.tensorboard_log.write_record(record)


def log_image(wd, tag: str, image, step: int) -> None:
    """An image grid for TensorBoard (nothing when it is off; the PNGs are written anyway)."""
    if wd.tensorboard_log is not None and writes.is_writer():
        wd.tensorboard_log.write_image(tag, image, step)


def read_metrics(wd) -> list[dict]:
    return writes.read_json(wd.metrics_file, lines=True) or []


@writes.collective
def rewind_metrics(wd, step: int, *, prior: str | None = None) -> None:
    """Drops the records of one stage (the VAE's, or prior `prior`'s) logged after `step`:
    work a kill threw away, which the resumed run logs again."""
    records = read_metrics(wd)
    keep = [r for r in records if r.get("prior") != prior or r["step"] <= step]
    if len(keep) != len(records) and writes.is_writer():
        writes.write_atomically(wd.metrics_file, writes.json_lines(keep))


def log_invocation(wd, stage: str, code: dict) -> None:
    """One line per train.py run in W/runs.jsonl: when, which stage, which code (a
    `provenance.code_version`), the command."""
    _append(wd.runs_file, {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "stage": stage, "code": code,
                           "command": " ".join(sys.argv)})


def invocations(wd) -> list[dict]:
    return writes.read_json(wd.runs_file, lines=True) or []


@writes.collective
def write_best(wd, step: int, elbo: float) -> None:
    if writes.is_writer():
        writes.write_atomically(wd.best_file, json.dumps({"step": step, "elbo": elbo}))
