"""2-D convolutions (grouped and depthwise included)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..ir import Node
from ._geometry import explicit_pads, spatial_output
from ._spec import border, one_layer, put_weights
from ._table import Shape, Shapes, define, writes


def _conv_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    weight = node.weights["weight"]
    return (
        weight.shape[0],
        *spatial_output(node, shapes[0], weight.shape[2:], node.attrs.get("dilations", (1, 1))),
    )


def _write_conv(layer: Any, node: Node, shapes: Shapes) -> None:
    """A ``convolution`` with explicit (valid) border amounts, so 'same' means exactly what
    the source framework computed; a trainable node's weights and bias are updatable."""
    weight = node.weights["weight"]
    attrs = node.attrs
    params = layer.convolution
    params.outputChannels, params.kernelChannels = weight.shape[:2]
    params.nGroups = int(attrs.get("groups", 1))
    params.kernelSize.extend(weight.shape[2:])
    params.stride.extend(attrs.get("strides", (1, 1)))
    dilations = attrs.get("dilations", (1, 1))
    params.dilationFactor.extend(dilations)
    pads = explicit_pads(attrs, shapes[node.inputs[0]][1:], weight.shape[2:], dilations)
    border(params.valid, pads)
    put_weights(params.weights, weight, node.trainable)
    if "bias" in node.weights:
        params.hasBias = True
        put_weights(params.bias, node.weights["bias"], node.trainable)


define(
    "conv2d",
    family="conv",
    doc="a: strides (sh, sw), dilations (dh, dw), groups, padding 'valid'|'same'|(t, b, l, r); "
    "w: weight (out, in/groups, kh, kw), bias (out,) optional",
    shape=_conv_shape,
    write=one_layer(_write_conv),
    layers=writes("convolution"),
)
