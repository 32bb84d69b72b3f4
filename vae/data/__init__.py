"""Datasets: where images come from (local files, our TFDS builders, TFDS downloads), the
splits carved from them, and how uint8 images become the floats a model sees.

Images stay uint8 (N, H, W, C) until a jitted step prepares them (`input_pipeline`).
"""

from vae.data import colour, mnist  # noqa: F401 - they register the built-in datasets
