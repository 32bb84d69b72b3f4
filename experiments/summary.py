"""What the experiments write at the end: numbers over seeds as mean ± sd, and the summary files.

Imported by the scripts beside it as `experiments.summary` (the package is installed with the project).
"""

from __future__ import annotations

import json
import os

import numpy as np


def mean_sd(values) -> dict:
    """{'mean', 'sd' (ddof=1; 0 for one value), 'values'}: a number over seeds, as experiments report it."""
    values = [float(v) for v in values]
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": sd, "values": values}


def write_summary(out_dir: str, summary: dict, text: str) -> None:
    """An experiment's summary.json and summary.md in `out_dir`; prints the markdown."""
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(text)
    print(text)
