"""Keras sensor models (issue 14): Conv1D and 1-D pooling as Core ML convolution and pooling over
the width axis, a trainable Conv1D updated on device.

A (steps, channels) input read by a Conv1D is declared ``[C, 1, steps]``: one example is
``x.T[:, None, :]``. Forward parity is max abs diff <= 1e-4 against Keras; training parity is
<= 1e-4 relative against ``train_on_batch`` on the same mini-batches (shuffle off), for SGD
with momentum and for Adam (``Assumptions(adam="keras")``, see tests/test_keras_training.py).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_helpers import TOLERANCE, layer_weights, randomize, relative_diff
from updatable_coreml.errors import NotUpdatableError, UnsupportedError
from updatable_coreml.exporters.keras import export_keras
from updatable_coreml.runtime import Assumptions, load
from updatable_coreml.spec_io import load_spec, neural_network
from updatable_coreml.validator import is_valid, validate

L = keras.layers
STEPS, CHANNELS, CLASSES, BATCH, BATCHES = 50, 3, 4, 4, 3


def over_width(x: np.ndarray) -> np.ndarray:
    """Keras (B, steps, C) -> Core ML's declared (B, C, 1, steps)."""
    return np.ascontiguousarray(x.transpose(0, 2, 1)[:, :, None, :])


def accelerometer_classifier(seed: int = 0) -> keras.Model:
    """The brief's sensor model: frozen Conv1D, trainable Conv1D, global average, softmax."""
    model = keras.Sequential(
        [
            keras.Input((STEPS, CHANNELS), name="motion"),
            L.Conv1D(8, 5, activation="relu", name="frozen_conv", trainable=False),
            L.Conv1D(6, 3, padding="same", activation="relu", name="conv"),
            L.GlobalAveragePooling1D(name="pool"),
            L.Dense(CLASSES, activation="softmax", name="head"),
        ]
    )
    return randomize(model, seed=seed, scale=0.4)


def probabilities(path, x: np.ndarray) -> np.ndarray:
    runtime = load(path)
    out = runtime.predict({runtime.description.input[0].name: x})
    rows = out[runtime.description.predictedProbabilitiesName]
    return np.array([[row[label] for label in range(CLASSES)] for row in rows])


def export(model, path, **options):
    options.setdefault("optimizer", keras.optimizers.SGD(0.05, momentum=0.9))
    options.setdefault("loss", "sparse_categorical_crossentropy")
    options.setdefault("class_labels", list(range(CLASSES)))
    return export_keras(model, path, batch_size=BATCH, epochs=1, shuffle=False, **options)


# -- forward --------------------------------------------------------------------------------


def test_accelerometer_classifier_predicts_like_keras_and_is_valid(tmp_path):
    model = accelerometer_classifier()
    path = tmp_path / "motion.mlmodel"
    report = export(model, path)
    assert report.trainable == ["conv", "head"]
    x = np.random.default_rng(0).normal(size=(6, STEPS, CHANNELS)).astype(np.float32)
    got = probabilities(path, over_width(x))
    assert np.abs(got - model.predict(x, verbose=0)).max() <= TOLERANCE
    spec = load_spec(path)
    assert list(spec.description.input[0].type.multiArrayType.shape) == [CHANNELS, 1, STEPS]
    # the app is told the layout (Xcode shows the shortDescription)
    assert (
        f"[{CHANNELS}, 1, {STEPS}] (channels, 1, steps)"
        in spec.description.input[0].shortDescription
    )
    layers = {layer.name: layer for layer in neural_network(spec).layers}
    assert layers["conv"].isUpdatable and layers["conv"].WhichOneof("layer") == "convolution"
    assert not layers["frozen_conv"].isUpdatable
    assert "permute" not in {layer.WhichOneof("layer") for layer in layers.values()}
    findings = validate(path)
    assert is_valid(findings), [str(f) for f in findings]


