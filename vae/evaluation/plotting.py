"""Image grids and the report's precision-recall figure as PNG files.

No pyplot and no global backend here: files are written through an Agg canvas of their
own, so importing this module leaves a notebook's inline backend alone.
"""

from __future__ import annotations

import math
import os

import matplotlib.image
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def make_grid(images, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, H, W, 1|3) floats in [0, 1] -> one (rows*(H+pad), cols*(W+pad)) image."""
    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, col = divmod(i, ncol)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = images[i]
    return np.clip(grid[..., 0] if c == 1 else grid, 0.0, 1.0)


def save_image(image, path: str) -> str:
    """One (H, W) or (H, W, 3) image in [0, 1] as a PNG (grey for one channel)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    matplotlib.image.imsave(path, image, cmap="gray", vmin=0.0, vmax=1.0)
    return path


def save_grid(images, path: str, ncol: int | None = None) -> str:
    return save_image(make_grid(images, ncol), path)


def save_labelled_grids(grids: dict, path: str, ncol: int | None = None) -> str:
    """Several image sets side by side, each titled with its key."""
    fig = Figure(figsize=(4 * len(grids), 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(grids), squeeze=False)
    for ax, (title, images) in zip(axes[0], grids.items()):
        ax.imshow(make_grid(images, ncol), cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def save_precision_recall(curves: dict, points: dict, path: str) -> str:
    """One precision-recall curve per prior over temperature, {name: (precisions, recalls,
    temperatures)}, each point labelled with its T, and reference points {name: (p, r)}."""
    fig = Figure(figsize=(6, 5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, (precision, recall, temperatures) in curves.items():
        ax.plot(recall, precision, marker="o", label=name)
        for p, r, t in zip(precision, recall, temperatures):
            ax.annotate(f"{t:g}", (r, p), textcoords="offset points", xytext=(3, 3), fontsize=7)
    for name, (p, r) in points.items():
        ax.plot([r], [p], marker="*", markersize=14, linestyle="none", label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("samples over temperature (test split; labels: T)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
