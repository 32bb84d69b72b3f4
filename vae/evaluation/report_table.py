"""report.md: the comparison report's markdown, from its report.json dict.

The table's columns are the density metrics, then every registered sample metric's
(`vae.evaluation.sample_metrics`), the share of the baseline -> q(z) gap each prior closes,
then the hole rate and the code usage of a VAE over codes; a report shows the columns its priors
have numbers for. nll_iwae's header is the bound's: -log p(x|z_q) - log p(z_q) for a point-mass
posterior (a VQ-VAE's), nll_iwae[k] for one that is sampled (Gaussian, dVAE). Its rows are the
priors, then the reference rows (`vae.evaluation.references`), which have sample metrics only.
`docs/tables.py` builds the published results tables from the same `columns`, `rows` and `cell`.
"""

from __future__ import annotations

import priors
from vae.evaluation import bounds, sample_metrics
from vae.evaluation import temperatures as temperature_curves

DENSITY_COLUMNS = [
    ("nll_iwae", "nll_iwae[k] (nats)"), ("nll_iwae_bits_per_dim", "bits/dim"), ("elbo", "ELBO (nats)"),
    ("latent_nll", "latent NLL (nats)"), ("marginal_kl", "marginal_kl (nats)"), ("mutual_info", "mutual_info (nats)"),
]
GAP_COLUMNS = [("gap_closed_fd_classifier", "FD gap closed"), ("gap_closed_recall", "recall gap closed")]
SUPPORT_COLUMNS = [
    ("prior_hole_rate", "prior_hole_rate"), ("median_log_q", "median log q(z) of samples (nats)"),
    ("sample_perplexity", "code perplexity of samples"), ("sample_codes_used", "codes used by samples"),
    # a VQ-VAE-2's levels (vae.models.vq2), each with its own codebook
    ("sample_perplexity_top", "top code perplexity of samples"), ("sample_codes_used_top", "top codes used by samples"),
    ("sample_perplexity_bottom", "bottom code perplexity of samples"),
    ("sample_codes_used_bottom", "bottom codes used by samples"),
]


def all_columns() -> list[tuple[str, str]]:
    """(key, header) of every column a report can have, in table order."""
    return DENSITY_COLUMNS + sample_metrics.columns() + GAP_COLUMNS + SUPPORT_COLUMNS


def point_mass(report: dict) -> bool:
    """Whether the report's VAE has a point-mass posterior (a VQ-VAE's; a report written before
    `report["vae"]["point_mass"]`: any VAE over codes, the VQ-VAE then being the only one)."""
    return bool(report["vae"].get("point_mass", bool(report.get("test_codes"))))


def columns(report: dict) -> list[tuple[str, str]]:
    """(key, header) of the columns this report has; a point mass's nll_iwae is its own bound."""
    first = next(iter(report["priors"].values()))
    bound = "-log p(x\\|z_q) - log p(z_q) (nats)" if point_mass(report) else f"nll_iwae[{report['k']}] (nats)"
    return [(k, bound if k == "nll_iwae" else h) for k, h in all_columns() if k in first]


MARKS = {"estimate": "*", "bound": "†"}  # a prior's Spec.density -> its mark in the table
REFERENCE_LABEL = "{} (reference)"


def rows(report: dict) -> list[tuple[str, dict]]:
    """(label, result) of every row: the priors (marked by their density kind), then the
    reference rows (q(z), reconstruction) of a report that has them."""
    out = [(name + MARKS.get(r.get("density"), ""), r) for name, r in report["priors"].items()]
    return out + [(REFERENCE_LABEL.format(name), r) for name, r in (report.get("references") or {}).items()]


def cell(result: dict, key: str, digits: int = 4) -> str:
    """One metric of one row: its value, or mean ± sd when the report has several seeds; "—"
    where the row has none (a reference row's density metrics)."""
    if key not in result:
        return "—"
    sd = result.get("sd", {}).get(key)
    value = f"{result[key]:.{digits}g}"
    return f"{value} ± {sd:.2g}" if sd is not None and len(result.get("per_seed", ())) > 1 else value


