"""Elementwise ops over several inputs, and the pass-through ops the passes remove."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import UnsupportedError
from ..ir import Node
from ._spec import new_layer, one_layer, put_weights
from ._table import Shape, Shapes, define, same_shape, writes, writes_nothing


def _broadcast_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    """The full shape, when every input has it or is one of the partial shapes Core ML's
    classic add and multiply broadcast: (C, 1, 1), (1, H, W) or (1, 1, 1) against (C, H, W)
    (NeuralNetwork.proto, AddLayerParams / MultiplyLayerParams). Squeeze-excitation blocks
    scale an image by per-channel weights this way."""
    shapes = [tuple(shape) for shape in shapes]
    if all(shape == shapes[0] for shape in shapes):
        return shapes[0]
    ranks = {len(shape) for shape in shapes}
    full = tuple(max(sizes) for sizes in zip(*shapes, strict=True)) if ranks == {3} else ()
    channels, height, width = full or (0, 0, 0)
    allowed = {full, (channels, 1, 1), (1, height, width), (1, 1, 1)}
    if full not in shapes or not set(shapes) <= allowed:
        raise UnsupportedError(
            f"layer {node.name!r}: {node.op} of shapes {shapes} needs a broadcast Core ML's "
            "classic layer does not do; only (C, 1, 1), (1, H, W) and (1, 1, 1) broadcast "
            "against (C, H, W)"
        )
    return full


def _full_first(node: Node, shapes: Shapes) -> list[str]:
    """The inputs, a full-shaped one first (stable otherwise): the classic layers' output
    takes the first input's shape."""
    full = _broadcast_shape(node, [shapes[name] for name in node.inputs])
    return sorted(node.inputs, key=lambda name: tuple(shapes[name]) != full)


def _elementwise_writer(kind: str):
    def write(nn: Any, node: Node, shapes: Shapes) -> None:
        layer = new_layer(nn, node.name, _full_first(node, shapes), node.outputs)
        getattr(layer, kind).SetInParent()

    write.__doc__ = f"A classic ``{kind}`` of the inputs (broadcasting as ``_broadcast_shape``)."
    return write


define(
    "add",
    family="elementwise",
    doc="elementwise sum of inputs (an input may be (C, 1, 1), (1, H, W) or (1, 1, 1))",
    shape=_broadcast_shape,
    write=_elementwise_writer("add"),
    layers=writes("add"),
)
define(
    "mul",
    family="elementwise",
    doc="elementwise product of inputs (an input may be (C, 1, 1), (1, H, W) or (1, 1, 1))",
    shape=_broadcast_shape,
    write=_elementwise_writer("multiply"),
    layers=writes("multiply"),
)


def _constant_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    shape, value = tuple(shapes[0]), node.weights["value"]
    if len(shape) not in (1, 3) or value.shape != shape:
        raise UnsupportedError(
            f"layer {node.name!r}: a constant of shape {value.shape} added to a {shape} "
            "tensor; the constant must have the tensor's shape, (C,) or (C, H, W)"
        )
    return shape


def _write_add_constant(layer: Any, node: Node, shapes: Shapes) -> None:
    """A classic ``bias`` layer holding the whole constant: NeuralNetwork.proto's
    ``BiasLayerParams`` takes a bias of shape (C,), (1, H, W) or (C, H, W), broadcast over a
    rank >= 3 input (a vector is (C, 1, 1) or (1, C, 1, 1) in both shape mappings)."""
    value = node.weights["value"]
    params = layer.bias
    params.shape.extend(value.shape)
    put_weights(params.bias, value)


define(
    "add_constant",
    family="elementwise",
    doc="adds a constant of the input's shape (a ViT's position embedding): w: value",
    shape=_constant_shape,
    write=one_layer(_write_add_constant),
    layers=writes("bias"),
)
# Core ML has no dropout; the passes remove these two (and report a dropout) before writing.
define(
    "dropout",
    family="elementwise",
    doc="removed by passes; kept only to report it",
    shape=same_shape,
    write=None,
    layers=writes_nothing,
)
define(
    "identity",
    family="elementwise",
    doc="removed by passes",
    shape=same_shape,
    write=None,
    layers=writes_nothing,
)
