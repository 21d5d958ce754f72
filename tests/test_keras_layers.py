"""Forward parity of every Keras layer converter: the exported file run by our runtime vs
Keras on random inputs, max abs diff <= 1e-4.

Each case is ``body`` layers followed by a trainable Dense head (so the export is updatable);
the body is frozen. The head mixes every value of the body's output, so a wrong value or a
wrong order anywhere shows up in the comparison.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_helpers import TOLERANCE, keras_outputs, max_abs_diff, randomize, runtime_outputs
from updatable_coreml.errors import UnsupportedError
from updatable_coreml.exporters.keras import export_keras

L = keras.layers


def _head_model(input_shape, body, *, flatten=True, seed=0):
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in body:
        x = layer(x)
    if flatten and len(x.shape) > 2:
        x = L.Flatten()(x)
    outputs = L.Dense(7, name="head")(x)
    return randomize(keras.Model(inputs, outputs), seed)


def _check(model, tmp_path, input_shape, batch=3, seed=1, **options):
    path = tmp_path / "model.mlmodel"
    export_keras(
        model, path, trainable=["head"], loss="mse", optimizer=keras.optimizers.SGD(0.01), **options
    )
    x = np.random.default_rng(seed).normal(size=(batch, *input_shape)).astype(np.float32)
    diff = max_abs_diff(model, path, x)
    assert diff <= TOLERANCE, diff
    return diff


CASES = {
    "dense_relu": ((5,), lambda: [L.Dense(6, activation="relu")]),
    "dense_no_bias_tanh": ((5,), lambda: [L.Dense(4, use_bias=False, activation="tanh")]),
    "dense_on_image_is_1x1_conv": ((4, 5, 3), lambda: [L.Dense(6, activation="sigmoid")]),
    "conv_valid": ((9, 8, 3), lambda: [L.Conv2D(4, 3)]),
    "conv_same_stride2": ((9, 8, 3), lambda: [L.Conv2D(4, 3, strides=2, padding="same")]),
    "conv_same_even_kernel": ((8, 7, 2), lambda: [L.Conv2D(3, (4, 2), padding="same")]),
    "conv_dilated": ((11, 10, 2), lambda: [L.Conv2D(3, 3, dilation_rate=2, padding="same")]),
    "conv_groups": ((7, 7, 4), lambda: [L.Conv2D(6, 3, groups=2, activation="relu")]),
    "conv_strided_rect": ((10, 9, 2), lambda: [L.Conv2D(3, (3, 2), strides=(2, 3))]),
    "depthwise": ((8, 8, 3), lambda: [L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")]),
    "depthwise_stride": ((9, 9, 2), lambda: [L.DepthwiseConv2D(3, strides=2)]),
    "separable": (
        (8, 7, 3),
        lambda: [L.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, activation="relu")],
    ),
    "maxpool": ((8, 8, 2), lambda: [L.MaxPooling2D(2)]),
    "maxpool_same_odd": ((7, 9, 2), lambda: [L.MaxPooling2D(3, strides=2, padding="same")]),
    "avgpool": ((8, 6, 2), lambda: [L.AveragePooling2D((2, 3))]),
    "avgpool_same_odd": ((7, 7, 2), lambda: [L.AveragePooling2D(3, strides=2, padding="same")]),
    "global_avg": ((5, 6, 4), lambda: [L.GlobalAveragePooling2D()]),
    "global_max": ((5, 6, 4), lambda: [L.GlobalMaxPooling2D()]),
    "global_avg_keepdims": ((5, 6, 4), lambda: [L.GlobalAveragePooling2D(keepdims=True)]),
    "global_max_keepdims_dense": (
        (5, 6, 4),
        lambda: [L.GlobalMaxPooling2D(keepdims=True), L.Dense(3, activation="relu")],
    ),
    "flatten_hwc_order": ((3, 4, 5), lambda: [L.Flatten()]),
    "batchnorm_folded": ((6, 6, 3), lambda: [L.Conv2D(4, 3), L.BatchNormalization()]),
    "batchnorm_after_dense": ((5,), lambda: [L.Dense(6), L.BatchNormalization(epsilon=0.01)]),
    "batchnorm_alone_scale": ((4, 4, 3), lambda: [L.BatchNormalization(center=False)]),
    "relu6_activation": ((6,), lambda: [L.Rescaling(20.0), L.Dense(6, activation="relu6")]),
    "leaky_relu_layer": ((6,), lambda: [L.Dense(6), L.LeakyReLU(0.1)]),
    "leaky_relu_activation": ((6,), lambda: [L.Dense(6, activation="leaky_relu")]),
    "relu_max_value": ((6,), lambda: [L.Dense(6), L.ReLU(max_value=0.3)]),
    "relu_negative_slope": ((6,), lambda: [L.Dense(6), L.ReLU(negative_slope=0.05)]),
    "hard_sigmoid": ((6,), lambda: [L.Dense(6), L.Activation("hard_sigmoid")]),
    "hard_silu": ((6,), lambda: [L.Rescaling(4.0), L.Dense(6), L.Activation("hard_silu")]),
    "cropping": ((7, 6, 2), lambda: [L.Cropping2D(((1, 2), (0, 1)))]),
    "elu": ((6,), lambda: [L.Dense(6), L.ELU(alpha=0.7)]),
    "elu_activation": ((6,), lambda: [L.Dense(6, activation="elu")]),
    "softplus": ((6,), lambda: [L.Dense(6, activation="softplus")]),
    "softsign": ((6,), lambda: [L.Dense(6, activation="softsign")]),
    "swish": ((6,), lambda: [L.Dense(6, activation="swish")]),
    "gelu": ((6,), lambda: [L.Dense(6, activation="gelu")]),
    "gelu_image": ((6, 5, 3), lambda: [L.Conv2D(4, 3, activation="gelu")]),
    "softmax_layer": ((4, 4, 3), lambda: [L.Softmax()]),
    "linear_activation": ((6,), lambda: [L.Activation("linear"), L.Dense(3)]),
    "reshape_to_image": ((24,), lambda: [L.Reshape((2, 3, 4)), L.Conv2D(2, 2)]),
    "reshape_image_to_image": ((4, 6, 2), lambda: [L.Reshape((3, 4, 4))]),
    "reshape_to_vector": ((3, 4, 2), lambda: [L.Reshape((24,))]),
    "zero_padding": ((5, 5, 2), lambda: [L.ZeroPadding2D(((1, 2), (0, 3)))]),
    "rescaling": ((4, 4, 3), lambda: [L.Rescaling(1 / 127.5, offset=-1)]),
    "dropouts": (
        (6, 6, 3),
        lambda: [L.SpatialDropout2D(0.3), L.GaussianNoise(0.2), L.Dropout(0.5)],
    ),
    # over the channels at each pixel (ConvNeXt); gamma and beta random
    "layer_norm_image": ((4, 5, 6), lambda: [L.LayerNormalization(epsilon=1e-5)]),
    "layer_norm_vector_no_center": (
        (6,),
        lambda: [L.Dense(5), L.LayerNormalization(center=False, axis=1)],
    ),
    "convnext_layer_scale_stochastic_depth": (
        (4, 4, 3),
        lambda: [_convnext().LayerScale(0.5, 3), _convnext().StochasticDepth(0.3)],
    ),
}


def _convnext():
    """keras.applications' ConvNeXt module (its LayerScale and StochasticDepth layers)."""
    from keras.src.applications import convnext

    return convnext


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_forward_parity(case, tmp_path):
    input_shape, body = CASES[case]
    model = _head_model(input_shape, body())
    _check(model, tmp_path, input_shape)


