"""Fully connected layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..ir import Node
from ._spec import one_layer, put_weights
from ._table import Shape, Shapes, define, writes


def _dense_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    return (node.weights["weight"].shape[0],)


def _write_dense(layer: Any, node: Node, shapes: Shapes) -> None:
    """An ``innerProduct``; a trainable node's weights and bias are updatable."""
    weight = node.weights["weight"]
    params = layer.innerProduct
    params.outputChannels, params.inputChannels = weight.shape
    put_weights(params.weights, weight, node.trainable)
    if "bias" in node.weights:
        params.hasBias = True
        put_weights(params.bias, node.weights["bias"], node.trainable)


define(
    "dense",
    family="linear",
    doc="w: weight (out, in), bias (out,) optional",
    shape=_dense_shape,
    write=one_layer(_write_dense),
    layers=writes("innerProduct"),
)
