"""TensorBoard event files beside metrics.jsonl, for people who watch curves there
(`config.log.tensorboard=True`; `tensorboard --logdir W/tensorboard`).

metrics.jsonl stays the source of truth: every record appended to it is also written here
as scalars, tagged `<split>/<metric>` for stage 1 and `prior/<name>/<split>/<metric>` for
stage 2, at the record's step; image grids are written as images. tensorboardX writes the
files with no TensorFlow. Only process 0 writes, as it does metrics.jsonl.
"""

from __future__ import annotations

import numbers

import numpy as np

NOT_SCALARS = ("step", "epoch", "split", "prior")  # a record's coordinates, not its values


def tags(record: dict) -> dict[str, float]:
    """{tag: value} of a metrics record's numeric values (booleans and lists are skipped)."""
    split = record.get("split", "train")
    prefix = f"prior/{record['prior']}/{split}" if record.get("prior") else split
    return {f"{prefix}/{key}": float(value) for key, value in record.items()
            if key not in NOT_SCALARS and isinstance(value, numbers.Real) and not isinstance(value, bool)}


class TensorBoardLog:
    """A tensorboardX writer in `path` (W/tensorboard/), opened on first use."""

    def __init__(self, path: str):
        self.path = path
        self._writer = None

    def _open(self):
        if self._writer is None:
            from tensorboardX import (
                SummaryWriter,  # deferred: only runs that ask for it pay the import
            )

            self._writer = SummaryWriter(self.path)
        return self._writer

    def write_record(self, record: dict) -> None:
        writer = self._open()
        for tag, value in tags(record).items():
            writer.add_scalar(tag, value, global_step=int(record["step"]))
        writer.flush()

    def write_image(self, tag: str, image, step: int) -> None:
        """`image`: (H, W), (H, W, 1) or (H, W, 3), floats in [0, 1] or uint8."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.dtype != np.uint8:
            image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
        writer = self._open()
        writer.add_image(tag, image, global_step=int(step), dataformats="HWC")
        writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
