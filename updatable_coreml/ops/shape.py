"""Ops that move values without computing new ones: flatten, reshape, concat, pad, crop,
channel slices and channel permutations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..ir import Node
from ._spec import border, one_layer, pointwise
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


def _slice_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    shape = tuple(shapes[0])
    start, end = int(node.attrs["start"]), int(node.attrs["end"])
    if len(shape) != 3 or not 0 <= start < end <= shape[0]:
        raise UnsupportedError(
            f"layer {node.name!r}: channels [{start}, {end}) of a {shape} tensor; only a "
            "non-empty channel range of an image (C, H, W) can be sliced"
        )
    return (end - start, *shape[1:])


def _write_slice(layer: Any, node: Node, shapes: Shapes) -> None:
    """A classic ``slice`` along the channel axis (iOS 11; [start, end), stride 1)."""
    params = layer.slice
    params.axis = params.CHANNEL_AXIS
    params.startIndex, params.endIndex = int(node.attrs["start"]), int(node.attrs["end"])
    params.stride = 1


def _permute_channels_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    shape = tuple(shapes[0])
    order = sorted(int(c) for c in node.attrs["order"])
    if len(shape) != 3 or order != list(range(shape[0])):
        raise UnsupportedError(
            f"layer {node.name!r}: channel order {list(node.attrs['order'])} is not a "
            f"permutation of the {shape[0] if shape else 0} channels of an image (C, H, W)"
        )
    return shape


def _write_permute_channels(layer: Any, node: Node, shapes: Shapes) -> None:
    """Output channel ``i`` is input channel ``order[i]``: a 1x1 ``convolution`` whose weight
    is the permutation matrix, no bias.

    Exact: each output sums one product ``x * 1`` and products ``x * 0`` that are zeros, so
    for finite inputs it is the input value bit for bit. Core ML has no classic layer that
    reorders channels (``permute`` moves whole axes); the ND way, ``reshapeStatic`` to rank 5,
    ``transpose``, ``reshapeStatic`` back, takes iOS 13 layers that force the exact-rank
    shape mapping on the whole network; a ``slice`` per channel group and a ``concat`` would
    take C / groups + 1 layers. A convolution is an iOS 11 layer every runtime runs (and
    gradients pass through it), at C * C weights per shuffle."""
    order = [int(c) for c in node.attrs["order"]]
    channels = len(order)
    weight = np.zeros((channels, channels), np.float32)
    weight[np.arange(channels), order] = 1.0
    pointwise(layer.convolution, weight)


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
define(
    "slice_channels",
    family="shape",
    doc="a: start, end (channels [start, end) of an image)",
    shape=_slice_shape,
    write=one_layer(_write_slice),
    layers=writes("slice"),
)
define(
    "permute_channels",
    family="shape",
    doc="a: order (output channel i is input channel order[i]); exact",
    shape=_permute_channels_shape,
    write=one_layer(_write_permute_channels),
    layers=writes("convolution"),
)
