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
A VQ-VAE-2's (`vae.models.vq2`) is a VQ-VAE's over the flat sequence of its two code maps, its
code usage given per level as well ('perplexity_top', 'codes_used_bottom', ...).
A dVAE's (`vae.models.dvae`) is reported as a VQ-VAE's, except that its posterior is a real
categorical q(c|x) (`report["vae"]["point_mass"]` false): nll_iwae samples k code maps from it,
the ELBO column stays, latent_nll and the q(z) row read draws c ~ q(c|x), and the
reconstruction row decodes the argmax codes.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import time

import jax
import numpy as np

import priors
from vae import rng
from vae import workdir as workdir_lib
from vae.data import input_pipeline
from vae.evaluation import (
    analysis,
    bounds,
    evaluation_data,
    plotting,
    references,
    report_table,
    sampling,
    scoring,
)
from vae.evaluation import temperatures as temperature_curves
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


def _write_samples(out_dir: str, name: str, z, images) -> None:
    """samples_<name>.png (the first GRID images) and samples_<name>.npz (every latent and image)."""
    plotting.save_grid(images[:GRID], os.path.join(out_dir, f"samples_{name}.png"), ncol=8)
    np.savez_compressed(os.path.join(out_dir, f"samples_{name}.npz"), z=np.asarray(z),
                        images=np.round(images * 255).astype(np.uint8))


