"""A small CNN classifier whose penultimate features define the space of `fd_classifier`,
precision/recall and the label statistics. Trained once per workdir on the real (gray,
not binarized) training images and cached in `W/classifier/`.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from vae import rng
from vae.data import input_pipeline
from vae.data import registry as data_registry
from vae.data.batches import epoch_batch_indices
from vae.errors import DataError
from vae.train import loop, optim
from vae.workdir import checkpoint

FEATURES = 128


class CNN(nnx.Module):
    def __init__(self, image_shape=(28, 28, 1), num_classes: int = 10, *, rngs: nnx.Rngs):
        h, w, c = image_shape
        self.conv1 = nnx.Conv(c, 32, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), strides=2, rngs=rngs)  # 28 -> 14
        self.conv3 = nnx.Conv(64, 64, (3, 3), strides=2, rngs=rngs)  # 14 -> 7
        self.dense = nnx.Linear(-(-h // 4) * -(-w // 4) * 64, FEATURES, rngs=rngs)
        self.out = nnx.Linear(FEATURES, num_classes, rngs=rngs)

    def features(self, x):
        h = nnx.relu(self.conv1(x))
        h = nnx.relu(self.conv2(h))
        h = nnx.relu(self.conv3(h))
        return nnx.relu(self.dense(h.reshape(h.shape[0], -1)))

    def __call__(self, x):
        return self.out(self.features(x))


def _num_classes(dataset) -> int:
    classes = data_registry.get(dataset.name).num_classes
    if not classes:
        raise DataError(f"{dataset.name} has no class labels, so the classifier whose features define "
                        "fd_classifier, precision/recall and label statistics cannot be trained on it")
    return classes


def train_config(num_epochs: int = 4):
    return ml_collections.ConfigDict(dict(learning_rate=2e-3, warmup_steps=100, grad_clip_norm=1.0,
                                          batch_size=128, num_epochs=num_epochs, steps_per_call=8))


def _predict(graphdef, params, x, fn: str, batch: int = 1000):
    apply = _apply(graphdef, fn)
    return jnp.concatenate([apply(params, jnp.asarray(x[i : i + batch])) for i in range(0, len(x), batch)])


@functools.lru_cache(maxsize=None)
def _apply(graphdef, fn):
    if fn == "logits":
        return jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))
    return jax.jit(lambda p, x: nnx.merge(graphdef, p).features(x))


def train(dataset, seed: int = 0, num_epochs: int = 4):
    """Returns (model, test_accuracy)."""
    tc = train_config(num_epochs)
    model = CNN(dataset.image_shape, _num_classes(dataset), rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    images = jnp.asarray(dataset.train.images)
    labels = jnp.asarray(dataset.train.labels)
    steps = len(images) // tc.batch_size
    tx = optim.make_optimizer(tc, steps * tc.num_epochs)

    def step(state, idx):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(input_pipeline.to_float(images[idx]))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        return optim.apply_gradients(tx, state, grads), {"loss": loss}

    chunk = jax.jit(lambda st, b: loop.scan_steps(step, st, b), donate_argnums=0)

    def run_epoch(state, epoch, start, should_stop):
        batches = epoch_batch_indices(rng.key(seed, "classifier"), epoch, len(images), tc.batch_size)
        chunks = (batches[s] for s in loop.chunk_slices(steps, tc.steps_per_call, start))
        return loop.run_chunks(chunk, state, chunks, should_stop=should_stop)

    task = loop.Task(desc="classifier", steps_per_epoch=steps, num_epochs=tc.num_epochs, run_epoch=run_epoch,
                     leave_bar=False)
    state = loop.fit(task, optim.init_state(tx, params))
    model = nnx.merge(graphdef, state["params"])
    return model, accuracy(model, dataset.test)


def accuracy(model, split) -> float:
    graphdef, params = nnx.split(model)
    logits = _predict(graphdef, params, input_pipeline.to_float(split.images), "logits")
    return float(np.mean(np.asarray(jnp.argmax(logits, -1)) == split.labels))


def load_or_train(cdir: str, dataset, seed: int = 0):
    """(model, test_accuracy), cached in `cdir` (a run's W/classifier/)."""
    info_path = os.path.join(cdir, "info.json")
    model = CNN(dataset.image_shape, _num_classes(dataset), rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    if os.path.exists(info_path) and checkpoint.latest(os.path.join(cdir, "checkpoints")) is not None:
        with open(info_path) as f:
            info = json.load(f)
        params = checkpoint.restore(os.path.join(cdir, "checkpoints"), {"params": params})["params"]
        return nnx.merge(graphdef, params), info["test_accuracy"]
    model, acc = train(dataset, seed)
    checkpoint.save(os.path.join(cdir, "checkpoints"), 0, {"params": nnx.state(model)})
    with open(info_path, "w") as f:
        json.dump({"test_accuracy": acc, "dataset": dataset.name, "source": dataset.source}, f)
    return model, acc


def features_and_labels(model, images_float) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features and predicted labels of images in [0, 1]."""
    graphdef, params = nnx.split(model)
    feats = _predict(graphdef, params, images_float, "features")
    labels = jnp.argmax(model.out(feats), -1)
    return np.asarray(feats), np.asarray(labels)
