"""The comparison report: N(0, I) against every learned prior fitted in a workdir.

`compare(workdir, seeds=(0, 1, 2))` draws n samples from each prior (the same key for each)
per sample seed, decodes them and writes into `W/report/`: samples_<prior>.png/.npz,
comparison.png, report.json and report.md. Metrics per prior, on the test split unless named
otherwise, each the mean over seeds with its sd beside it (report.json: `sd`, `per_seed`):
  nll_iwae / elbo        -log p(x) (k importance samples) and the ELBO, under that prior
  latent_nll             -log p(z), one z ~ q(z|x) per test image (the prior's own held-out fit)
  (a prior whose log_prob is an estimate, `Spec.density`, is starred: numbers under it are too)
  average_kl, mutual_info, marginal_kl   ELBO surgery on the test posteriors (vae.evaluation.analysis)
  fd_classifier, precision, recall        in the features of our classifier (vae.evaluation.metrics), on
                                          equal-size sets: n_compared generated and real images
                                          (not for a dataset without labels, CelebA)
  label_entropy, class_frequencies        of the classifier's predictions on the samples
  prior_hole_rate                          vs the mixture of the training posteriors
A VQ-VAE's workdir (`vae.models.vq`): uniform over codes against the code priors; nll_iwae is then
the bound -log p(x|z_q) - log p(z_q) (a point-mass posterior: no sampling, no ELBO column,
bits/dim for 8-bit data), and the density diagnostics (ELBO surgery, hole rate) give way to
the code perplexity and codes used by the samples (`report["test_codes"]`: the test images').
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

import priors
from vae.evaluation import analysis
from vae.evaluation import classifier
from vae.evaluation import evaluation_data
from vae.data import input_pipeline
from vae.models import losses
from vae.evaluation import metrics
from vae.evaluation import plotting
from vae.models import vq
from vae import workdir as workdir_lib

log = logging.getLogger(__name__)
GRID = 64  # images per samples_<prior>.png
# Keys of the report: for each sample seed s (sample.py --seeds), fold_in(key(s), offset).
SEEDS = {"samples": 0, "iwae": 1, "elbo_surgery": 2, "hole_threshold": 3, "heldout_draws": 4}


def _batched(fn, x, batch):
    return jnp.concatenate([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


# Compiled once per module structure (static graphdefs): later calls and seeds reuse the program.
@functools.partial(jax.jit, static_argnames=("graphdef", "n"))
def _sample(state, key, *, graphdef, n):
    return nnx.merge(graphdef, state).sample(key, n)


@functools.partial(jax.jit, static_argnames=("vae_graphdef", "graphdefs", "k"))
def _iwae_batch(vs, states, xb, kb, *, vae_graphdef, graphdefs, k):
    log_priors = tuple(nnx.merge(g, s).log_prob for g, s in zip(graphdefs, states))
    return nnx.merge(vae_graphdef, vs).iwae(xb, kb, k=k, log_prior=log_priors)


def draw_samples(prior, key, n: int, batch: int = 2000):
    """n latents from `prior` under jit, `batch` at a time (bounded memory)."""
    graphdef, state = nnx.split(prior)
    parts = [_sample(state, jax.random.fold_in(key, i), graphdef=graphdef, n=min(batch, n))
             for i in tqdm(range(0, n, batch), desc="sample", leave=False)]
    return jnp.concatenate(parts)[:n]


def iwae_under_priors(vae, priors_, x, key, k: int, batch: int = 100):
    """(nll_iwae, elbo), each (P, N), of prepared test images x under each of the P priors in
    `priors_`, from the same k draws per image: the decoder runs once for all of them."""
    vg, vs = nnx.split(vae)
    graphdefs, states = zip(*(nnx.split(p) for p in priors_))
    out = [_iwae_batch(vs, states, jnp.asarray(x[i : i + batch]), jax.random.fold_in(key, i), vae_graphdef=vg,
                       graphdefs=graphdefs, k=k)
           for i in tqdm(range(0, len(x), batch), desc="iwae", leave=False)]
    return -np.concatenate([np.asarray(o[0]) for o in out], axis=1), np.concatenate([np.asarray(o[1]) for o in out], axis=1)


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


def mean_sd(values) -> dict:
    """{'mean', 'sd' (ddof=1; 0 for one value), 'values'}: a number over seeds, as experiments report it."""
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": values}


def write_summary(out_dir: str, summary: dict, text: str) -> None:
    """An experiment's summary.json and summary.md in `out_dir`; prints the markdown."""
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(text)
    print(text)