def test_a_sensor_pipeline_keeps_the_width_layout(tmp_path):
    """pipeline=True with our frontend's backbone: the frozen Conv1D stage and the trainable
    stage read the (C, 1, steps) layout (a coremltools backbone reads (steps, C) as it is:
    tests/test_backbone_pipeline.py)."""
    model = accelerometer_classifier(seed=2)
    model.get_layer("conv").trainable = False
    path = tmp_path / "pipeline.mlmodel"
    report = export(model, path, pipeline=True, backbone="frontend")
    assert report.model_type == "pipeline" and report.trainable == ["head"]
    x = np.random.default_rng(8).normal(size=(6, STEPS, CHANNELS)).astype(np.float32)
    got = probabilities(path, over_width(x))
    assert np.abs(got - model.predict(x, verbose=0)).max() <= TOLERANCE
    assert is_valid(validate(path))


def _forward_case(layers: list, inputs=(12, 3), dtype="float32") -> keras.Model:
    model = keras.Sequential([keras.Input(inputs, dtype=dtype), *layers])
    for layer in model.layers:
        layer.trainable = False
    return randomize(model, seed=7, scale=0.5)


FORWARD_CASES = {
    "strided_dilated_bias_free": lambda: [
        L.Conv1D(4, 3, strides=2, use_bias=False, name="c1"),
        L.Conv1D(5, 2, dilation_rate=2, padding="same", activation="tanh", name="c2"),
        L.Flatten(),
        L.Dense(3, name="out"),
    ],
    "causal_grouped_pooled": lambda: [
        L.Conv1D(4, 3, padding="causal", dilation_rate=2, name="c1"),
        L.Conv1D(6, 2, groups=2, activation="sigmoid", name="c2"),
        L.MaxPooling1D(2, name="max"),
        L.AveragePooling1D(3, strides=1, padding="same", name="avg"),
        L.GlobalMaxPooling1D(name="gmax"),
        L.Dense(3, name="out"),
    ],
    "padded_cropped_same_strided": lambda: [
        L.ZeroPadding1D((2, 1), name="pad"),
        L.Conv1D(4, 3, padding="same", strides=2, activation="relu", name="c1"),
        L.Cropping1D((1, 2), name="crop"),
        L.AveragePooling1D(2, strides=2, padding="same", name="avg"),
        L.Flatten(),
        L.Dense(3, name="out"),
    ],
    "depthwise_separable": lambda: [
        L.DepthwiseConv1D(3, depth_multiplier=2, activation="relu", name="dw"),
        L.SeparableConv1D(4, 3, depth_multiplier=2, padding="same", strides=2, name="sep"),
        L.SeparableConv1D(3, 2, use_bias=False, activation="tanh", name="sep_2"),
        L.GlobalAveragePooling1D(),
        L.Dense(3, name="out"),
    ],
    "per_step_dense_batchnorm_keepdims": lambda: [
        L.Conv1D(4, 3, name="c1"),
        L.BatchNormalization(name="bn"),
        L.Dense(5, activation="relu", name="per_step"),
        L.GlobalAveragePooling1D(keepdims=True, name="gap"),
        L.Flatten(),
        L.Dense(2, name="out"),
    ],
}


@pytest.mark.parametrize("case", sorted(FORWARD_CASES))
def test_conv1d_and_pooling_over_time_predict_like_keras(case, tmp_path):
    model = _forward_case(FORWARD_CASES[case]())
    model.get_layer("out").trainable = True
    path = tmp_path / "m.mlmodel"
    export(model, path, loss="mse", class_labels=None)
    x = np.random.default_rng(3).normal(size=(5, 12, 3)).astype(np.float32)
    runtime = load(path)
    got = runtime.predict({runtime.description.input[0].name: over_width(x)})["out"]
    want = model.predict(x, verbose=0)
    assert np.abs(np.asarray(got).reshape(want.shape) - want).max() <= TOLERANCE


