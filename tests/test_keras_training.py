"""Training parity: k mini-batches through the runtime's MLUpdateTask emulation vs Keras
``train_on_batch`` on the same batches (shuffle off). Trainable weights agree <= 1e-4
relative; frozen weights stay unchanged in both.

SGD runs with the runtime's default assumptions (its momentum form equals Keras's while the
learning rate is constant). Adam runs with ``Assumptions(adam="keras")``: where Core ML adds
epsilon is not public, and Keras adds it before bias correction; with the runtime's default
(textbook) form, weights whose gradients are near epsilon differ by ~1e-3 relative, which
says nothing about the exporter, whose job here is to carry lr, betas and epsilon exactly.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_helpers import layer_weights, randomize, relative_diff, to_channel_first
from updatable_coreml.exporters.keras import export_keras
from updatable_coreml.runtime import Assumptions, load

L = keras.layers
BATCH, STEPS = 4, 3


def _conv_classifier():
    """Frozen conv, trainable conv, pooling, flatten (rows reordered), two trainable dense."""
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(3, 3, activation="relu", name="frozen_conv"),
            L.Conv2D(4, 2, padding="same", activation="relu", name="conv"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(5, activation="sigmoid", name="hidden"),
            L.Dense(4, activation="softmax", name="head"),
        ]
    )
    model.get_layer("frozen_conv").trainable = False
    return randomize(model, seed=3, scale=0.5)


def _regressor():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            L.Dense(6, activation="relu", name="frozen"),
            L.Dense(6, activation="tanh", name="hidden"),
            L.Dense(3, name="head"),
        ]
    )
    model.get_layer("frozen").trainable = False
    return randomize(model, seed=4, scale=0.5)


def _as_core_ml(model, name: str, kernel: np.ndarray) -> np.ndarray:
    """A Keras kernel in Core ML's layout, flat. The Dense after the Flatten reads its input in
    (C, H, W) order on Core ML, so its Keras rows (H, W, C order) are reordered."""
    if kernel.ndim == 4:
        return kernel.transpose(3, 2, 0, 1).ravel()
    previous = model.layers[[layer.name for layer in model.layers].index(name) - 1]
    if isinstance(previous, L.Flatten):
        h, w, c = previous.input.shape[1:]
        kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(kernel.shape)
    return kernel.T.ravel()


def _train_both(model, x, y, tmp_path, *, optimizer, loss, **export_options):
    """Export, update through the runtime, then train Keras on the same batches."""
    model.compile(loss=loss, optimizer=optimizer, run_eagerly=True)
    path = tmp_path / "model.mlmodel"
    export_keras(model, path, batch_size=BATCH, epochs=1, shuffle=False, **export_options)
    runtime = load(path)
    assumptions = (
        Assumptions(adam="keras") if isinstance(optimizer, keras.optimizers.Adam) else None
    )
    result = runtime.update(
        {
            runtime.description.input[0].name: to_channel_first(x),
            runtime.description.trainingInput[-1].name: y,
        },
        assumptions=assumptions,
    )
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        model.train_on_batch(x[batch], y[batch])
    return runtime.spec, result.model.spec


def _check(model, before, original, trained, trainable, frozen):
    for name in trainable:
        kernel, bias = model.get_layer(name).get_weights()
        want = _as_core_ml(model, name, kernel)
        got, got_bias = layer_weights(trained, name)
        assert relative_diff(got, want) <= 1e-4, name
        assert relative_diff(got_bias, bias) <= 1e-4, name
        moved = np.abs(want - _as_core_ml(model, name, before[name][0])).max()
        assert moved > 100 * np.abs(got - want).max(), f"{name} barely trained: proves nothing"
    for name in frozen:
        for old, new in zip(before[name], model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(old, new)
        np.testing.assert_array_equal(
            layer_weights(trained, name)[0], layer_weights(original, name)[0]
        )


OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(
        learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-7
    ),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_classifier_training_parity(optimizer, tmp_path):
    model = _conv_classifier()
    before = {layer.name: layer.get_weights() for layer in model.layers}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 4, BATCH * STEPS)
    original, trained = _train_both(
        model,
        x,
        y,
        tmp_path,
        optimizer=OPTIMIZERS[optimizer](),
        loss="sparse_categorical_crossentropy",
        class_labels=[0, 1, 2, 3],
    )
    _check(model, before, original, trained, ("conv", "hidden", "head"), ("frozen_conv",))


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_regressor_mse_training_parity(optimizer, tmp_path):
    model = _regressor()
    before = {layer.name: layer.get_weights() for layer in model.layers}
    rng = np.random.default_rng(1)
    x = rng.normal(size=(BATCH * STEPS, 5)).astype(np.float32)
    y = rng.normal(size=(BATCH * STEPS, 3)).astype(np.float32)
    original, trained = _train_both(
        model, x, y, tmp_path, optimizer=OPTIMIZERS[optimizer](), loss="mse"
    )
    _check(model, before, original, trained, ("hidden", "head"), ("frozen",))
