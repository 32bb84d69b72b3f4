"""Experiment configs: `get_config(preset)` returning an ml_collections.ConfigDict."""
