"""The op table: every IR op defined once, by family.

``OPS`` maps an IR op name (``Node.op``) to its ``OpDef``: attribute/weight doc, shape rule,
Core ML writer and the layer types it writes. Frontends emit exactly these names; the passes
read shapes and capabilities from here; the backend writes with these writers; the docs list
them. Capabilities come from ``coreml_rules`` through the layer types an op writes.

Where a new op goes: the family module (``linear``, ``conv``, ``pooling``, ``normalization``,
``shape``, ``elementwise``, ``activation``, ``sequence``, ``recurrent``, ``attention``) with one
``define(...)`` call;
``tests/test_op_table.py`` then checks it has a shape rule, a writer and a runtime forward.
"""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedError
from ..ir import Node
from . import (
    activation,
    attention,
    conv,
    elementwise,
    linear,
    normalization,
    pooling,
    recurrent,
    sequence,
    shape,
)
from ._geometry import conv_output_size, explicit_pads, same_pads, spatial_output
from ._spec import new_layer, put_weights
from ._table import OPS, Layer, OpDef, Shape, Shapes, op

FAMILIES = (
    linear,
    conv,
    pooling,
    normalization,
    shape,
    elementwise,
    activation,
    sequence,
    recurrent,
    attention,
)


def output_shape(node: Node, shapes: list[Shape]) -> Shape:
    """The node's output shape from its input shapes (raises for an op not in the table)."""
    return op(node.op, node.name).shape(node, shapes)


def updatable(node: Node) -> bool:
    """Core ML can update this node (it writes one layer of an updatable type)."""
    return op(node.op, node.name).updatable(node.attrs)


def passes_gradients(node: Node) -> bool:
    """Core ML backpropagates through every layer this node writes."""
    return op(node.op, node.name).passes_gradients(node.attrs)


def updatable_ops() -> tuple[str, ...]:
    """IR ops Core ML can update on device."""
    return tuple(name for name, definition in OPS.items() if definition.updatable())


def write(nn: Any, node: Node, shapes: Shapes) -> None:
    """Append the node's Core ML layer(s) to ``nn``."""
    definition = op(node.op, node.name)
    if definition.write is None:
        raise UnsupportedError(
            f"layer {node.name!r}: IR op {node.op!r} has no Core ML writer (run the passes first)"
        )
    definition.write(nn, node, shapes)


__all__ = [
    "OPS",
    "OpDef",
    "Layer",
    "Shape",
    "Shapes",
    "FAMILIES",
    "op",
    "output_shape",
    "updatable",
    "passes_gradients",
    "updatable_ops",
    "write",
    "put_weights",
    "new_layer",
    "conv_output_size",
    "explicit_pads",
    "same_pads",
    "spatial_output",
]
