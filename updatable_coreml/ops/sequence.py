"""Sequence ops: token embeddings and the unidirectional LSTM.

Sequences are ``(Seq, C)`` per example (token ids for an embedding: ``(Seq, 1)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..ir import Node
from ._spec import one_layer, put_weights
from ._table import Shape, Shapes, define, writes
from .activation import fill_recurrent_activation

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
    fill_lstm_activations(params.activations, node)
    params.params.sequenceOutput = bool(node.attrs.get("return_sequences"))
    params.params.hasBiasVectors = "bias" in node.weights
    fill_lstm_weights(params.weightParams, node)
    layer.output.extend([f"{node.name}_final_h", f"{node.name}_final_c"])


def fill_lstm_activations(activations: Any, node: Node) -> None:
    """The spec's three LSTM activations [f (gates), g (block input), h (cell output)]."""
    for role in ("recurrent_activation", "activation", "activation"):
        fill_recurrent_activation(activations.add(), node.attrs[role], node.name)


def fill_lstm_weights(weight_params: Any, node: Node, suffix: str = "") -> None:
    """An ``LSTMWeightParams`` from ``W_ih``, ``W_hh`` and optional ``bias`` (+ ``suffix``),
    stacked in the IR's gate order i, f, g, o; updatable when the node trains."""
    parts = {
        "WeightMatrix": node.weights["W_ih" + suffix],
        "RecursionMatrix": node.weights["W_hh" + suffix],
    }
    if "bias" + suffix in node.weights:
        parts["BiasVector"] = node.weights["bias" + suffix]
    for kind, stacked in parts.items():
        for gate, part in zip(LSTM_GATES, np.split(stacked, 4), strict=True):
            put_weights(getattr(weight_params, gate + kind), part, node.trainable)


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


# -- time on the width axis (Keras Conv1D; issue 14) ------------------------------------------
# A convolution over time must see the steps on an axis its kernel slides over: Core ML's
# convolution and pooling work per sequence step on (C, H, W), so a (Seq, C) sequence is moved
# to (C, 1, Seq) first. Then a Conv1D is an ordinary (and updatable) ``convolution`` with a
# (1, k) kernel. Core ML's classic ``permute`` reorders the rank-5 blob's [Seq, C, H, W] axes,
# output axis i = input axis ``axis[i]`` (NeuralNetwork.proto ``PermuteLayerParams``).

#: [Seq, C, 1, 1] -> [1, C, 1, Seq]: the steps onto the width axis.
SEQUENCE_TO_WIDTH = (2, 1, 3, 0)
#: [1, C, 1, W] -> [W, C, 1, 1]: the width axis back onto the steps.
WIDTH_TO_SEQUENCE = (3, 1, 2, 0)


def _to_width_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    steps, channels = shapes[0]
    return (channels, 1, steps)


def _to_sequence_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    channels, height, width = shapes[0]
    if height != 1:
        raise UnsupportedError(
            f"layer {node.name!r}: only a (C, 1, W) tensor can become a sequence, got {shapes[0]}"
        )
    return (width, channels)


def _permute_writer(axis: tuple[int, int, int, int]):
    def fill(layer: Any, node: Node, shapes: Shapes) -> None:
        layer.permute.axis.extend(axis)

    return one_layer(fill)


define(
    "sequence_to_width",
    family="sequence",
    doc="(Seq, C) -> (C, 1, Seq): the steps onto the width axis, for convolutions and "
    "pooling over time (a classic permute)",
    shape=_to_width_shape,
    write=_permute_writer(SEQUENCE_TO_WIDTH),
    layers=writes("permute"),
)
define(
    "width_to_sequence",
    family="sequence",
    doc="(C, 1, W) -> (W, C): the width axis back onto the steps, for a recurrent layer "
    "after convolutions over time (a classic permute)",
    shape=_to_sequence_shape,
    write=_permute_writer(WIDTH_TO_SEQUENCE),
    layers=writes("permute"),
)
