"""The small graph IR between the framework frontends and the Core ML backend.

Frontends translate a source model into a ``Graph``; shared passes rewrite it; the backend
writes a spec. Layouts are channel-first: a per-example image tensor is ``(C, H, W)``, a
vector ``(N,)``, a sequence ``(Seq, C)`` (token ids for an embedding: ``(Seq, 1)``); rank 2
always means a sequence. Node names keep the user's layer/module names (``dense_1``,
``classifier.1``) because people refer to layers by them.

The op vocabulary (``Node.op`` and its ``attrs``/``weights``) is the op table,
``updatable_coreml.ops.OPS``: each op is defined there once, by family, with its shape rule and
Core ML writer; frontends emit exactly those names and the backend accepts exactly those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass
class TensorSpec:
    """A graph input or output: name and per-example channel-first shape."""

    name: str
    shape: tuple[int, ...]
    image: Optional[dict[str, Any]] = None  # {"color": "rgb"|"bgr"|"grayscale", "scale", "bias"}
    #: what the app must know to fill the input when its layout is not the obvious one (the
    #: backend writes it as the feature's shortDescription, which Xcode shows)
    description: str = ""


@dataclass
class Node:
    """One op application: ``op`` names an entry of ``updatable_coreml.ops.OPS``."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    trainable: bool = False
    source: str = ""  # where it came from, e.g. "keras.layers.Dense" or "aten.linear"


@dataclass
class Graph:
    """Nodes in topological order between the inputs and the outputs."""

    inputs: list[TensorSpec]
    outputs: list[str]
    nodes: list[Node] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what passes folded/dropped, for the report

    def producer(self, tensor: str) -> Optional[Node]:
        for node in self.nodes:
            if tensor in node.outputs:
                return node
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [node for node in self.nodes if tensor in node.inputs]