TEXT_MODELS = {
    "cnn": lambda: [
        L.Embedding(20, 6, name="embed"),
        L.Conv1D(5, 3, activation="relu", name="conv"),
        L.GlobalMaxPooling1D(name="pool"),
        L.Dense(CLASSES, activation="softmax", name="head"),
    ],
    "bag_of_embeddings": lambda: [
        L.Embedding(20, 6, name="embed"),
        L.GlobalAveragePooling1D(name="pool"),
        L.Dense(CLASSES, activation="softmax", name="head"),
    ],
}


@pytest.mark.parametrize("case", sorted(TEXT_MODELS))
def test_text_models_move_embedded_tokens_onto_the_width_axis(case, tmp_path):
    """Embedding -> [Conv1D ->] global pooling: the embedded sequence is permuted to
    (C, 1, steps) in the frozen part, before the trainable head."""
    model = _forward_case(TEXT_MODELS[case](), inputs=(12,), dtype="int32")
    model.get_layer("head").trainable = True
    path = tmp_path / "text.mlmodel"
    export(model, path)
    tokens = np.random.default_rng(4).integers(0, 20, (5, 12))
    got = probabilities(path, tokens.reshape(5, 12, 1, 1).astype(np.float32))
    assert np.abs(got - model.predict(tokens, verbose=0)).max() <= TOLERANCE
    kinds = [layer.WhichOneof("layer") for layer in neural_network(load_spec(path)).layers]
    assert kinds[:3] == ["embedding", "permute", "convolution" if case == "cnn" else "pooling"]
    assert is_valid(validate(path))


# -- training -------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(
        learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-7
    ),
}


def conv1d_core_ml(kernel: np.ndarray) -> np.ndarray:
    """A Keras Conv1D kernel (k, in, out) in Core ML's convolution layout (out, in, 1, k)."""
    return kernel.transpose(2, 1, 0).ravel()


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_training_a_conv1d_and_its_head_matches_keras(optimizer, tmp_path):
    model = accelerometer_classifier(seed=1)
    before = {layer.name: layer.get_weights() for layer in model.layers}
    rng = np.random.default_rng(5)
    x = rng.normal(size=(BATCH * BATCHES, STEPS, CHANNELS)).astype(np.float32)
    y = rng.integers(0, CLASSES, BATCH * BATCHES)
    keras_optimizer = OPTIMIZERS[optimizer]()
    model.compile(
        optimizer=keras_optimizer, loss="sparse_categorical_crossentropy", run_eagerly=True
    )
    path = tmp_path / "motion.mlmodel"
    export(model, path, optimizer=None)
    runtime = load(path)
    adam = isinstance(keras_optimizer, keras.optimizers.Adam)
    result = runtime.update(
        {
            runtime.description.input[0].name: over_width(x),
            runtime.description.trainingInput[-1].name: y,
        },
        assumptions=Assumptions(adam="keras") if adam else None,
    )
    for step in range(BATCHES):
        rows = slice(step * BATCH, (step + 1) * BATCH)
        model.train_on_batch(x[rows], y[rows])
    trained = result.model.spec
    kernel, bias = model.get_layer("conv").get_weights()
    got, got_bias = layer_weights(trained, "conv")
    assert relative_diff(got, conv1d_core_ml(kernel)) <= 1e-4
    assert relative_diff(got_bias, bias) <= 1e-4
    moved = np.abs(conv1d_core_ml(kernel) - conv1d_core_ml(before["conv"][0])).max()
    assert moved > 100 * np.abs(got - conv1d_core_ml(kernel)).max(), "conv barely trained"
    head_kernel, head_bias = model.get_layer("head").get_weights()
    got, got_bias = layer_weights(trained, "head")
    assert relative_diff(got, head_kernel.T.ravel()) <= 1e-4
    assert relative_diff(got_bias, head_bias) <= 1e-4
    np.testing.assert_array_equal(
        layer_weights(trained, "frozen_conv")[0], layer_weights(runtime.spec, "frozen_conv")[0]
    )
    for old, new in zip(before["frozen_conv"], model.get_layer("frozen_conv").get_weights()):
        np.testing.assert_array_equal(old, new)


