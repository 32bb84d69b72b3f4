"""Compare sampling from N(0, I) with sampling from every learned prior fitted in a workdir.

  python sample.py --workdir runs/fashion_mnist [--out DIR] [--n 10000] [--k 10] [--seeds 0,1,2]
                   [--temperatures 0.6,0.7,0.8,0.9,1.0] [--k_sensitivity 10,100,1000 --k_images 500]

Writes samples_<prior>.png/.npz, comparison.png, report.json and report.md into
W/report/ (or --out); the table has the reference rows q(z) and reconstruction and each
prior's share of the gap to q(z). `--k 5000` gives paper-grade nll_iwae numbers, slowly.
With several --seeds every metric is the mean ± sd over those sample seeds.
--temperatures adds each prior's fd / precision / recall per temperature, its best T chosen
on the validation split, and precision_recall.png; --k_sensitivity the bound at each k on a
fixed subset of --k_images test images.
"""

import sys

from absl import app, flags

from vae import cli
from vae.evaluation import report, report_table
from vae.evaluation import temperatures as temperature_curves

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (config.json + checkpoints).")
_OUT = flags.DEFINE_string("out", None, "Output directory; default WORKDIR/report.")
_N = flags.DEFINE_integer("n", 10000, "Samples per prior.", lower_bound=1)
_K = flags.DEFINE_integer("k", 10, "Importance samples for nll_iwae.", lower_bound=1)
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Sample seeds, comma separated: each draws its own latents (the same "
                          "for every prior); metrics are mean ± sd over them.")
_TEMPERATURES = flags.DEFINE_list("temperatures", [], "Sampling temperatures, comma separated (e.g. "
                                  "0.6,0.7,0.8,0.9,1.0): a precision-recall curve per prior.")
_K_SENSITIVITY = flags.DEFINE_list("k_sensitivity", [], "Importance-sample counts, comma separated (e.g. "
                                   "10,100,1000): nll_iwae at each on a fixed subset of test images.")
_K_IMAGES = flags.DEFINE_integer("k_images", 500, "Test images of --k_sensitivity.", lower_bound=1)
flags.mark_flags_as_required(["workdir"])


def _numbers(flag, parse):
    """A list flag's values through `parse`, or a UsageError naming the flag."""
    try:
        return [parse(v) for v in flag.value]
    except ValueError:
        raise app.UsageError(f"--{flag.name}: expected comma-separated numbers, got {','.join(flag.value)!r}") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    seeds = _numbers(_SEEDS, int)
    try:
        temperatures = temperature_curves.parse(_numbers(_TEMPERATURES, float))
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    k_values = _numbers(_K_SENSITIVITY, int)
    if any(k < 1 for k in k_values):
        raise app.UsageError(f"--k_sensitivity: expected positive integers, got {k_values}")
    result = report.compare(_WORKDIR.value, _OUT.value, n_samples=_N.value, k=_K.value, seeds=seeds,
                            command="python " + " ".join(sys.argv), temperatures=temperatures,
                            k_values=k_values, k_images=_K_IMAGES.value)
    print(report_table.markdown_table(result))


if __name__ == "__main__":
    cli.run(main)
