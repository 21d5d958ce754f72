"""Shared pieces of the Keras exporter tests: small models, random weights, parity checks."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras
import numpy as np

from updatable_coreml.runtime import load

TOLERANCE = 1e-4


def randomize(model: keras.Model, seed: int = 0, scale: float = 0.3) -> keras.Model:
    """Give every weight random values (variances positive) so parity tests see real numbers."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if "variance" in variable.path:
                values.append(rng.uniform(0.5, 1.5, shape).astype(np.float32))
            else:
                values.append(rng.normal(0, scale, shape).astype(np.float32))
        if values:
            layer.set_weights(values)
    return model


def to_channel_first(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x


def runtime_outputs(path, x: np.ndarray, input_name: str = None) -> np.ndarray:
    """Run the exported file through the reference runtime; returns the first array output
    (or the class probabilities, in label order) as a (B, -1) array."""
    model = load(path)
    description = model.description
    name = input_name or description.input[0].name
    is_image = description.input[0].type.WhichOneof("Type") == "imageType"
    if not is_image:  # as a Core ML caller must: channel-first, in the declared shape
        x = to_channel_first(x)
        declared = tuple(description.input[0].type.multiArrayType.shape)
        x = x.reshape((len(x),) + declared) if declared else x
    out = model.predict({name: x})
    if description.predictedProbabilitiesName:
        labels = list(model.class_labels())
        return np.array(
            [
                [row[label] for label in labels]
                for row in out[description.predictedProbabilitiesName]
            ]
        )
    return np.asarray(out[description.output[0].name]).reshape(len(x), -1)


def keras_outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Keras channel-last output moved to channel-first before flattening, as Core ML lays it out."""
    y = keras.ops.convert_to_numpy(model(x, training=False))
    return to_channel_first(y).reshape(len(x), -1)


def max_abs_diff(model: keras.Model, path, x: np.ndarray) -> float:
    return float(np.abs(runtime_outputs(path, x) - keras_outputs(model, x)).max())


def layer_weights(spec, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of a Core ML innerProduct/convolution layer, flat."""
    from updatable_coreml.spec_io import neural_network

    layer = next(lyr for lyr in neural_network(spec).layers if lyr.name == name)
    params = getattr(layer, layer.WhichOneof("layer"))
    return np.asarray(params.weights.floatValue), np.asarray(params.bias.floatValue)


def keras_dense_weights(layer) -> tuple[np.ndarray, np.ndarray]:
    """A Keras Dense layer's weights in Core ML's innerProduct layout, flat."""
    kernel, bias = layer.get_weights()
    return kernel.T.ravel(), bias.ravel()


def relative_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
