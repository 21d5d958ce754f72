"""The one way a frontend appends an IR node (a unique node name, then the node) and runs a
converter.

Core ML needs unique layer names while sources reuse them (shared Keras layers, repeated
functional calls in torch, unnamed or clashing ONNX nodes), so every frontend names its nodes
through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar

from ...compose import free_name
from ...errors import UnsupportedError, UpdatableCoreMLError, first_line
from ...ir import Node

T = TypeVar("T")


def append_node(
    nodes: list[Node],
    taken: set[str],
    op: str,
    name: str,
    inputs: Sequence[str],
    outputs: Optional[Sequence[str]] = None,
    *,
    attrs: Optional[dict] = None,
    weights: Optional[dict[str, Any]] = None,
    trainable: bool = False,
    source: str = "",
) -> Node:
    """Append a node called ``name`` (or ``name_1``... if taken) to ``nodes`` and return it.
    Without ``outputs`` the node writes one tensor named like the node."""
    name = free_name(taken, name)
    node = Node(
        op=op,
        name=name,
        inputs=list(inputs),
        outputs=[name] if outputs is None else list(outputs),
        attrs=dict(attrs or {}),
        weights=dict(weights or {}),
        trainable=trainable,
        source=source,
    )
    nodes.append(node)
    return node


def run_converter(convert: Callable[..., T], what: str, *args: Any) -> T:
    """Call a converter. An unexpected exception inside it (a converter bug, an argument form
    nobody foresaw, a framework error) becomes an ``UnsupportedError`` naming ``what`` (the
    layer or node), so the user learns where, and ``backbone='auto'`` can still fall back to
    coremltools; our own typed errors pass through unchanged."""
    try:
        return convert(*args)
    except UpdatableCoreMLError:
        raise
    except Exception as exc:
        raise UnsupportedError(
            f"{what} could not be converted ({type(exc).__name__}: "
            f"{first_line(exc)}); please report it with the model"
        ) from exc
