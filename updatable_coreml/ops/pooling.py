"""Max and average pooling, windowed or global."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..ir import Node
from ._geometry import explicit_pads, spatial_output
from ._spec import border, one_layer
from ._table import Shape, Shapes, define, writes, writes_nothing


def _pool_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    shape = shapes[0]
    if node.attrs.get("global"):
        return (shape[0], 1, 1) if node.attrs.get("keepdims") else (shape[0],)
    return (shape[0], *spatial_output(node, shape, node.attrs["kernel"]))


def _write_pool(layer: Any, node: Node, shapes: Shapes) -> None:
    """A ``pooling`` layer. 'same' uses Core ML's own same mode (TF/Keras: the extra pixel
    bottom/right, padded cells ignored); other padding is written as explicit amounts."""
    attrs = node.attrs
    params = layer.pooling
    params.type = params.MAX if attrs["kind"] == "max" else params.AVERAGE
    if attrs.get("global"):
        params.globalPooling = True
        params.kernelSize.extend((1, 1))
        params.stride.extend((1, 1))
        params.valid.SetInParent()
        return
    params.kernelSize.extend(attrs["kernel"])
    params.stride.extend(attrs.get("strides", attrs["kernel"]))
    params.avgPoolExcludePadding = not attrs.get("count_include_pad", False)
    if attrs.get("padding") == "same":
        params.same.SetInParent()
    else:
        border(params.valid, explicit_pads(attrs, shapes[node.inputs[0]][1:], attrs["kernel"]))


define(
    "pool2d",
    family="pooling",
    doc="a: kind max|avg, kernel (kh, kw), strides (sh, sw), "
    "padding 'valid'|'same'|(t, b, l, r), global bool, count_include_pad bool, "
    "keepdims bool (global: (C, 1, 1) not (C,))",
    shape=_pool_shape,
    write=one_layer(_write_pool),
    layers=writes("pooling"),
)


def _adaptive_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    return (shapes[0][0], *node.attrs["output"])


# Core ML has no layer for adaptive pooling whose windows differ in size (torch's
# AdaptiveAvgPool2d from 3x3 to 7x7 in VGG at small inputs). It is linear, so
# ``passes.fold_adaptive_pooling`` folds it into the frozen dense layer reading its flattened
# output (AlexNet, VGG); anywhere else the backend refuses it by name.
define(
    "adaptive_avg_pool2d",
    family="pooling",
    doc="a: output (oh, ow); torch's windows [floor(i*H/oh), ceil((i+1)*H/oh)); removed by "
    "passes (folded into the frozen dense layer after its flatten)",
    shape=_adaptive_shape,
    write=None,
    layers=writes_nothing,
)
