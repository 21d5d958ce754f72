"""Ops that move values without computing new ones: flatten, reshape, concat, pad."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..ir import Node
from ._spec import border, one_layer
from ._table import Shape, Shapes, define, writes


def _flatten_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    return (int(np.prod(shapes[0])),)


def _write_flatten(layer: Any, node: Node, shapes: Shapes) -> None:
    """A ``flatten``: channel-last only where the passes could not fold 'hwc' into a dense."""
    params = layer.flatten
    params.mode = params.CHANNEL_LAST if node.attrs.get("order") == "hwc" else params.CHANNEL_FIRST


def _reshape_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    return tuple(node.attrs["shape"])


def _write_reshape(layer: Any, node: Node, shapes: Shapes) -> None:
    """A classic ``reshape`` (rank-3 target only)."""
    target = tuple(node.attrs["shape"])
    if len(target) != 3:
        raise UnsupportedError(
            f"layer {node.name!r}: reshape to {target} is not rank 3 (C, H, W); "
            "Core ML's classic reshape needs a (C, H, W) target"
        )
    params = layer.reshape
    params.targetShape.extend(target)
    params.mode = params.CHANNEL_LAST if node.attrs.get("order") == "hwc" else params.CHANNEL_FIRST


def _concat_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def _write_concat(layer: Any, node: Node, shapes: Shapes) -> None:
    """A classic ``concat`` along channels."""
    layer.concat.SetInParent()


def _pad_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    shape = shapes[0]
    top, bottom, left, right = node.attrs["pads"]
    return (shape[0], shape[1] + top + bottom, shape[2] + left + right)


def _write_pad(layer: Any, node: Node, shapes: Shapes) -> None:
    """A constant ``padding`` layer."""
    params = layer.padding
    params.constant.value = float(node.attrs.get("value", 0.0))
    border(params, node.attrs["pads"])


def _crop_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    channels, height, width = shapes[0]
    top, bottom, left, right = node.attrs["crops"]
    if top + bottom >= height or left + right >= width:
        raise UnsupportedError(
            f"layer {node.name!r}: cropping {node.attrs['crops']} leaves "
            f"nothing of a {height}x{width} image"
        )
    return (channels, height - top - bottom, width - left - right)


def _write_crop(layer: Any, node: Node, shapes: Shapes) -> None:
    """A classic ``crop`` by fixed amounts (one input)."""
    top, bottom, left, right = node.attrs["crops"]
    for start, end in ((top, bottom), (left, right)):
        amount = layer.crop.cropAmounts.borderAmounts.add()
        amount.startEdgeSize, amount.endEdgeSize = int(start), int(end)


define(
    "flatten",
    family="shape",
    doc="channel-first (C, H, W) order; a: order 'hwc' for a source that flattens "
    "channel-last (passes fold it into the dense layers it feeds)",
    shape=_flatten_shape,
    write=one_layer(_write_flatten),
    layers=writes("flatten"),
)
define(
    "reshape",
    family="shape",
    doc="a: shape (per-example target shape, channel-first), order 'hwc' when the source "
    "reshapes in channel-last element order",
    shape=_reshape_shape,
    write=one_layer(_write_reshape),
    layers=writes("reshape"),
)
define(
    "concat",
    family="shape",
    doc="along channels",
    shape=_concat_shape,
    write=one_layer(_write_concat),
    layers=writes("concat"),
)
define(
    "pad",
    family="shape",
    doc="a: pads (t, b, l, r), value",
    shape=_pad_shape,
    write=one_layer(_write_pad),
    layers=writes("padding"),
)
define(
    "crop",
    family="shape",
    doc="a: crops (t, b, l, r) removed from H and W",
    shape=_crop_shape,
    write=one_layer(_write_crop),
    layers=writes("crop"),
)
