"""The Keras export as a whole: refusals, report, determinism, metadata, the fit callback."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_helpers import TOLERANCE, max_abs_diff, randomize
from updatable_coreml.errors import ConfigError, NotUpdatableError, UnsupportedError
from updatable_coreml.exporters.keras import UpdatableCoreMLExport, export_keras
from updatable_coreml.options import DEFAULT_EPOCHS
from updatable_coreml.runtime import load
from updatable_coreml.spec_io import load_spec, neural_network
from updatable_coreml.validator import is_valid, validate

L = keras.layers


def _mlp(loss="sparse_categorical_crossentropy", optimizer=None, activation="softmax", seed=0):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(8, activation="relu", name="body"),
            L.Dense(3, activation=activation, name="head"),
        ]
    )
    model.get_layer("body").trainable = False
    randomize(model, seed)
    if loss is not None:
        model.compile(loss=loss, optimizer=optimizer or keras.optimizers.SGD(0.01, momentum=0.9))
    return model


# -- losses and optimizers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, optimizer, words",
    [
        (keras.losses.CategoricalCrossentropy(label_smoothing=0.1), None, "label_smoothing"),
        ("binary_crossentropy", None, "binary"),
        (lambda y, p: keras.ops.mean(p), None, "custom loss"),
        ("hinge", None, "hinge"),
        ("sparse_categorical_crossentropy", keras.optimizers.SGD(0.01, nesterov=True), "nesterov"),
        ("sparse_categorical_crossentropy", keras.optimizers.Adam(amsgrad=True), "amsgrad"),
        (
            "sparse_categorical_crossentropy",
            keras.optimizers.Adam(weight_decay=0.01),
            "weight_decay",
        ),
        ("sparse_categorical_crossentropy", keras.optimizers.AdamW(), "AdamW"),
        ("sparse_categorical_crossentropy", keras.optimizers.RMSprop(), "RMSprop"),
    ],
    ids=[
        "label_smoothing",
        "bce",
        "custom",
        "hinge",
        "nesterov",
        "amsgrad",
        "weight_decay",
        "adamw",
        "rmsprop",
    ],
)
def test_unsupported_training_options_are_refused(loss, optimizer, words, tmp_path):
    model = _mlp(loss, optimizer)
    path = tmp_path / "m.mlmodel"
    with pytest.raises(UnsupportedError, match=words):
        export_keras(model, path)
    assert not path.exists()


def test_allow_unsupported_downgrades_to_a_reported_warning(tmp_path):
    model = _mlp(
        keras.losses.SparseCategoricalCrossentropy(),
        keras.optimizers.SGD(0.01, momentum=0.5, nesterov=True),
    )
    report = export_keras(model, tmp_path / "m.mlmodel", allow_unsupported=True)
    assert any("nesterov" in w for w in report.warnings)


def test_from_logits_appends_softmax_and_keeps_output_name(tmp_path):
    model = _mlp(keras.losses.SparseCategoricalCrossentropy(from_logits=True), activation=None)
    path = tmp_path / "m.mlmodel"
    report = export_keras(model, path, class_labels=["a", "b", "c"])
    assert any("appended softmax" in c for c in report.changes)
    assert "head" in report.outputs
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    runtime = load(path)
    probs = runtime.predict({runtime.description.input[0].name: x})["head"]
    expected = keras.ops.convert_to_numpy(keras.activations.softmax(model(x)))
    got = np.array([[row[k] for k in "abc"] for row in probs])
    assert np.abs(got - expected).max() <= TOLERANCE


def test_mapped_hyperparameters_and_ranges(tmp_path):
    model = _mlp(
        "categorical_crossentropy",
        keras.optimizers.Adam(0.003, beta_1=0.85, beta_2=0.98, epsilon=1e-6),
    )
    report = export_keras(
        model,
        tmp_path / "m.mlmodel",
        batch_size=16,
        epochs=5,
        allowed_batch_sizes=[8, 16],
        allowed_epochs=range(1, 21),
        lr_range=(1e-4, 0.01),
        seed=7,
    )
    adam = neural_network(load_spec(report.path)).updateParams.optimizer.adamOptimizer
    assert adam.learningRate.defaultValue == pytest.approx(0.003)
    assert (adam.learningRate.range.minValue, adam.learningRate.range.maxValue) == (1e-4, 0.01)
    assert (adam.beta1.defaultValue, adam.beta2.defaultValue) == pytest.approx((0.85, 0.98))
    assert adam.eps.defaultValue == pytest.approx(1e-6)
    assert list(adam.miniBatchSize.set.values) == [8, 16]
    assert any("one-hot" in a for a in report.assumptions)


def test_learning_rate_schedule_becomes_current_value(tmp_path):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    report = export_keras(_mlp(optimizer=keras.optimizers.SGD(schedule)), tmp_path / "m.mlmodel")
    assert any("schedule" in a for a in report.assumptions)
    sgd = neural_network(load_spec(report.path)).updateParams.optimizer.sgdOptimizer
    assert sgd.learningRate.defaultValue == pytest.approx(0.1)


def test_regularizer_and_clipping_are_reported(tmp_path):
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(3, activation="softmax", kernel_regularizer="l2")]
    )
    model.compile(
        loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(clipnorm=1.0)
    )
    report = export_keras(model, tmp_path / "m.mlmodel")
    assert any("kernel_regularizer" in w for w in report.warnings)
    assert any("clipnorm" in w for w in report.warnings)


def test_uncompiled_model_needs_loss(tmp_path):
    with pytest.raises(ConfigError, match="compile"):
        export_keras(_mlp(loss=None), tmp_path / "m.mlmodel")


# -- layers and trainability ---------------------------------------------------------------


def test_unknown_layer_is_named(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            L.Conv2D(2, 2),
            L.UpSampling2D(name="up"),
            L.Flatten(),
            L.Dense(2, activation="softmax"),
        ]
    )
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    with pytest.raises(UnsupportedError, match="'up'.*UpSampling2D"):
        export_keras(model, tmp_path / "m.mlmodel")


def test_backprop_blocker_names_both_layers(tmp_path):
    inputs = keras.Input((4,))
    a = L.Dense(4, name="left")(inputs)
    b = L.Dense(4, name="right")(inputs)
    merged = L.Add(name="merge")([a, b])
    model = keras.Model(inputs, L.Dense(3, activation="softmax", name="head")(merged))
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    with pytest.raises(NotUpdatableError, match="'merge'.*'left'.*trainable=\\['head'\\]"):
        export_keras(model, tmp_path / "m.mlmodel")
    report = export_keras(model, tmp_path / "m.mlmodel", trainable=["head"])
    assert report.trainable == ["head"]


def test_trainable_batchnorm_is_refused_unless_allowed(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            L.Dense(4, name="d"),
            L.BatchNormalization(name="bn"),
            L.Dense(2, activation="softmax", name="head"),
        ]
    )
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    with pytest.raises(NotUpdatableError, match="'bn'"):
        export_keras(model, tmp_path / "m.mlmodel")
    report = export_keras(model, tmp_path / "m.mlmodel", allow_unsupported=True)
    assert any("'bn'" in w for w in report.warnings)
    assert any("#492" in w for w in report.warnings)  # frozen BN now sits on the trainable path


def test_unknown_trainable_name(tmp_path):
    with pytest.raises(ConfigError, match="nope"):
        export_keras(_mlp(), tmp_path / "m.mlmodel", trainable=["nope"])


# -- output file ---------------------------------------------------------------------------


def test_export_is_deterministic(tmp_path):
    model = _mlp()
    first = export_keras(model, tmp_path / "a.mlmodel", class_labels=["x", "y", "z"], seed=1)
    second = export_keras(model, tmp_path / "b.mlmodel", class_labels=["x", "y", "z"], seed=1)
    assert (tmp_path / "a.mlmodel").read_bytes() == (tmp_path / "b.mlmodel").read_bytes()
    assert first.sha256 == second.sha256


def test_classifier_metadata_slots_and_report(tmp_path):
    model = keras.Sequential([keras.Input((5,)), L.Dense(4, activation="softmax", name="head")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    report = export_keras(
        model,
        tmp_path / "m.mlmodel",
        class_labels=["cat", "dog"],
        extra_class_slots=2,
        author="me",
        license="MIT",
        version="1.2",
        description="pets",
    )
    spec = load_spec(report.path)
    assert list(spec.neuralNetworkClassifier.stringClassLabels.vector) == [
        "cat",
        "dog",
        "user0",
        "user1",
    ]
    meta = spec.description.metadata
    assert (meta.author, meta.license, meta.versionString, meta.shortDescription) == (
        "me",
        "MIT",
        "1.2",
        "pets",
    )
    assert meta.userDefined["updatable_coreml.source"].startswith("keras==")
    assert "updatable_coreml.version" in meta.userDefined
    assert is_valid(validate(spec)) and spec.isUpdatable
    json.dumps(report.to_dict())
    assert "head" in report.summary()


def test_regressor(tmp_path):
    model = keras.Sequential(
        [keras.Input((5,)), L.Dense(4, activation="tanh", name="hidden"), L.Dense(2, name="out")]
    )
    randomize(model)
    model.compile(loss="mse", optimizer="adam")
    report = export_keras(model, tmp_path / "m.mlmodel", regressor=True)
    assert report.model_type == "neuralNetworkRegressor"
    assert is_valid(validate(report.path))
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    assert max_abs_diff(model, report.path, x) <= TOLERANCE


def test_wrong_label_count(tmp_path):
    with pytest.raises(ConfigError, match="class labels"):
        export_keras(_mlp(), tmp_path / "m.mlmodel", class_labels=["a", "b"])
    assert not (tmp_path / "m.mlmodel").exists()


# -- callback --------------------------------------------------------------------------------


def test_callback_exports_with_fit_settings(tmp_path, capsys):
    model = _mlp()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 6)).astype(np.float32), rng.integers(0, 3, 20)
    callback = UpdatableCoreMLExport(
        tmp_path / "e{epoch}.mlmodel", every_n_epochs=2, class_labels=[0, 1, 2], seed=3
    )
    model.fit(x, y, batch_size=5, epochs=3, verbose=0, callbacks=[callback])
    assert (tmp_path / "e2.mlmodel").exists() and (tmp_path / "e3.mlmodel").exists()
    spec = load_spec(tmp_path / "e3.mlmodel")
    sgd = neural_network(spec).updateParams.optimizer.sgdOptimizer
    assert sgd.miniBatchSize.defaultValue == 5
    # the server's fit(epochs=3) is not the device's default unless asked (issue 15)
    assert neural_network(spec).updateParams.epochs.defaultValue == DEFAULT_EPOCHS
    assert callback.report.trainable == ["head"]
    assert capsys.readouterr().out == ""  # quiet, like Keras's own callbacks
    assert max_abs_diff(model, tmp_path / "e3.mlmodel", x[:4]) <= TOLERANCE

    copied = UpdatableCoreMLExport(
        tmp_path / "fit.mlmodel", epochs="fit", verbose=True, class_labels=[0, 1, 2]
    )
    model.fit(x, y, batch_size=5, epochs=2, verbose=0, callbacks=[copied])
    assert neural_network(load_spec(tmp_path / "fit.mlmodel")).updateParams.epochs.defaultValue == 2
    assert "trains on device: head" in capsys.readouterr().out


def test_callback_refuses_unknown_options_when_made(tmp_path):
    with pytest.raises(ConfigError, match="'class_label'.*did you mean 'class_labels'"):
        UpdatableCoreMLExport(tmp_path / "m.mlmodel", class_label=[0, 1])
    with pytest.raises(ConfigError, match="epochs='all'"):
        UpdatableCoreMLExport(tmp_path / "m.mlmodel", epochs="all")


def test_callback_refuses_class_weight_before_training(tmp_path):
    model = _mlp()
    x, y = np.zeros((4, 6), np.float32), np.array([0, 1, 2, 0])
    callback = UpdatableCoreMLExport(tmp_path / "m.mlmodel", verbose=False)
    with pytest.raises(UnsupportedError, match="class_weight"):
        model.fit(
            x, y, epochs=1, verbose=0, class_weight={0: 1.0, 1: 2.0, 2: 1.0}, callbacks=[callback]
        )
    assert not (tmp_path / "m.mlmodel").exists()


def _layer_norm_model(frozen_norm: bool):
    """conv -> UnitNormalization (no converter) -> flatten -> dense softmax."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.UnitNormalization(name="ln")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="fc")(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        layer.trainable = layer.name == "fc" or (not frozen_norm and layer.name == "conv")
    return model


def test_unconvertible_frozen_layer_names_the_pipeline_option(tmp_path):
    """A layer without a converter in the frozen part: the error says so and names the
    coremltools-backbone pipeline (flags and keywords), with a short class name."""
    with pytest.raises(UnsupportedError) as caught:
        export_keras(
            _layer_norm_model(True), tmp_path / "m.mlmodel", loss="categorical_crossentropy"
        )
    message = str(caught.value)
    assert "'ln' (keras.layers.UnitNormalization)" in message and "keras.src" not in message
    assert "frozen part" in message and "--pipeline --backbone coremltools" in message
    assert "backbone='coremltools'" in message and "supported:" not in message
    assert not (tmp_path / "m.mlmodel").exists()


def test_unconvertible_layer_on_the_trainable_path_says_so(tmp_path):
    with pytest.raises(UnsupportedError, match="trainable path") as caught:
        export_keras(
            _layer_norm_model(False), tmp_path / "m.mlmodel", loss="categorical_crossentropy"
        )
    assert "--pipeline" not in str(caught.value)
