"""Compare sampling from N(0, I) with sampling from every learned prior fitted in a workdir.

  python sample.py --workdir runs/fashion_mnist [--out DIR] [--n 10000] [--k 10] [--seeds 0,1,2]

Writes samples_<prior>.png/.npz, comparison.png, report.json and report.md into
W/report/ (or --out). `--k 5000` gives paper-grade nll_iwae numbers, slowly. With several
--seeds every metric is the mean ± sd over those sample seeds.
"""

import sys

from absl import app, flags

from vae import cli
from vae.evaluation import report, report_table

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (config.json + checkpoints).")
_OUT = flags.DEFINE_string("out", None, "Output directory; default WORKDIR/report.")
_N = flags.DEFINE_integer("n", 10000, "Samples per prior.", lower_bound=1)
_K = flags.DEFINE_integer("k", 10, "Importance samples for nll_iwae.", lower_bound=1)
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Sample seeds, comma separated: each draws its own latents (the same "
                          "for every prior); metrics are mean ± sd over them.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        seeds = [int(s) for s in _SEEDS.value]
    except ValueError:
        raise app.UsageError(f"--seeds: expected comma-separated integers, got {','.join(_SEEDS.value)!r}") from None
    result = report.compare(_WORKDIR.value, _OUT.value, n_samples=_N.value, k=_K.value, seeds=seeds,
                            command="python " + " ".join(sys.argv))
    print(report_table.markdown_table(result))


if __name__ == "__main__":
    cli.run(main)
