"""The comparison report: N(0, I) against every learned prior fitted in a workdir.

`compare(workdir, seeds=(0, 1, 2))` draws n samples from each prior (the same key for each)
per sample seed, decodes them and writes into `W/report/`: samples_<prior>.png/.npz,
comparison.png, report.json and report.md (`vae.evaluation.report_table`). Metrics per prior,
on the test split unless named otherwise, each the mean over seeds with its sd beside it
(report.json: `sd`, `per_seed`):
  nll_iwae / elbo        -log p(x) (k importance samples) and the ELBO, under that prior
  latent_nll             -log p(z), one z ~ q(z|x) per test image (the prior's own held-out fit)
  (a prior whose log_prob is an estimate, `Spec.density`, is starred: numbers under it are too)
  average_kl, mutual_info, marginal_kl   ELBO surgery on the test posteriors (vae.evaluation.analysis)
  sample metrics          every metric registered in vae.evaluation.sample_metrics, in the features
                          of our classifier, on equal-size sets: n_compared generated and real
                          images (built in: fd_classifier, precision, recall, label_entropy and
                          class_frequencies; none for a dataset without labels, CelebA)
  prior_hole_rate         vs the mixture of the training posteriors
A VQ-VAE's workdir (`vae.models.vq`): uniform over codes against the code priors; nll_iwae is then
the bound -log p(x|z_q) - log p(z_q) (a point-mass posterior: no sampling, no ELBO column,
bits/dim for 8-bit data), and the density diagnostics (ELBO surgery, hole rate) give way to
the code perplexity and codes used by the samples (`report["test_codes"]`: the test images').
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np

import priors
from vae import rng
from vae import workdir as workdir_lib
from vae.data import input_pipeline
from vae.data import registry as data_registry
from vae.evaluation import (
    analysis,
    bounds,
    classifier,
    evaluation_data,
    metrics,
    plotting,
    report_table,
    sample_metrics,
    sampling,
)
from vae.models import losses, vq

log = logging.getLogger(__name__)
GRID = 64  # images per samples_<prior>.png
# Keys of the report: for each sample seed s (sample.py --seeds), fold_in(key(s), offset).


def _open(workdir: str):
    """The run's workdir, config, VAE (best checkpoint), its fingerprint, every prior fitted to
    it (stale ones are refused) and the dataset."""
    wd = workdir_lib.open(workdir)
    config = wd.load_config()
    vae, vae_step, _ = wd.restore_vae(config)
    fitted_to = workdir_lib.vae_fingerprint(vae, vae_step)
    fitted = wd.load_priors(vae, fitted_to)  # refuses stale priors
    if not wd.fitted_prior_names():
        log.warning("no learned prior fitted in %s: reporting %s only. Fit one with: python train.py "
                    "--config <config> --workdir %s --config.stage=prior --config.prior.name=gmm,pixelcnn",
                    wd.path, ", ".join(fitted), wd.path)
    return wd, config, vae, fitted_to, fitted, input_pipeline.load_dataset(config.data)


class Stopwatch:
    """Wall seconds per stage of the report (summed over priors), in the order first seen.
    Each timed block ends with its results on the host, so the device's work is counted."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