def compare(workdir: str, out_dir: str | None = None, *, n_samples: int = 10000, k: int = 10, seeds=(0,),
            command: str | None = None) -> dict:
    """The report over sample seeds `seeds`: each seed draws its own latents, importance
    samples and held-out draws (key(seed) folded with the stage's offset in SEEDS); every
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
    binarize = config.data.binarize

    def key(name, seed=seeds[0]):
        return jax.random.fold_in(jax.random.key(seed), SEEDS[name])

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
            threshold = float(np.percentile(heldout, 1.0))
            heldout_z, _ = analysis.sample_aggregate_posterior(key("heldout_draws"), val_mean[half:],
                                                               val_logvar[half:], 10000)
            heldout_hole_rate = analysis.prior_hole_rate(heldout_z, train_mean, train_logvar,
                                                         threshold)["prior_hole_rate"]
    # Precision/recall and FD compare equal-size sets: as many generated images as real ones.
    n_compared = min(len(x_test), n_samples)
    clf = clf_acc = data_labels = None
    if input_pipeline.CLASSES[dataset.name]:  # CelebA has no labels to train the feature classifier on
        with timed("classifier: train or load, features of the test images"):
            clf, clf_acc = classifier.load_or_train(wd.join("classifier"), dataset, seed=seeds[0])
            real_feats, _ = classifier.features_and_labels(clf, input_pipeline.to_float(dataset.test.images))
        data_labels = metrics.label_stats(dataset.test.labels)
        real_feats = real_feats[np.random.default_rng(0).permutation(len(real_feats))[:n_compared]]
        with timed("fd_classifier, precision/recall, labels"):
            real_radii = metrics.manifold_radii(real_feats)  # the real manifold: once for every prior and seed
    else:
        log.warning("%s has no class labels: no classifier, so no fd_classifier, precision/recall or label "
                    "statistics in this report", dataset.name)

    vg, vs = nnx.split(vae)
    decode = jax.jit(lambda s, z: losses.decoder_mean(vae.likelihood, nnx.merge(vg, s).decode(z)))
    num_dims = math.prod(x_test.shape[1:])

    with timed(f"nll_iwae[{k}] and ELBO on the test split"):  # every prior from the same draws at once
        iwae = {seed: iwae_under_priors(vae, list(fitted.values()), x_test, key("iwae", seed), k) for seed in seeds}

    def score(index, prior, seed):
        """(metrics, latents, images) of the index-th prior under one sample seed."""
        t0 = time.perf_counter()
        with timed("sample and decode"):
            z = draw_samples(prior, key("samples", seed), n_samples)  # the same latent seed for every prior
            images = np.asarray(_batched(lambda zb: decode(vs, zb), z, 1000))
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
        if clf is not None:
            with timed("classifier features of the samples"):
                feats, predicted = classifier.features_and_labels(clf, images)
            with timed("fd_classifier, precision/recall, labels"):
                r["fd_classifier"] = metrics.frechet_distance(real_feats, feats[:n_compared])
                r.update(metrics.precision_recall(real_feats, feats[:n_compared], real_radii=real_radii))
                r.update(metrics.label_stats(predicted))
        if continuous:
            with timed("prior hole rate (log q of the samples)"):
                r.update(analysis.prior_hole_rate(z, train_mean, train_logvar, threshold))
        r["sampling_seconds"] = sample_seconds
        if not binarize:
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
                    plotting.save_grid(images[:GRID], os.path.join(out_dir, f"samples_{name}.png"), ncol=8)
                    np.savez_compressed(os.path.join(out_dir, f"samples_{name}.npz"), z=np.asarray(z),
                                        images=np.round(images * 255).astype(np.uint8))
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
        "data_labels": data_labels,
        "classifier": {"test_accuracy": clf_acc},
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
        f.write(markdown_table(report))
    return report


COLUMNS = [
    ("nll_iwae", "nll_iwae[k] (nats)"), ("nll_iwae_bits_per_dim", "bits/dim"), ("elbo", "ELBO (nats)"),
    ("latent_nll", "latent NLL (nats)"), ("marginal_kl", "marginal_kl (nats)"), ("mutual_info", "mutual_info (nats)"),
    ("fd_classifier", "fd_classifier"), ("precision", "precision"), ("recall", "recall"),
    ("label_entropy", "label_entropy (nats)"), ("prior_hole_rate", "prior_hole_rate"),
    ("median_log_q", "median log q(z) of samples (nats)"), ("sample_perplexity", "code perplexity of samples"),
    ("sample_codes_used", "codes used by samples"),
]


def columns(report: dict) -> list[tuple[str, str]]:
    """(key, header) of the COLUMNS this report has; a VQ-VAE's nll_iwae is the point-mass bound."""
    first = next(iter(report["priors"].values()))
    bound = "-log p(x\\|z_q) - log p(z_q) (nats)" if report.get("test_codes") else f"nll_iwae[{report['k']}] (nats)"
    return [(k, bound if k == "nll_iwae" else h) for k, h in COLUMNS if k in first]


