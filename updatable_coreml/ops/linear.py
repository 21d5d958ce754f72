"""Fully connected layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..ir import Node
from ._spec import one_layer, put_weights
from ._table import Shape, Shapes, define, writes


def _dense_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    """``(out,)``, or ``(Seq, out)`` on a sequence: Core ML's innerProduct maps a rank-5
    ``(Seq, B, C, 1, 1)`` blob to ``(Seq * B, C)`` rows (NeuralNetwork.proto), one per step."""
    out = node.weights["weight"].shape[0]
    return (shapes[0][0], out) if len(shapes[0]) == 2 else (out,)


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
    doc="w: weight (out, in), bias (out,) optional; on a sequence (Seq, C), per step",
    shape=_dense_shape,
    write=one_layer(_write_dense),
    layers=writes("innerProduct"),
)
