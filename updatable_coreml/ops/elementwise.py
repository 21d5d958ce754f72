"""Elementwise ops over several inputs, and the pass-through ops the passes remove."""

from __future__ import annotations

from typing import Any

from ..ir import Node
from ._spec import one_layer
from ._table import Shapes, define, same_shape, writes, writes_nothing


def _write_add(layer: Any, node: Node, shapes: Shapes) -> None:
    """A classic ``add`` of the inputs."""
    layer.add.SetInParent()


def _write_mul(layer: Any, node: Node, shapes: Shapes) -> None:
    """A classic ``multiply`` of the inputs."""
    layer.multiply.SetInParent()


define("add", family="elementwise", doc="elementwise sum of inputs",
       shape=same_shape, write=one_layer(_write_add), layers=writes("add"))
define("mul", family="elementwise", doc="elementwise product of inputs",
       shape=same_shape, write=one_layer(_write_mul), layers=writes("multiply"))
# Core ML has no dropout; the passes remove these two (and report a dropout) before writing.
define("dropout", family="elementwise", doc="removed by passes; kept only to report it",
       shape=same_shape, write=None, layers=writes_nothing)
define("identity", family="elementwise", doc="removed by passes",
       shape=same_shape, write=None, layers=writes_nothing)