def cell(result: dict, key: str, digits: int = 4) -> str:
    """One metric of one prior: its value, or mean ± sd when the report has several seeds."""
    sd = result.get("sd", {}).get(key)
    value = f"{result[key]:.{digits}g}"
    return f"{value} ± {sd:.2g}" if sd is not None and len(result.get("per_seed", ())) > 1 else value


def markdown_table(report: dict) -> str:
    codes = report.get("test_codes")
    cols = columns(report)
    labels = (f"classifier test accuracy {report['classifier']['test_accuracy']:.4f}; data label entropy "
              f"{report['data_labels']['label_entropy']:.3f} nats" if report["data_labels"] else
              "no class labels, so no classifier-based metrics")
    latents = (f"held-out latents (the validation half that did not set the threshold): hole rate "
               f"{report['heldout_latent_hole_rate']:.3f}, median log q(z) {report['heldout_median_log_q']:.1f} nats"
               if not codes else f"VQ-VAE: the test images' codes have perplexity {codes['perplexity']:.1f} and use "
               f"{codes['codes_used']} codes; the posterior is a point mass, so the bound on -log p(x) needs no sampling")
    lines = [
        f"# {report['dataset']}: {'uniform over codes' if codes else 'N(0, I)'} vs learned priors",
        "",
        f"{report['n_samples']} samples per prior"
        + (f"; mean ± sd over sample seeds {report['seeds']}" if len(report.get("seeds", [0])) > 1 else "")
        + f"; FD and precision/recall on {report.get('n_compared', report['n_samples'])} generated vs as many "
        f"real test images; metrics on the test split; {labels}; {latents}.",
        "",
        "| prior | " + " | ".join(h for _, h in cols) + " |",
        "| --- |" + " --- |" * len(cols),
    ]
    for name, r in report["priors"].items():
        mark = "*" if r.get("density") == "estimate" else ""
        lines.append(f"| {name}{mark} | " + " | ".join(cell(r, k) for k, _ in cols) + " |")
    if any(r.get("density") == "estimate" for r in report["priors"].values()):
        lines += ["", "\\* this prior's log_prob is an estimate (diffusion: the probability-flow ODE), so "
                  "nll_iwae, ELBO, latent NLL and marginal_kl under it are estimates, not bounds."]
    joint = [n for n in report["priors"] if n not in priors.registry.names()]
    if joint:
        lines += ["", f"{', '.join(joint)}: the prior the VAE was trained with (config.vae.prior), in the ELBO from "
                  "the first step; the others are N(0, I) and priors fitted afterwards to the frozen encoder."]
    if set(report["priors"]) <= set(priors.registry.names(fit="none")):
        lines += ["", "No learned prior is fitted in this workdir: fit one with "
                  "`python train.py --config <config> --workdir <W> --config.stage=prior --config.prior.name=gmm,pixelcnn`."]
    if report.get("timings_seconds"):
        lines += ["", f"Where the {report['wall_seconds']:.0f} s went (wall seconds per stage, summed over priors):", "",
                  "| stage | seconds | share |", "| --- | --- | --- |"]
        lines += [f"| {stage} | {sec:.1f} | {sec / report['wall_seconds']:.0%} |"
                  for stage, sec in report["timings_seconds"].items()]
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)
