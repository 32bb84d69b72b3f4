"""The whole comparison on one GPU/TPU host, timed: VAE, priors, sample.py's report.

  python benchmarks/accelerator.py --config configs/cifar10.py --workdir runs/cifar10 \
      [--config.data.local_dir=DIR] [--n 10000] [--k 10] [--matmul_precision=default]
  python benchmarks/accelerator.py --config configs/cifar10.py --workdir /tmp/w --smoke   # CPU, minutes

Runs stage 1 (the VAE), stage 2 (config.prior.name) and the report in this one process and
prints, per stage, the wall time, the training throughput (images/s of each fit's epochs
after its first, which compiles; latents/s for the priors) and the device's peak memory
since the process started (`memory_stats`, where the backend has it; not on CPU), then writes them to W/accelerator_run.json. A rerun resumes every stage
(finished ones cost their checks only). `--smoke` applies the config's smoke preset (after
the --config.* overrides, which it may reset) and a small report: the test suite runs it on CPU.

Matmul precision: networks (the VAE, the priors' nets) run at the backend's default, which
is TF32 for float32 matmuls and convolutions on recent NVIDIA GPUs: fast, and their training
does not need more. Mixture log-densities over many dimensions do (TF32 loses tens of nats
there), so those matmuls ask for HIGHEST themselves (`priors.gaussians`: the GMM, the
VampPrior, the aggregate posterior). `--matmul_precision=highest` forces float32 everywhere.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from configs import base
from vae import cli
from vae import workdir as workdir_lib
from vae.evaluation import report
from vae.train import stages

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:preset].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the run lives (created, or resumed).")
_SMOKE = flags.DEFINE_bool("smoke", False, "The config's smoke preset and a small report: minutes on a CPU.")
_N = flags.DEFINE_integer("n", 10000, "Samples per prior in the report.", lower_bound=1)
_K = flags.DEFINE_integer("k", 10, "Importance samples for nll_iwae.", lower_bound=1)
_PRECISION = flags.DEFINE_enum("matmul_precision", "default", ["default", "high", "highest"],
                               "jax_default_matmul_precision for the whole run (see the docstring).")
flags.mark_flags_as_required(["config", "workdir"])


def peak_memory_gib() -> float | None:
    stats = jax.local_devices()[0].memory_stats()
    return stats["peak_bytes_in_use"] / 2**30 if stats and "peak_bytes_in_use" in stats else None


def throughput(records) -> float | None:
    """Mean images/s of the training epochs after each fit's first (which compiles)."""
    fits = {}
    for r in records:
        if "images_per_sec" in r:
            fits.setdefault(r.get("prior"), []).append(r["images_per_sec"])
    rates = [x for per_fit in fits.values() for x in per_fit[1:]]
    return float(np.mean(rates)) if rates else None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    n, k = _N.value, _K.value
    if _SMOKE.value:
        config, n, k = base.finish(config, "smoke"), min(n, 100), min(k, 2)
    if _PRECISION.value != "default":
        jax.config.update("jax_default_matmul_precision", _PRECISION.value)
    dev = jax.local_devices()[0]
    print(f"device: {dev.device_kind} ({jax.default_backend()}), {jax.device_count()} device(s), "
          f"{os.cpu_count()} cpus, {platform.processor() or platform.machine()}")
    rows = []
    for stage in ("vae", "prior"):
        config.stage = stage
        t0 = time.perf_counter()
        stages.train_and_evaluate(config, _WORKDIR.value)
        records = [r for r in workdir_lib.open(_WORKDIR.value).read_metrics() if r["split"] == "train"]
        mine = [r for r in records if ("prior" in r) == (stage == "prior")]
        rows.append({"stage": stage, "seconds": time.perf_counter() - t0, "images_per_sec": throughput(mine),
                     "peak_memory_gib": peak_memory_gib()})
    t0 = time.perf_counter()
    rep = report.compare(_WORKDIR.value, n_samples=n, k=k, command=" ".join(sys.argv))
    rows.append({"stage": "report", "seconds": time.perf_counter() - t0, "images_per_sec": None,
                 "peak_memory_gib": peak_memory_gib(), "report_stages": rep["timings_seconds"]})
    print("\n| stage | wall (s) | train images/s | peak device memory so far (GiB) |\n| --- | --- | --- | --- |")
    for r in rows:
        ips = f"{r['images_per_sec']:.0f}" if r["images_per_sec"] else "–"
        mem = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "n/a"
        print(f"| {r['stage']} | {r['seconds']:.1f} | {ips} | {mem} |")
    out = {"device": dev.device_kind, "backend": jax.default_backend(), "stages": rows,
           "matmul_precision": _PRECISION.value, "smoke": _SMOKE.value, "command": " ".join(sys.argv),
           "code": workdir_lib.code_version()}
    path = os.path.join(workdir_lib.open(_WORKDIR.value).path, "accelerator_run.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"\nwrote {path}; the report is in {os.path.join(os.path.dirname(path), 'report')}")


if __name__ == "__main__":
    cli.run(main)