def test_a_cnn_lstm_moves_the_steps_back_for_the_lstm(tmp_path):
    """Frozen Conv1D -> LSTM -> trainable head: a permute gives the LSTM its sequence."""
    model = _forward_case(
        [
            L.Conv1D(4, 3, activation="relu", name="conv"),
            L.MaxPooling1D(2, name="pool"),
            L.LSTM(5, name="lstm"),
            L.Dense(CLASSES, activation="softmax", name="head"),
        ]
    )
    model.get_layer("head").trainable = True
    path = tmp_path / "cnn_lstm.mlmodel"
    export(model, path)
    x = np.random.default_rng(6).normal(size=(5, 12, 3)).astype(np.float32)
    got = probabilities(path, over_width(x))
    assert np.abs(got - model.predict(x, verbose=0)).max() <= TOLERANCE
    kinds = [layer.WhichOneof("layer") for layer in neural_network(load_spec(path)).layers]
    assert kinds[:4] == ["convolution", "activation", "pooling", "permute"]


# -- refusals -------------------------------------------------------------------------------


def test_a_trainable_conv1d_before_an_lstm_is_refused_by_name(tmp_path):
    """Core ML passes no gradient through the permute that hands the LSTM its steps
    (isLayerSupportedForBackprop), so a Conv1D before it cannot train."""
    model = keras.Sequential(
        [
            keras.Input((10, 3)),
            L.Conv1D(4, 3, name="conv"),
            L.LSTM(3, name="lstm", trainable=False),
            L.Dense(2, activation="softmax", name="head"),
        ]
    )
    with pytest.raises(NotUpdatableError, match="'lstm_steps'.*trainable layer 'conv'.*freeze"):
        export(model, tmp_path / "x.mlmodel", class_labels=[0, 1])
    assert not (tmp_path / "x.mlmodel").exists()


def test_conv1d_options_core_ml_cannot_carry_are_refused(tmp_path):
    model = keras.Sequential(
        [keras.Input((10, 3)), L.Conv1D(4, 3, data_format="channels_first", name="conv")]
    )
    with pytest.raises(UnsupportedError, match="'conv'.*channels_last"):
        export(model, tmp_path / "x.mlmodel", loss="mse", class_labels=None)


def test_training_a_conv1d_through_a_flatten_matches_keras(tmp_path):
    """Trainable Conv1D -> Flatten -> trainable Dense: the Dense rows are reordered from Keras'
    step-major order to Core ML's (C, 1, W), before and after training."""
    model = keras.Sequential(
        [
            keras.Input((12, CHANNELS)),
            L.Conv1D(4, 3, strides=2, activation="tanh", name="conv"),
            L.Flatten(name="flat"),
            L.Dense(CLASSES, activation="softmax", name="head"),
        ]
    )
    randomize(model, seed=9, scale=0.5)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(BATCH * BATCHES, 12, CHANNELS)).astype(np.float32)
    y = rng.integers(0, CLASSES, BATCH * BATCHES)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,
    )
    path = tmp_path / "flat.mlmodel"
    export(model, path, optimizer=None)
    runtime = load(path)
    result = runtime.update(
        {
            runtime.description.input[0].name: over_width(x),
            runtime.description.trainingInput[-1].name: y,
        }
    )
    for step in range(BATCHES):
        rows = slice(step * BATCH, (step + 1) * BATCH)
        model.train_on_batch(x[rows], y[rows])
    trained = result.model.spec
    kernel, bias = model.get_layer("conv").get_weights()
    got, got_bias = layer_weights(trained, "conv")
    assert relative_diff(got, conv1d_core_ml(kernel)) <= 1e-4
    assert relative_diff(got_bias, bias) <= 1e-4
    head, head_bias = model.get_layer("head").get_weights()
    steps = head.shape[0] // 4
    rows_core_ml = head.reshape(steps, 4, CLASSES).transpose(1, 0, 2).reshape(head.shape)
    got, got_bias = layer_weights(trained, "head")
    assert relative_diff(got, rows_core_ml.T.ravel()) <= 1e-4
    assert relative_diff(got_bias, head_bias) <= 1e-4
