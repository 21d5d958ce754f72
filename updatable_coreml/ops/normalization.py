"""Batch normalization and the per-channel affine it folds into."""

from __future__ import annotations

from typing import Any

from ..ir import Node
from ._spec import one_layer, put_weights
from ._table import Shapes, define, same_shape, writes


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