def test_normalization_and_rescaling_per_channel(tmp_path):
    norm = L.Normalization(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 1.0])
    model = _head_model((4, 4, 3), [norm, L.Rescaling([2.0, 1.0, 0.5], offset=[0.0, 1.0, -1.0])])
    _check(model, tmp_path, (4, 4, 3))


def test_branches_add_multiply_concatenate(tmp_path):
    inputs = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    b = L.Conv2D(4, 1, activation="sigmoid")(inputs)
    added = L.Add()([a, b])
    multiplied = L.Multiply()([a, b])
    merged = L.Concatenate()([added, multiplied, inputs])
    pooled = L.GlobalAveragePooling2D()(merged)
    vectors = L.Concatenate()([pooled, L.Dense(3)(pooled)])
    outputs = L.Dense(5, name="head")(vectors)
    model = randomize(keras.Model(inputs, outputs))
    _check(model, tmp_path, (6, 6, 3))


def test_squeeze_excitation_multiply_broadcasts_per_channel_weights(tmp_path):
    """EfficientNet/MobileNetV3: image * (1, 1, C) weights, in both operand orders."""
    inputs = keras.Input((6, 5, 4))
    x = L.Conv2D(4, 3, padding="same")(inputs)
    squeezed = L.GlobalAveragePooling2D(keepdims=True)(x)
    weights = L.Dense(4, activation="sigmoid")(squeezed)
    joined = L.Add()([L.Multiply()([x, weights]), L.Multiply()([weights, x])])
    model = randomize(keras.Model(inputs, L.Dense(7, name="head")(L.Flatten()(joined))))
    _check(model, tmp_path, (6, 5, 4))


