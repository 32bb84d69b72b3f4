"""vae/rng.py: one table of random streams; no two streams share a key, and the report draws
each stream for one purpose only."""

import ast

import jax
import numpy as np
import pytest

from tests.conftest import REPO
from vae import rng

NAMES = (*rng.FOLD_IN, *rng.SEED_OFFSET, *rng.ROOT)


def key_data(key):
    return tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())


@pytest.mark.parametrize("root", [0, 7])
def test_streams_of_one_root_never_share_a_key(root):
    """A run's streams (root: config.seed) and a report's (root: its sample seed) each get
    distinct keys; the same number on the two roots is another key, as the roots differ."""
    run = [*rng.RUN_FOLD_IN, *rng.SEED_OFFSET]
    report = [*rng.REPORT_FOLD_IN, "classifier"]
    for names in (run, report):
        keys = [key_data(rng.key(root, name)) for name in names]
        assert len(set(keys)) == len(keys), names
    assert len(set(rng.FIT_STREAMS.values())) == len(rng.FIT_STREAMS)


def test_unknown_stream_is_refused():
    with pytest.raises(KeyError, match="unknown random stream 'noise'"):
        rng.key(0, "noise")
    with pytest.raises(KeyError, match="not a seed-offset stream"):
        rng.seed(0, "samples")


def test_the_report_draws_each_stream_at_one_place():
    """The hole-rate check and the test latents' NLL once shared 'heldout_draws'."""
    tree = ast.parse((REPO / "vae" / "evaluation" / "report.py").read_text())
    used = [node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "key"
            and node.args and isinstance(node.args[0], ast.Constant)]
    assert used and len(used) == len(set(used)), sorted(used)
    assert set(used) <= set(NAMES)
