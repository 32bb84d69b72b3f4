"""Which sampler for the diffusion prior: the image metrics of each sampler's draws from one fit.

  python experiments/diffusion_samplers.py --workdir runs/fashion_mnist \
      [--samplers dpmpp_2m_sde:10,dpmpp_2m:6,ancestral:256] [--seeds 0,1,2] [--n 5000] [--out W/diffusion_samplers]

The VAE and the diffusion prior fitted in WORKDIR (train.py --config.prior.name=diffusion) are
loaded as sample.py loads them. Each SAMPLER:STEPS (`priors.diffusion_samplers`) draws n latents
per sample seed from the key sample.py's report gives that seed, so the prior's own sampler at
seed s reproduces the report's row; the draws are decoded and scored by the report's registered
sample metrics (fd_classifier, precision, recall, label entropy) against n test images, with the
run's feature classifier. Writes OUT/samplers.json (per sampler: mean, sd and per-seed values)
and OUT/samplers.md, with the seconds to sample and decode n latents (compilation included).
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

from priors import diffusion_samplers
from vae import cli, rng
from vae import workdir as workdir_lib
from vae.data import input_pipeline
from vae.errors import ConfigError
from vae.evaluation import report_table, sampling, scoring

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir with a VAE and a fitted diffusion prior.")
_SAMPLERS = flags.DEFINE_list("samplers", "dpmpp_2m_sde:10,dpmpp_2m:6,ancestral:256",
                              "SAMPLER:STEPS pairs, comma separated.")
_SEEDS = flags.DEFINE_list("seeds", "0,1,2", "Sample seeds, comma separated.")
_N = flags.DEFINE_integer("n", 5000, "Latents per sampler and seed (and test images compared).", lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "Output directory; default WORKDIR/diffusion_samplers.")
flags.mark_flags_as_required(["workdir"])

COLUMNS = ("fd_classifier", "precision", "recall", "seconds")


def parse_samplers(pairs) -> list[tuple[str, int]]:
    """['ddim:16', ...] -> [('ddim', 16), ...]; a pair not SAMPLER:STEPS is a ConfigError naming it."""
    out = []
    for pair in pairs:
        name, _, steps = pair.partition(":")
        if name not in diffusion_samplers.SAMPLERS or not steps.isdigit() or int(steps) < 1:
            raise ConfigError(f"--samplers: {pair!r}; expected SAMPLER:STEPS with SAMPLER one of "
                             f"{diffusion_samplers.SAMPLERS} and STEPS a positive integer")
        out.append((name, int(steps)))
    return out


def compare(workdir: str, samplers, seeds, n: int) -> dict:
    """{'sampler:steps': summarized metrics over `seeds`} for the diffusion prior of `workdir`."""
    wd = workdir_lib.open(workdir)
    config = wd.load_config()
    vae, step, _ = wd.restore_vae(config)
    prior = wd.load_prior("diffusion", vae.latent_shape, workdir_lib.vae_fingerprint(vae, step))
    dataset = input_pipeline.load_dataset(config.data)
    timed = scoring.Stopwatch()
    clf = scoring.load_classifier(wd, dataset, int(seeds[0]), timed)
    if clf is None:
        raise ConfigError(f"{config.data.name} has no class labels: no classifier to score samples with")
    real = scoring.real_side(clf[0], dataset.test.images, min(n, len(dataset.test.images)), timed)
    results = {}
    for name, steps in samplers:
        prior.sampler, prior.sample_steps = name, steps
        per_seed = []
        for seed in seeds:
            t0 = time.perf_counter()
            images = sampling.decode_images(vae, sampling.draw_samples(prior, rng.key(int(seed), "samples"), n))
            seconds = time.perf_counter() - t0
            per_seed.append({**scoring.score_samples(real, images, timed), "seconds": seconds})
        results[f"{name}:{steps}"] = scoring.summarize(per_seed)
    return results


def markdown(results: dict, command: str) -> str:
    lines = ["| sampler:steps | " + " | ".join(COLUMNS) + " |", "| --- " * (len(COLUMNS) + 1) + "|"]
    for label, result in results.items():
        lines.append(f"| {label} | " + " | ".join(report_table.cell(result, c) for c in COLUMNS) + " |")
    return "\n".join(lines) + f"\n\nCommand: `{command}`\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    samplers = parse_samplers(_SAMPLERS.value)
    out = _OUT.value or os.path.join(_WORKDIR.value, "diffusion_samplers")
    results = compare(_WORKDIR.value, samplers, _SEEDS.value, _N.value)
    os.makedirs(out, exist_ok=True)
    command = " ".join(sys.argv)
    with open(os.path.join(out, "samplers.json"), "w") as f:
        json.dump({"command": command, "n": _N.value, "seeds": [int(s) for s in _SEEDS.value], "samplers": results},
                  f, indent=1)
    text = markdown(results, command)
    with open(os.path.join(out, "samplers.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    cli.run(main)