def test_arithmetic_operations_with_numbers(tmp_path):
    """x + 3.0 on a KerasTensor is a keras.ops operation named like the Add layer (Keras's
    MobileNetV3 hard_sigmoid); its number must not be dropped (issue 14)."""
    inputs = keras.Input((6,))
    x = L.Dense(6)(inputs)
    x = ((x + 3.0) * (1.0 / 6.0) - 1.0) / 4.0
    x = (2.0 - x) * x + x
    model = randomize(keras.Model(inputs, L.Dense(7, name="head")(x)))
    _check(model, tmp_path, (6,))


def test_nested_model_and_shared_layer(tmp_path):
    inner = keras.Sequential([keras.Input((6,)), L.Dense(6, activation="tanh")], name="inner")
    shared = L.Dense(6, activation="relu", name="shared")
    inputs = keras.Input((6,))
    x = shared(shared(inner(inputs)))
    model = randomize(keras.Model(inputs, L.Dense(4, name="head")(x)))
    _check(model, tmp_path, (6,))


def test_image_input_takes_rescaling_as_preprocessing(tmp_path):
    model = _head_model((5, 5, 3), [L.Rescaling(1 / 255.0, offset=-0.5), L.Conv2D(2, 3)])
    path = tmp_path / "image.mlmodel"
    report = export_keras(
        model,
        path,
        trainable=["head"],
        loss="mse",
        optimizer=keras.optimizers.SGD(0.01),
        image_input="rgb",
    )
    assert any("image preprocessing" in change for change in report.changes)
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    assert max_abs_diff(model, path, x) <= TOLERANCE


def test_bgr_image_input_with_per_channel_offsets(tmp_path):
    rescale = L.Rescaling(1 / 255.0, offset=[-0.1, -0.2, -0.3])
    model = _head_model((4, 4, 3), [rescale, L.Conv2D(2, 3)])
    path = tmp_path / "bgr.mlmodel"
    export_keras(
        model,
        path,
        trainable=["head"],
        loss="mse",
        optimizer=keras.optimizers.SGD(0.01),
        image_input="bgr",
    )
    rgb = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    want = keras_outputs(model, rgb[..., ::-1])  # the Keras model was trained on BGR arrays
    assert np.abs(runtime_outputs(path, rgb) - want).max() <= TOLERANCE


def test_sequential_classifier_with_softmax(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            L.Conv2D(3, 2, activation="relu"),
            L.Flatten(),
            L.Dense(5, activation="softmax", name="probs"),
        ]
    )
    randomize(model)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    path = tmp_path / "classifier.mlmodel"
    export_keras(model, path, class_labels=list("abcde"))
    x = np.random.default_rng(0).normal(size=(4, 4, 4, 2)).astype(np.float32)
    assert max_abs_diff(model, path, x) <= TOLERANCE


def test_layer_normalization_over_a_spatial_axis_is_refused_naming_the_layer(tmp_path):
    model = _head_model((4, 5, 3), [L.LayerNormalization(axis=1, name="ln_rows")])
    with pytest.raises(UnsupportedError, match="'ln_rows'.*only the last axis"):
        export_keras(model, tmp_path / "m.mlmodel", trainable=["head"], loss="mse")
