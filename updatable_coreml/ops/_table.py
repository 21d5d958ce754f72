"""The op table's record type and registry: one ``OpDef`` per IR op.

An IR op is defined once, in the module of its family, with everything the exporter needs to
know about it: its attributes and weights, its shape rule, the Core ML layer(s) it writes and
the function that writes them. What Core ML can do with the op (update it, pass gradients
through it) is not listed here but derived from ``coreml_rules`` through the layer types the op
writes, so Apple's rules stay in one table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import coreml_rules
from ..errors import UnsupportedError
from ..ir import Node

Shape = tuple[int, ...]
Shapes = dict[str, Shape]
#: ``rule(node, input_shapes) -> output shape`` (per example, channel-first).
ShapeRule = Callable[[Node, Sequence[Shape]], Shape]
#: ``writer(nn, node, shapes)`` appends the node's layer(s) to the ``NeuralNetwork`` message.
Writer = Callable[[Any, Node, Shapes], None]
#: A Core ML layer a node writes: (``NeuralNetworkLayer`` oneof name, ``ActivationParams``
#: oneof name for an ``activation`` layer, else None).
Layer = tuple[str, str | None]


@dataclass(frozen=True)
class OpDef:
    """One IR op.

    ``layers(attrs)`` names the Core ML layers a node with ``attrs`` writes, in order;
    ``variants`` are attrs covering every distinct answer (one per activation kind), so the
    docs and the table test can list every layer type the op can write. ``write`` is None
    only for ops the passes always remove (``dropout``, ``identity``); the backend refuses
    them.
    """

    name: str
    family: str
    doc: str
    shape: ShapeRule
    write: Writer | None
    layers: Callable[[Mapping[str, Any]], tuple[Layer, ...]]
    variants: tuple[Mapping[str, Any], ...] = ({},)

    def layer_types(self) -> set[str]:
        """Every Core ML layer type a node of this op can write."""
        return {layer for attrs in self.variants for layer, _ in self.layers(attrs)}

    def updatable(self, attrs: Mapping[str, Any] | None = None) -> bool:
        """Core ML can update a node with ``attrs``: it writes one layer of an updatable type.
        Without ``attrs``: some variant of the op can be updated."""
        return any(
            len(written) == 1 and coreml_rules.is_updatable_type(written[0][0])
            for written in self._written(attrs)
        )

    def passes_gradients(self, attrs: Mapping[str, Any] | None = None) -> bool:
        """Core ML backpropagates through every layer a node with ``attrs`` writes. Without
        ``attrs``: through every variant of the op."""
        return all(
            written and all(coreml_rules.is_backpropagable(*layer) for layer in written)
            for written in self._written(attrs)
        )

    def _written(self, attrs: Mapping[str, Any] | None) -> list[tuple[Layer, ...]]:
        return [self.layers(a) for a in (self.variants if attrs is None else (attrs,))]


#: IR op name -> its definition. Filled by the family modules of this package.
OPS: dict[str, OpDef] = {}


def define(
    name: str,
    *,
    family: str,
    doc: str,
    shape: ShapeRule,
    write: Writer | None,
    layers: Callable[[Mapping[str, Any]], tuple[Layer, ...]],
    variants: tuple[Mapping[str, Any], ...] = ({},),
) -> OpDef:
    """Add an op to the table (a name defined twice is refused at import)."""
    if name in OPS:
        raise ValueError(f"IR op {name!r} defined twice")
    definition = OPS[name] = OpDef(name, family, doc, shape, write, layers, variants)
    return definition


def writes(layer_type: str) -> Callable[[Mapping[str, Any]], tuple[Layer, ...]]:
    """``layers`` for an op that always writes one layer of ``layer_type``."""
    written: tuple[Layer, ...] = ((layer_type, None),)
    return lambda attrs: written


def writes_nothing(attrs: Mapping[str, Any]) -> tuple[Layer, ...]:
    """``layers`` of an op the passes remove before the backend runs."""
    return ()


def op(name: str, where: str = "") -> OpDef:
    """The definition of IR op ``name``; an unknown op is a frontend bug, said as such."""
    try:
        return OPS[name]
    except KeyError:
        at = f"layer {where!r}: " if where else ""
        raise UnsupportedError(
            f"{at}IR op {name!r} is not in the op table (updatable_coreml/ops); define it there"
        ) from None


def same_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    """Shape rule of elementwise ops: the output has the first input's shape."""
    return tuple(shapes[0])