def summarize(per_seed: list[dict]) -> dict:
    """One prior's metrics over sample seeds: each number's mean (lists: elementwise), with
    `sd` (sample standard deviation, ddof=1; 0 for one seed) and the `per_seed` values."""
    out = {k: (np.mean([r[k] for r in per_seed], axis=0).tolist() if isinstance(v, list)
               else float(np.mean([r[k] for r in per_seed])))
           for k, v in per_seed[0].items()}
    scalars = [k for k, v in per_seed[0].items() if not isinstance(v, list)]
    out["sd"] = {k: float(np.std([r[k] for r in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0 for k in scalars}
    out["per_seed"] = [{k: r[k] for k in scalars} for r in per_seed]
    return out


@dataclasses.dataclass(frozen=True)
class RealSide:
    """The real images' half of the sample metrics, shared by every prior and seed."""
    classifier: Any
    test_accuracy: float
    data_labels: dict  # label statistics of the test split's own labels
    feats: np.ndarray  # classifier features of n_compared test images
    registered: list  # the sample metrics registered when the report began, in order
    prepared: dict  # metric name -> what its `prepare` made of `feats` (None without one)


def real_side(wd, dataset, seed: int, n_compared: int, timed: Stopwatch) -> RealSide | None:
    """The classifier (trained once per workdir), the real features and every sample metric's
    real-side state; None for a dataset without labels to train the classifier on."""
    if not data_registry.get(dataset.name).num_classes:
        log.warning("%s has no class labels: no classifier, so no fd_classifier, precision/recall or label "
                    "statistics in this report", dataset.name)
        return None
    with timed("classifier: train or load, features of the test images"):
        clf, accuracy = classifier.load_or_train(wd.join("classifier"), dataset, seed=seed)
        feats, _ = classifier.features_and_labels(clf, input_pipeline.to_float(dataset.test.images))
    data_labels = metrics.label_stats(dataset.test.labels)
    # A fixed subset of the test images (numpy's own seed, no report key): as many as generated ones.
    feats = feats[np.random.default_rng(0).permutation(len(feats))[:n_compared]]
    registered = sample_metrics.registered()
    prepared = {}
    for metric in registered:
        with timed(f"sample metric {metric.name}"):
            prepared[metric.name] = None if metric.prepare is None else metric.prepare(feats)
    return RealSide(clf, accuracy, data_labels, feats, registered, prepared)


def score_samples(real: RealSide, images, timed: Stopwatch) -> dict:
    """Every registered sample metric of one prior's generated images, against the real side."""
    with timed("classifier features of the samples"):
        feats, predicted = classifier.features_and_labels(real.classifier, images)
    generated = feats[: len(real.feats)]  # equal-size sets: as many generated images as real ones
    scores = {}
    for metric in real.registered:
        with timed(f"sample metric {metric.name}"):
            scores.update(metric.score(real.feats, generated, predicted, real.prepared[metric.name]))
    return scores


def _write_samples(out_dir: str, name: str, z, images) -> None:
    """samples_<name>.png (the first GRID images) and samples_<name>.npz (every latent and image)."""
    plotting.save_grid(images[:GRID], os.path.join(out_dir, f"samples_{name}.png"), ncol=8)
    np.savez_compressed(os.path.join(out_dir, f"samples_{name}.npz"), z=np.asarray(z),
                        images=np.round(images * 255).astype(np.uint8))


def compare(workdir: str, out_dir: str | None = None, *, n_samples: int = 10000, k: int = 10, seeds=(0,),
            command: str | None = None) -> dict:
    """The report over sample seeds `seeds`: each seed draws its own latents, importance
    samples and held-out draws (the report's streams of `vae.rng`, rooted at the seed); every
    metric is reported as the mean and sd over seeds. Grids and .npz hold the first seed's."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected distinct integers, got {seeds}")
    t_start = time.perf_counter()
    timed = Stopwatch()
    with timed("load VAE, priors, data"):
        wd, config, vae, fitted_to, fitted, dataset = _open(workdir)
    out_dir = out_dir or wd.join("report")
    os.makedirs(out_dir, exist_ok=True)

    def key(name, seed=seeds[0]):
        return rng.key(seed, name)

    # The splits as stage 1 evaluated them (the run's evaluation data).
    eval_data = evaluation_data.EvalData(config, dataset)
    with timed("encode train/validation/test"):
        x_test = eval_data.images("test")
        test_mean, test_logvar, train_mean, train_logvar, val_mean, val_logvar = jax.block_until_ready(
            [*eval_data.posteriors(vae, "test"), *eval_data.posteriors(vae, "train"),
             *eval_data.posteriors(vae, "validation")])
    # A VQ-VAE's posterior is a point mass on a code map: q(z) is a histogram of codes, so the
    # density-based diagnostics (hole rate, ELBO surgery) are for Gaussian posteriors only.
    continuous = vae.latents == "continuous"
    threshold = heldout = heldout_hole_rate = None
    # The hole threshold comes from the first half of the validation posteriors; the check that
    # held-out latents fall in holes ~1% of the time uses the second half (not the same ones).
    if continuous:
        with timed("hole threshold and its check (log q of held-out latents)"):
            half = len(val_mean) // 2
            heldout = analysis.heldout_log_q(key("hole_threshold"), val_mean[:half], val_logvar[:half],
                                             train_mean, train_logvar)
            threshold = analysis.hole_threshold(heldout)
            heldout_z, _ = analysis.sample_aggregate_posterior(key("hole_check"), val_mean[half:],
                                                               val_logvar[half:], 10000)
            heldout_hole_rate = analysis.prior_hole_rate(heldout_z, train_mean, train_logvar,
                                                         threshold)["prior_hole_rate"]
    # Precision/recall and FD compare equal-size sets: as many generated images as real ones.
    n_compared = min(len(x_test), n_samples)
    real = real_side(wd, dataset, seeds[0], n_compared, timed)
    num_dims = math.prod(x_test.shape[1:])

    with timed(f"nll_iwae[{k}] and ELBO on the test split"):  # every prior from the same draws at once
        iwae = {seed: bounds.iwae_under_priors(vae, list(fitted.values()), x_test, key("iwae", seed), k)
                for seed in seeds}

    def score(index, prior, seed):
        """(metrics, latents, images) of the index-th prior under one sample seed."""
        t0 = time.perf_counter()
        with timed("sample and decode"):
            z = sampling.draw_samples(prior, key("samples", seed), n_samples)  # the same latent seed for every prior
            images = sampling.decode_images(vae, z)
        sample_seconds = time.perf_counter() - t0
        nll, elbo = iwae[seed][0][index], iwae[seed][1][index]
        r = {"nll_iwae": float(nll.mean())} | ({"elbo": float(elbo.mean())} if continuous else {})  # VQ: elbo = -nll
        with timed("held-out latent NLL (one z ~ q(z|x) per test image)"):
            z_test = evaluation_data.draw_latents(key("heldout_draws", seed), test_mean, test_logvar)
            r["latent_nll"] = evaluation_data.latent_nll(prior, z_test)
        if continuous:
            with timed("ELBO surgery (log q over the test posteriors)"):
                r.update(analysis.elbo_surgery(key("elbo_surgery", seed), test_mean, test_logvar,
                                               jax.jit(prior.log_prob), num_samples=min(n_samples, 10000)))
        else:  # how much of the codebook the samples use, as the test codes do (report["test_codes"])
            r.update({f"sample_{k_}": v for k_, v in vq.codebook_usage(z, vae.num_codes).items()})
        if real is not None:
            r.update(score_samples(real, images, timed))
        if continuous:
            with timed("prior hole rate (log q of the samples)"):
                r.update(analysis.prior_hole_rate(z, train_mean, train_logvar, threshold))
        r["sampling_seconds"] = sample_seconds
        if not config.data.binarize:
            r["nll_iwae_bits_per_dim"] = losses.bits_per_dim(r["nll_iwae"], num_dims)
        return r, z, images

    results, grids = {}, {}
    for index, (name, prior) in enumerate(fitted.items()):
        log.info("prior %s", name)
        per_seed = []
        for seed in seeds:
            r, z, images = score(index, prior, seed)
            per_seed.append(r)
            if seed == seeds[0]:
                with timed("write sample grids and .npz"):
                    grids[name] = images[:GRID]
                    _write_samples(out_dir, name, z, images)
            log.info("%s, seed %d: %s", name, seed, {k_: v for k_, v in r.items() if not isinstance(v, list)})
        results[name] = summarize(per_seed)
        # 'estimate': log_prob is not exact (a prior trained with the VAE has an exact one)
        results[name]["density"] = priors.registry.get(name).density if name in priors.registry.names() else "exact"

    plotting.save_labelled_grids(grids, os.path.join(out_dir, "comparison.png"), ncol=8)
    report = {
        "dataset": config.data.name,
        "data_source": dataset.source,
        "n_samples": n_samples,
        "n_compared": n_compared,  # generated and real images each, for FD and precision/recall
        "k": k,
        "seeds": seeds,
        "vae": {"arch": config.vae.arch, "latent_shape": list(vae.latent_shape), "likelihood": vae.likelihood,
                "trained_with_prior": vae.prior_name, "workdir": wd.path, "checkpoint": fitted_to},
        "priors": results,
        "data_labels": None if real is None else real.data_labels,
        "classifier": {"test_accuracy": None if real is None else real.test_accuracy},
        "hole_threshold_log_q": threshold,
        "heldout_latent_hole_rate": heldout_hole_rate,
        "heldout_median_log_q": None if heldout is None else float(np.median(heldout)),
        "test_codes": None if continuous else vq.codebook_usage(test_mean, vae.num_codes),
        "command": command or " ".join(sys.argv),
        "code": workdir_lib.code_version(),  # the code of this report, and of each training run:
        "training_runs": [{k: r[k] for k in ("stage", "code", "time")} for r in wd.invocations()],
        "wall_seconds": time.perf_counter() - t_start,
        "timings_seconds": timed.seconds,
    }
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(report_table.markdown_table(report))
    return report
