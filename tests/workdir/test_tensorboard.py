"""`config.log.tensorboard=True`: every metrics.jsonl record and the image grids also as
TensorBoard events, read back here with nothing but the event file format."""

import glob
import struct

import pytest
from tensorboardX.proto import event_pb2

from tests.conftest import mlp_config, read_metrics
from vae.workdir import tensorboard


def read_events(directory) -> list:
    """Every Event in the TFRecord-framed event files under `directory`: each record is a
    little-endian uint64 length, its masked CRC, the payload, the payload's masked CRC."""
    events = []
    for path in sorted(glob.glob(f"{directory}/events.out.tfevents.*")):
        data = open(path, "rb").read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            payload = data[offset + 12:offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event()
            event.ParseFromString(payload)
            events.append(event)
    return events


def test_tags_name_split_prior_and_metric_and_skip_coordinates():
    record = {"step": 20, "epoch": 1, "split": "validation", "prior": "gmm", "latent_nll/gmm": 125.1, "ok": True}
    assert tensorboard.tags(record) == {"prior/gmm/validation/latent_nll/gmm": 125.1}
    assert tensorboard.tags({"step": 3, "split": "test", "elbo": -90.5}) == {"test/elbo": -90.5}


@pytest.mark.slow
def test_a_run_with_tensorboard_writes_the_same_values_as_metrics_jsonl(mnist_dir, tmp_path):
    from vae.train import stages

    config = mlp_config()
    config.train.num_epochs = 1
    config.log.tensorboard = True
    workdir = tmp_path / "run"
    stages.train_and_evaluate(config, str(workdir))

    events = read_events(workdir / "tensorboard")
    scalars = {(v.tag, e.step): v.simple_value for e in events for v in e.summary.value if v.HasField("simple_value")}
    images = {v.tag for e in events for v in e.summary.value if v.HasField("image")}
    records = read_metrics(workdir)
    assert records
    for record in records:
        for tag, value in tensorboard.tags(record).items():
            assert scalars[(tag, record["step"])] == pytest.approx(value, rel=1e-6), tag
    assert {"samples/reconstructions", "samples/prior_samples"} <= images
    assert ("validation/elbo", records[-1]["step"]) in scalars


def test_tensorboard_is_off_by_default(straight_run):
    assert not (straight_run / "tensorboard").exists()
