"""Image grids as PNG files (no figure machinery for plain grids)."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


def save_grid(images, path: str, ncol: int | None = None) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    plt.imsave(path, make_grid(images, ncol), cmap="gray", vmin=0.0, vmax=1.0)
    return path


def save_labelled_grids(grids: dict, path: str, ncol: int | None = None) -> str:
    """Several image sets side by side, each titled with its key."""
    fig, axes = plt.subplots(1, len(grids), figsize=(4 * len(grids), 4.4), squeeze=False)
    for ax, (title, images) in zip(axes[0], grids.items()):
        ax.imshow(make_grid(images, ncol), cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
