"""Readers of a trained run: the evaluation data (fixed binarizations, encoded latents), the
comparison report, sample-quality metrics in a classifier's feature space, the aggregate
posterior, diagnostics and image grids. Nothing here imports `vae.train`.
"""
