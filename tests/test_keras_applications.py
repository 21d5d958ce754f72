"""keras.applications backbones (weights=None, frozen) with a trainable Dense head export,
validate, predict like Keras, and train the head like Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_helpers import TOLERANCE, keras_dense_weights, layer_weights, max_abs_diff, relative_diff
from updatable_coreml.exporters.keras import export_keras
from updatable_coreml.runtime import load

SIZE = 32


def _with_batchnorm_statistics(model: keras.Model, seed: int = 0) -> keras.Model:
    """Fresh batch norms are identities; give them statistics so folding is really tested."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.8, 1.2, c),
                    rng.normal(0, 0.1, c),
                    rng.normal(0, 0.1, c),
                    rng.uniform(0.8, 1.2, c),
                ]
            )
    return model


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone",
    [
        lambda: keras.applications.MobileNetV2(
            weights=None, include_top=False, pooling="avg", input_shape=(SIZE, SIZE, 3), alpha=0.35
        ),
        lambda: keras.applications.ResNet50(
            weights=None, include_top=False, pooling="avg", input_shape=(SIZE, SIZE, 3)
        ),
    ],
    ids=["mobilenet_v2", "resnet50"],
)
def test_frozen_backbone_with_trainable_head(backbone, tmp_path):
    base = _with_batchnorm_statistics(backbone())
    base.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3))
    head = keras.layers.Dense(4, activation="softmax", name="head")
    model = keras.Model(inputs, head(base(inputs, training=False)))
    model.compile(
        loss="sparse_categorical_crossentropy",
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        run_eagerly=True,
    )
    path = tmp_path / "model.mlmodel"
    report = export_keras(
        model, path, class_labels=["a", "b", "c", "d"], batch_size=2, epochs=1, shuffle=False
    )
    assert report.trainable == ["head"]
    assert not any(change.startswith("batch norm") for change in report.changes)  # all folded

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, SIZE, SIZE, 3)).astype(np.float32)
    features = keras.Model(inputs, base(inputs))(x)
    assert float(np.std(features)) > 1e-2  # the comparison below sees real numbers
    assert max_abs_diff(model, path, x) <= TOLERANCE

    labels = np.array(["a", "c", "d", "b"])
    runtime = load(path)
    result = runtime.update(
        {runtime.description.input[0].name: x.transpose(0, 3, 1, 2), "classLabel": labels}
    )
    for step in range(2):
        model.train_on_batch(
            x[2 * step : 2 * step + 2], np.array([0, 2, 3, 1])[2 * step : 2 * step + 2]
        )
    for got, want in zip(layer_weights(result.model.spec, "head"), keras_dense_weights(head)):
        assert relative_diff(got, want) <= 1e-4
