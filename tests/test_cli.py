"""vae/cli.py: a mistyped flag ends with its message as written (no repr, no traceback), exit code 2,
in train.py and in the scripts whose --config has a default. Each runs as a real subprocess and
fails while parsing flags, before any training."""

import pytest

from tests.conftest import run_cli


def test_a_misspelled_config_key_prints_the_message_itself(tmp_path):
    result = run_cli(["train.py", "--config", "configs/fashion_mnist.py", "--workdir", str(tmp_path / "w"),
                      "--config.train.num_epoch=3"])
    assert result.returncode == 2, result.stderr[-3000:]
    err = result.stderr
    assert "Traceback" not in err
    # str(KeyError) was the repr of ml_collections' message: \'num_epoch\'\nDid you mean ...?. Run with
    assert "\\'" not in err and '\\"' not in err and "\\n" not in err and "?." not in err, err
    assert "--config.train.num_epoch=3" in err
    assert 'Did you mean "num_epochs" instead of "num_epoch"?\n' in err
    assert err.splitlines()[-1].startswith("Run with --helpfull")
    assert not (tmp_path / "w").exists()  # nothing was started


@pytest.mark.parametrize("script, override", [
    ("benchmarks/prior_sampling.py", "--config.prior.pixelcnn.featurez=8"),
    ("benchmarks/prior_fit_throughput.py", "--config.train.num_epoch=3"),
])
def test_a_misspelled_key_of_a_default_config_is_the_same_clear_error(script, override):
    """These scripts' --config has a default, which ml_collections read (overrides included)
    when the flag was defined, at import: a typo there was a traceback."""
    result = run_cli([script, override])
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: bad flag {override}: no config field"), result.stderr