def compare(workdir: str, out_dir: str | None = None, *, n_samples: int = 10000, k: int = 10, seeds=(0,),
            command: str | None = None, temperatures=None, k_values=None, k_images: int = 500) -> dict:
    """The report over sample seeds `seeds`: each seed draws its own latents, importance
    samples and held-out draws (the report's streams of `vae.rng`, rooted at the seed); every
    metric is reported as the mean and sd over seeds. Grids and .npz hold the first seed's.
    `temperatures` adds the temperature curves (`vae.evaluation.temperatures`), `k_values`
    the bound's sensitivity to k on `k_images` test images (`bounds.k_sensitivity`)."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected distinct integers, got {seeds}")
    t_start = time.perf_counter()
    timed = scoring.Stopwatch()
    with timed("load VAE, priors, data"):
        wd, config, vae, fitted_to, fitted, dataset = _open(workdir)
    out_dir = out_dir or wd.join("report")
    os.makedirs(out_dir, exist_ok=True)

    def key(name, seed=seeds[0]):
        return rng.key(seed, name)

    def samples_key(seed):
        """The latents every prior samples under one sample seed (at any temperature)."""
        return key("samples", seed)

    # The splits as stage 1 evaluated them (the run's evaluation data).
    eval_data = evaluation_data.EvalData(config, dataset)
    with timed("encode train/validation/test"):
        x_test = eval_data.images("test")
        test_mean, test_logvar, train_mean, train_logvar, val_mean, val_logvar = jax.block_until_ready(
            [*eval_data.posteriors(vae, "test"), *eval_data.posteriors(vae, "train"),
             *eval_data.posteriors(vae, "validation")])
    # Code maps (VQ-VAE, dVAE): q(z) is over a discrete set, so the density-based diagnostics
    # (hole rate, ELBO surgery) are for Gaussian posteriors only. A point mass (VQ) has no ELBO.
    continuous = vae.latents == "continuous"
    point_mass = bool(getattr(vae, "point_mass", False))  # a Gaussian VAE's: no
    levels = getattr(vae, "levels", None)  # a VQ-VAE-2's code maps: code usage per level too
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
    clf = scoring.load_classifier(wd, dataset, seeds[0], timed)
    real = None if clf is None else scoring.real_side(clf[0], dataset.test.images, n_compared, timed)
    num_dims = math.prod(x_test.shape[1:])

    with timed(f"nll_iwae[{k}] and ELBO on the test split"):  # every prior from the same draws at once
        iwae = {seed: bounds.iwae_under_priors(vae, list(fitted.values()), x_test, key("iwae", seed), k)
                for seed in seeds}

    def score_images(r, z, images):
        """The sample-side metrics of decoded latents z: code usage (VQ), sample metrics, hole rate."""
        if not continuous:  # how much of the codebook the samples use, as the test codes do (report["test_codes"])
            r.update({f"sample_{k_}": v for k_, v in vq.codebook_usage(z, vae.num_codes, levels).items()})
        if real is not None:
            r.update(scoring.score_samples(real, images, timed))
        if continuous:
            with timed("prior hole rate (log q of the samples)"):
                r.update(analysis.prior_hole_rate(z, train_mean, train_logvar, threshold))
        return r

    def score(index, prior, seed):
        """(metrics, latents, images) of the index-th prior under one sample seed."""
        t0 = time.perf_counter()
        with timed("sample and decode"):
            z = sampling.draw_samples(prior, samples_key(seed), n_samples)  # the same latent seed for every prior
            images = sampling.decode_images(vae, z)
        sample_seconds = time.perf_counter() - t0
        nll, elbo = iwae[seed][0][index], iwae[seed][1][index]
        r = {"nll_iwae": float(nll.mean())} | ({} if point_mass else {"elbo": float(elbo.mean())})  # VQ: elbo = -nll
        with timed("held-out latent NLL (one z ~ q(z|x) per test image)"):
            z_test = eval_data.latent_draws(vae, "test", key("heldout_draws", seed), (test_mean, test_logvar))
            r["latent_nll"] = evaluation_data.latent_nll(prior, z_test)
        if continuous:
            with timed("ELBO surgery (log q over the test posteriors)"):
                r.update(analysis.elbo_surgery(key("elbo_surgery", seed), test_mean, test_logvar,
                                               jax.jit(prior.log_prob), num_samples=min(n_samples, 10000)))
        score_images(r, z, images)
        r["sampling_seconds"] = sample_seconds
        if not config.data.binarize:
            r["nll_iwae_bits_per_dim"] = losses.bits_per_dim(r["nll_iwae"], num_dims)
        return r, z, images

    def score_reference(name, seed):
        """(metrics, latents, images) of the reference row `name` (vae.evaluation.references)."""
        with timed("reference rows: decode"):
            z, images = references.images(vae, name, key("references", seed), train_mean, train_logvar, n_samples,
                                          eval_data.images("train"))
        return score_images({}, z, images), z, images

    per_seed, grids = {}, {}
    rows = [(name, functools.partial(score, index, prior)) for index, (name, prior) in enumerate(fitted.items())]
    rows += [(name, functools.partial(score_reference, name)) for name in references.names(point_mass)]
    for name, score_row in rows:
        log.info("%s", name)
        per_seed[name] = []
        for seed in seeds:
            r, z, images = score_row(seed)
            per_seed[name].append(r)
            if seed == seeds[0]:
                with timed("write sample grids and .npz"):
                    grids[name] = images[:GRID]
                    _write_samples(out_dir, name.replace("(", "").replace(")", ""), z, images)
            log.info("%s, seed %d: %s", name, seed, {k_: v for k_, v in r.items() if not isinstance(v, list)})
    baseline = priors.BASELINES[vae.latents]
    references.add_gaps_closed(per_seed, baseline)
    results = {name: scoring.summarize(per_seed[name]) for name in fitted}
    for name in fitted:  # 'estimate': log_prob is not exact (a prior trained with the VAE has an exact one)
        results[name]["density"] = priors.registry.get(name).density if name in priors.registry.names() else "exact"
    reference_rows = {name: scoring.summarize(per_seed[name]) for name in references.names(point_mass)}

    plotting.save_labelled_grids(grids, os.path.join(out_dir, "comparison.png"), ncol=8)
    report = {
        "dataset": config.data.name,
        "data_source": dataset.source,
        "n_samples": n_samples,
        "n_compared": n_compared,  # generated and real images each, for FD and precision/recall
        "k": k,
        "seeds": seeds,
        "vae": {"arch": config.vae.arch, "latent_shape": list(vae.latent_shape), "likelihood": vae.likelihood,
                "trained_with_prior": vae.prior_name, "point_mass": point_mass, "workdir": wd.path,
                "checkpoint": fitted_to},
        "priors": results,
        "references": reference_rows,  # q(z) (and the reconstructions), decoded from training images
        "baseline": baseline,  # the prior gap_closed_* starts from
        "data_labels": None if real is None else scoring.label_statistics(dataset),
        "classifier": {"test_accuracy": None if clf is None else clf[1]},
        "hole_threshold_log_q": threshold,
        "heldout_latent_hole_rate": heldout_hole_rate,
        "heldout_median_log_q": None if heldout is None else float(np.median(heldout)),
        "test_codes": None if continuous else vq.codebook_usage(test_mean, vae.num_codes, levels),
    }
    if temperatures and real is not None:
        validation = scoring.real_side(clf[0], dataset.validation.images, min(n_compared, len(val_mean)), timed,
                                       "validation")
        report["temperatures"] = temperature_curves.sweep(
            vae, fitted, temperatures, seeds, samples_key, n_samples, real, validation,
            timed, per_seed, baseline)
        points = {name: (r["precision"], r["recall"]) for name, r in reference_rows.items()}
        plotting.save_precision_recall(temperature_curves.curves(report["temperatures"]), points,
                                       os.path.join(out_dir, "precision_recall.png"))
    if k_values:
        with timed("nll_iwae against k"):
            report["k_sensitivity"] = bounds.k_sensitivity(vae, fitted, x_test, key("k_sensitivity"), k_values, k_images)
    report |= {
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
