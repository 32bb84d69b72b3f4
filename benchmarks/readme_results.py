"""README's results tables, generated from a report.json and checked against README.

  python benchmarks/readme_results.py --report runs/fashion_mnist/report/report.json           # print the block
  python benchmarks/readme_results.py --report runs/fashion_mnist/report/report.json --check README.md

A block in README sits between `<!-- results:NAME -->` and `<!-- /results:NAME -->` (NAME: the
report's dataset, `_vq` appended for a VQ-VAE's) and names the commit the numbers came from. `--check` fails (exit 1) unless
README holds exactly the block this report.json gives, from a report of a clean checkout; it
prints a skip line and exits 0 when the report does not exist (nothing to compare).
"""

from __future__ import annotations

import json
import os
import re
import sys

from absl import app, flags

from vae import cli
from vae.evaluation import report_table

_REPORT = flags.DEFINE_string("report", "runs/fashion_mnist/report/report.json", "A report.json of sample.py.")
_CHECK = flags.DEFINE_string("check", None, "Check this README instead of printing the block.")

LABELS = {"standard_normal": "N(0, I)"}


def block(rep: dict) -> str:
    """The README block for one report.json."""
    code = rep.get("code") or {}
    commit = (code.get("commit") or "unknown")[:10]
    dirty = " (uncommitted changes)" if code.get("dirty") else ""
    runs = sorted({(r["code"] or {}).get("commit", "?")[:10] for r in rep.get("training_runs", [])})
    cols = report_table.columns(rep)
    head = ["prior", *(h for _, h in cols)]
    lines = [
        f"<!-- results:{results_name(rep)} -->",
        f"Measured at commit {commit}{dirty} (report.json `code`; trained at {', '.join(runs) or 'unknown'}): "
        f"`{rep['command']}`, {rep['n_samples']} samples per prior"
        + (f", mean ± sd over sample seeds {rep['seeds']}" if len(rep.get("seeds", [0])) > 1 else "")
        + f", wall {rep['wall_seconds'] / 60:.1f} min.",
        "",
        "| " + " | ".join(head) + " |",
        "| --- |" + " --- |" * (len(head) - 1),
    ]
    for name, r in rep["priors"].items():
        cells = [f"{r[k]:.4f}" if k == "nll_iwae_bits_per_dim" else report_table.cell(r, k) for k, _ in cols]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    lines.append(f"<!-- /results:{results_name(rep)} -->")
    return "\n".join(lines)


def results_name(rep: dict) -> str:
    """The block's NAME: the dataset, with '_vq' for a VQ-VAE's report."""
    return rep["dataset"] + ("_vq" if rep.get("vae", {}).get("arch") == "vq" else "")


def check(readme: str, rep: dict) -> list[str]:
    """Problems with README's block for this report (empty: it matches)."""
    name = results_name(rep)
    found = re.search(rf"<!-- results:{name} -->.*?<!-- /results:{name} -->", readme, re.S)
    problems = []
    if found is None:
        problems.append(f"README has no <!-- results:{name} --> block")
    elif found.group(0) != block(rep):
        problems.append(f"README's {name} block differs from the one this report.json gives")
    if (rep.get("code") or {}).get("dirty") is not False:
        problems.append("the report was made from a checkout with uncommitted changes (or outside git)")
    return problems


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not os.path.exists(_REPORT.value):
        print(f"skip: no report at {_REPORT.value}; run README's main job to compare")
        return
    with open(_REPORT.value) as f:
        rep = json.load(f)
    if _CHECK.value is None:
        print(block(rep))
        return
    with open(_CHECK.value) as f:
        problems = check(f.read(), rep)
    for p in problems:
        print(f"mismatch: {p}", file=sys.stderr)
    if problems:
        print("the block this report gives:\n" + block(rep), file=sys.stderr)
        sys.exit(1)
    print(f"README's {results_name(rep)} table matches {_REPORT.value}")


if __name__ == "__main__":
    cli.run(main)
