"""Batch normalization, the per-channel affine it folds into, and layer normalization over
the channel axis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..ir import Node
from ._spec import new_layer, one_layer, put_weights
from ._table import Layer, Shape, Shapes, define, same_shape, writes


def _write_batchnorm(layer: Any, node: Node, shapes: Shapes) -> None:
    """A ``batchnorm`` with the moving statistics (inference mode)."""
    params = layer.batchnorm
    params.channels = node.weights["gamma"].size
    params.epsilon = float(node.attrs.get("eps", 1e-3))
    for name in ("gamma", "beta", "mean", "variance"):
        put_weights(getattr(params, name), node.weights[name])


def _write_scale(layer: Any, node: Node, shapes: Shapes) -> None:
    """A ``scale`` layer with per-channel scale and optional bias."""
    params = layer.scale
    scale, bias = node.weights["scale"], node.weights.get("bias")
    params.shapeScale.append(scale.size)
    put_weights(params.scale, scale)
    if bias is not None:
        params.hasBias = True
        params.shapeBias.append(bias.size)
        put_weights(params.bias, bias)


def _channel_norm_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    """(C, H, W) images and (C,) vectors: both keep C on Core ML's channel axis (-3), which
    the classic ``reduce`` with axis C reads."""
    shape = tuple(shapes[0])
    if len(shape) not in (1, 3):
        raise UnsupportedError(
            f"layer {node.name!r}: layer normalization over the channels of a rank-"
            f"{len(shape)} tensor {shape}; only images (C, H, W) and vectors (C,) are supported"
        )
    if float(node.attrs.get("eps", 0.0)) <= 0.0:
        raise UnsupportedError(
            f"layer {node.name!r}: layer normalization with epsilon "
            f"{node.attrs.get('eps')}; Core ML's unary RSQRT reads an epsilon of 0 as 1e-6 "
            "(NeuralNetwork.proto, UnaryFunctionLayerParams): give the layer a positive epsilon"
        )
    return shape


def _channel_norm_layers(attrs: Mapping[str, Any]) -> tuple[Layer, ...]:
    return (
        ("reduce", None),
        ("multiply", None),
        ("add", None),
        ("multiply", None),
        ("reduce", None),
        ("unary", None),
        ("multiply", None),
        ("scale", None),
    )


def _write_channel_norm(nn: Any, node: Node, shapes: Shapes) -> None:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` with mean and (biased) variance over
    the channels at each position, in classic iOS 11 layers that run under either shape
    mapping (NeuralNetwork.proto): ``reduce`` AVG over axis C (output (1, H, W)), a
    single-input ``multiply`` by alpha -1 (exact negation), ``add`` broadcasting (1, H, W)
    against (C, H, W), ``multiply`` of the centred values by themselves, ``reduce`` AVG,
    ``unary`` RSQRT (``1 / sqrt(x + epsilon)``), a broadcasting ``multiply``, and a ``scale``
    with gamma and beta.

    Why not Core ML's ``layerNormalization``: it normalizes the last axes (W, or H and W of
    (C, H, W)), so over C it needs a transpose on each side, iOS 13 layers that would also
    force the exact-rank shape mapping on the whole network; ``mvn`` normalizes over H and W
    or over all of C, H, W, never over C alone. This is the two-pass formula torch and Keras
    compute (mean first, then the mean of squared deviations)."""
    name, (x,) = node.name, node.inputs
    mean, negated, centred = f"{name}_mean", f"{name}_mean_negated", f"{name}_centred"
    squared, variance = f"{name}_squared", f"{name}_variance"
    inverse, normalized = f"{name}_rsqrt", f"{name}_normalized"
    reduce = new_layer(nn, mean, [x], [mean]).reduce
    reduce.mode, reduce.axis = reduce.AVG, reduce.C
    new_layer(nn, negated, [mean], [negated]).multiply.alpha = -1.0
    new_layer(nn, centred, [x, negated], [centred]).add.SetInParent()
    new_layer(nn, squared, [centred, centred], [squared]).multiply.SetInParent()
    reduce = new_layer(nn, variance, [squared], [variance]).reduce
    reduce.mode, reduce.axis = reduce.AVG, reduce.C
    unary = new_layer(nn, inverse, [variance], [inverse]).unary
    unary.type, unary.epsilon = unary.RSQRT, float(node.attrs["eps"])
    new_layer(nn, normalized, [centred, inverse], [normalized]).multiply.SetInParent()
    channels = shapes[x][0]
    params = new_layer(nn, name, [normalized], node.outputs).scale
    gamma, beta = node.weights.get("gamma"), node.weights.get("beta")
    params.shapeScale.append(channels)
    put_weights(params.scale, gamma if gamma is not None else np.ones(channels, np.float32))
    if beta is not None:
        params.hasBias = True
        params.shapeBias.append(channels)
        put_weights(params.bias, beta)


define(
    "batchnorm",
    family="normalization",
    doc="a: eps; w: gamma, beta, mean, variance (C,)",
    shape=same_shape,
    write=one_layer(_write_batchnorm),
    layers=writes("batchnorm"),
)
define(
    "scale",
    family="normalization",
    doc="per-channel affine: w: scale (C,), bias (C,)",
    shape=same_shape,
    write=one_layer(_write_scale),
    layers=writes("scale"),
)
define(
    "channel_layer_norm",
    family="normalization",
    doc="layer normalization over the channel axis at each position (Keras "
    "LayerNormalization(axis=-1) on NHWC, torch layer_norm over the last axis of a "
    "channel-last view): a: eps (> 0); w: gamma (C,), beta (C,) optional",
    shape=_channel_norm_shape,
    write=_write_channel_norm,
    layers=_channel_norm_layers,
)
