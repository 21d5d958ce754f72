"""The small graph IR between the framework frontends and the Core ML backend.

Frontends translate a source model into a ``Graph``; shared passes rewrite it; the backend
writes a spec. Layouts are channel-first: a per-example image tensor is ``(C, H, W)``, a
vector ``(N,)``, a sequence ``(Seq, C)`` (token ids for an embedding: ``(Seq, 1)``); rank 2
always means a sequence. Node names keep the user's layer/module names (``dense_1``,
``classifier.1``) because people refer to layers by them.

Op vocabulary (``Node.op`` and its ``attrs``/``weights``) is documented in ``OPS``; the
backend accepts exactly these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

#: op name -> short description of attrs (a) and weights (w). Single source of truth that
#: frontends, passes, the backend and the docs refer to.
OPS: dict[str, str] = {
    "dense": "w: weight (out, in), bias (out,) optional",
    "conv2d": "a: strides (sh, sw), dilations (dh, dw), groups, padding 'valid'|'same'|(t, b, l, r); "
              "w: weight (out, in/groups, kh, kw), bias (out,) optional",
    "batchnorm": "a: eps; w: gamma, beta, mean, variance (C,)",
    "activation": "a: kind relu|relu6|leaky_relu|sigmoid|hard_sigmoid|tanh|elu|softplus|gelu|silu|"
                  "linear|clip, plus alpha/beta/min/max as the kind needs",
    "softmax": "over the channel axis",
    "pool2d": "a: kind max|avg, kernel (kh, kw), strides (sh, sw), padding 'valid'|'same'|(t, b, l, r), "
              "global bool, count_include_pad bool, keepdims bool (global: (C, 1, 1) not (C,))",
    "flatten": "channel-first (C, H, W) order; a: order 'hwc' for a source that flattens "
               "channel-last (passes fold it into the dense layers it feeds)",
    "reshape": "a: shape (per-example target shape, channel-first), order 'hwc' when the source "
               "reshapes in channel-last element order",
    "add": "elementwise sum of inputs",
    "mul": "elementwise product of inputs",
    "concat": "along channels",
    "pad": "a: pads (t, b, l, r), value",
    "scale": "per-channel affine: w: scale (C,), bias (C,)",
    "embedding": "token ids (Seq, 1) -> (Seq, dim); w: weight (vocab, dim)",
    "lstm": "(Seq, in) -> (Seq, H) or last step (H,); zero initial state; a: hidden, "
            "return_sequences, activation (block input and cell output) and "
            "recurrent_activation (gates) as activation attrs; w: W_ih (4H, in), W_hh (4H, H), "
            "bias (4H,) optional, gate order i,f,g,o",
    "dropout": "removed by passes; kept only to report it",
    "identity": "removed by passes",
}


@dataclass
class TensorSpec:
    """A graph input or output: name and per-example channel-first shape."""

    name: str
    shape: tuple[int, ...]
    image: Optional[dict[str, Any]] = None  # {"color": "rgb"|"bgr"|"grayscale", "scale", "bias"}


@dataclass
class Node:
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
