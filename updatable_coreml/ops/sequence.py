"""Sequence ops: token embeddings and the unidirectional LSTM.

Sequences are ``(Seq, C)`` per example (token ids for an embedding: ``(Seq, 1)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ir import Node
from ._spec import one_layer, put_weights
from ._table import Shape, Shapes, define, writes
from .activation import fill_nonlinearity

#: The spec's LSTM weight field prefixes, in the IR's gate order i, f, g, o.
LSTM_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")


def _embedding_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    return (shapes[0][0], node.weights["weight"].shape[1])


def _write_embedding(layer: Any, node: Node, shapes: Shapes) -> None:
    """A classic ``embedding``; Core ML keeps the table as [outputChannels, inputDim]."""
    table = node.weights["weight"]
    params = layer.embedding
    params.inputDim, params.outputChannels = table.shape
    put_weights(params.weights, table.T)


def _lstm_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    hidden = node.attrs["hidden"]
    return (shapes[0][0], hidden) if node.attrs.get("return_sequences") else (hidden,)


def _write_lstm(layer: Any, node: Node, shapes: Shapes) -> None:
    """A uniDirectionalLSTM from zero states. Core ML wants exactly three outputs (y, final h,
    final c); the two states get blobs of their own that nothing reads. Gate pre-activations
    and the cell are clipped to [-50, 50] on device (Keras does not clip): harmless for the
    bounded activations the frontends allow."""
    hidden = int(node.attrs["hidden"])
    params = layer.uniDirectionalLSTM
    params.inputVectorSize, params.outputVectorSize = node.weights["W_ih"].shape[1], hidden
    for role in ("recurrent_activation", "activation", "activation"):  # the spec's [f, g, h]
        fill_nonlinearity(params.activations.add(), node.attrs[role], node.name)
    params.params.sequenceOutput = bool(node.attrs.get("return_sequences"))
    params.params.hasBiasVectors = "bias" in node.weights
    parts = {"WeightMatrix": node.weights["W_ih"], "RecursionMatrix": node.weights["W_hh"]}
    if "bias" in node.weights:
        parts["BiasVector"] = node.weights["bias"]
    for suffix, stacked in parts.items():
        for gate, part in zip(LSTM_GATES, np.split(stacked, 4), strict=True):
            put_weights(getattr(params.weightParams, gate + suffix), part, node.trainable)
    layer.output.extend([f"{node.name}_final_h", f"{node.name}_final_c"])


define(
    "embedding",
    family="sequence",
    doc="token ids (Seq, 1) -> (Seq, dim); w: weight (vocab, dim)",
    shape=_embedding_shape,
    write=one_layer(_write_embedding),
    layers=writes("embedding"),
)
define(
    "lstm",
    family="sequence",
    doc="(Seq, in) -> (Seq, H) or last step (H,); zero initial state; a: hidden, "
    "return_sequences, activation (block input and cell output) and "
    "recurrent_activation (gates) as activation attrs; w: W_ih (4H, in), W_hh (4H, H), "
    "bias (4H,) optional, gate order i,f,g,o",
    shape=_lstm_shape,
    write=one_layer(_write_lstm),
    layers=writes("uniDirectionalLSTM"),
)