def markdown_table(report: dict) -> str:
    """report.md: what was compared, the priors' table, notes on its marks, where the time went."""
    codes = report.get("test_codes")
    cols = columns(report)
    labels = (f"classifier test accuracy {report['classifier']['test_accuracy']:.4f}; data label entropy "
              f"{report['data_labels']['label_entropy']:.3f} nats" if report["data_labels"] else
              "no class labels, so no classifier-based metrics")
    if not codes:
        latents = (f"held-out latents (the validation half that did not set the threshold): hole rate "
                   f"{report['heldout_latent_hole_rate']:.3f}, median log q(z) {report['heldout_median_log_q']:.1f} nats")
    elif point_mass(report):
        per_level = "".join(f", the {name} map's {codes[f'perplexity_{name}']:.1f} and {codes[f'codes_used_{name}']}"
                            for name in ("top", "bottom") if f"perplexity_{name}" in codes)
        latents = (f"VQ-VAE{'-2' if per_level else ''}: the test images' codes have perplexity {codes['perplexity']:.1f} and use "
                   f"{codes['codes_used']} codes{per_level}; the posterior is a point mass, so the bound on -log p(x) "
                   "needs no sampling")
    else:
        latents = (f"dVAE: the test images' argmax codes have perplexity {codes['perplexity']:.1f} and use "
                   f"{codes['codes_used']} codes; the posterior q(c|x) is categorical, so the bound samples "
                   f"{report['k']} code maps from it per image (log w = log p(x|c) + log p(c) − log q(c|x))")
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
    for label, r in rows(report):
        lines.append(f"| {label} | " + " | ".join(cell(r, k) for k, _ in cols) + " |")
    densities = {r.get("density") for r in report["priors"].values()}
    if "estimate" in densities:
        lines += ["", "\\* this prior's log_prob is an estimate (e.g. a probability-flow ODE), so "
                  "nll_iwae, ELBO, latent NLL and marginal_kl under it are estimates, not bounds."]
    if "bound" in densities:
        lines += ["", "† this prior's log_prob is a Monte-Carlo estimate of a lower bound on its log-density "
                  "(diffusion: the variational bound), so its latent NLL and -ELBO are upper bounds in expectation. "
                  "Its nll_iwae is not: the estimate's noise passes through the log-sum-exp over k and makes it "
                  "optimistic (diffusion at its default bound_samples=16: about 1 nat at k = 10)."]
    if report.get("references"):
        means = "the argmax codes" if codes and not point_mass(report) else "the posterior means"
        lines += ["", f"Reference rows, decoded from {report['n_samples']} distinct training images: q(z) draws "
                  f"z ~ q(z|x) (what a perfect prior, the aggregate posterior stage 2 fits, would give with this decoder), reconstruction {means}. Gap closed: (baseline − prior) / "
                  f"(baseline − q(z)) per sample seed, baseline {report['baseline']}: 0 at the baseline, 1 at q(z). "
                  f"Their hole rate is 0 by construction: a training latent is scored by a mixture that holds "
                  f"its own posterior."]
    joint = [n for n in report["priors"] if n not in priors.registry.names()]
    if joint:
        lines += ["", f"{', '.join(joint)}: the prior the VAE was trained with (config.vae.prior), in the ELBO from "
                  "the first step; the others are N(0, I) and priors fitted afterwards to the frozen encoder."]
    if set(report["priors"]) <= set(priors.registry.names(fit="none")):
        lines += ["", "No learned prior is fitted in this workdir: fit one with "
                  "`python train.py --config <config> --workdir <W> --config.stage=prior --config.prior.name=gmm,pixelcnn`."]
    if report.get("temperatures"):
        lines += temperature_curves.markdown(report["temperatures"])
    if report.get("k_sensitivity"):
        lines += bounds.k_sensitivity_markdown(report["k_sensitivity"])
    if report.get("timings_seconds"):
        lines += ["", f"Where the {report['wall_seconds']:.0f} s went (wall seconds per stage, summed over priors):", "",
                  "| stage | seconds | share |", "| --- | --- | --- |"]
        lines += [f"| {stage} | {sec:.1f} | {sec / report['wall_seconds']:.0%} |"
                  for stage, sec in report["timings_seconds"].items()]
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)
