"""Recurrent ops besides the unidirectional LSTM (``sequence``): GRU, simple RNN and the
bidirectional LSTM, all from zero state and all frozen (Core ML updates none of them:
``coreml_rules.UPDATABLE_LAYER_TYPES``).

Core ML clips their pre-activations to [-50, 50] (NeuralNetwork.proto), which frontends keep
harmless by allowing bounded activations only; ``fill_recurrent_activation`` refuses what the
recurrent layers do not support.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ir import Node
from ._spec import one_layer, put_weights
from ._table import Shape, Shapes, define, writes
from .activation import fill_recurrent_activation
from .sequence import fill_lstm_activations, fill_lstm_weights

#: The spec's GRU weight field prefixes, in the IR's gate order z (update), r (reset), o.
GRU_GATES = ("updateGate", "resetGate", "outputGate")

#: The gate bias a simple RNN written as a GRU pins its gates with: with zero weights the
#: update gate is sigmoid(-50) (~2e-22) and the reset gate sigmoid(50) (1.0 in fp32), so the
#: GRU's y_t = (1 - z) * o_t + z * y_{t-1} is o_t = f(W x_t + R y_{t-1} + b) to fp32 rounding.
PINNED_GATE = 50.0


def _recurrent_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    hidden = int(node.attrs["hidden"]) * (2 if node.op == "bilstm" else 1)
    return (shapes[0][0], hidden) if node.attrs.get("return_sequences") else (hidden,)


def _fill_gru(params: Any, node: Node, stacked: dict[str, np.ndarray]) -> None:
    """GRU fields from ``stacked`` ({WeightMatrix, RecursionMatrix[, BiasVector]} -> arrays
    stacked in the gate order z, r, o). Core ML wants two outputs (y, final state)."""
    hidden = int(node.attrs["hidden"])
    params.inputVectorSize, params.outputVectorSize = stacked["WeightMatrix"].shape[1], hidden
    params.sequenceOutput = bool(node.attrs.get("return_sequences"))
    params.hasBiasVectors = "BiasVector" in stacked
    for kind, array in stacked.items():
        for gate, part in zip(GRU_GATES, np.split(array, 3), strict=True):
            put_weights(getattr(params, gate + kind), part)


def _write_gru(layer: Any, node: Node, shapes: Shapes) -> None:
    """A ``gru``: NeuralNetwork.proto's GRU resets before the recursion matrix,
    ``o_t = g(W_o x_t + R_o (r_t * y_{t-1}) + b_o)`` (Keras ``reset_after=False``)."""
    for role in ("recurrent_activation", "activation"):  # the spec's [f (gates), g]
        fill_recurrent_activation(layer.gru.activations.add(), node.attrs[role], node.name)
    stacked = {"WeightMatrix": node.weights["W_ih"], "RecursionMatrix": node.weights["W_hh"]}
    if "bias" in node.weights:
        stacked["BiasVector"] = node.weights["bias"]
    _fill_gru(layer.gru, node, stacked)
    layer.output.append(f"{node.name}_final_h")


def _write_simple_rnn(layer: Any, node: Node, shapes: Shapes) -> None:
    """A simple RNN written as a ``gru`` whose gates are pinned (``PINNED_GATE``): Core ML's
    ``simpleRecurrent`` needs its initial state as a second input in every release 3.0-9.0
    (``validateSimpleRecurrentLayer``: input count 2..2), which a network can only get as an
    extra model input; the GRU reads the sequence alone and computes the same outputs."""
    w_ih, w_hh = node.weights["W_ih"], node.weights["W_hh"]
    hidden = w_hh.shape[0]
    bias = node.weights.get("bias", np.zeros(hidden, np.float32))
    zeros_in, zeros_h = np.zeros_like(w_ih), np.zeros_like(w_hh)
    pinned = np.full(hidden, PINNED_GATE, np.float32)
    fill_recurrent_activation(layer.gru.activations.add(), {"kind": "sigmoid"}, node.name)
    fill_recurrent_activation(layer.gru.activations.add(), node.attrs["activation"], node.name)
    stacked = {
        "WeightMatrix": np.concatenate([zeros_in, zeros_in, w_ih]),
        "RecursionMatrix": np.concatenate([zeros_h, zeros_h, w_hh]),
        "BiasVector": np.concatenate([-pinned, pinned, bias]),
    }
    _fill_gru(layer.gru, node, stacked)
    layer.output.append(f"{node.name}_final_h")


def _write_bilstm(layer: Any, node: Node, shapes: Shapes) -> None:
    """A ``biDirectionalLSTM``: per step [forward output, backward output], the backward one
    having read the sequence from the end down to that step (NeuralNetwork.proto); without
    return_sequences [last forward, backward after the whole sequence]. Five outputs (y and
    the four final states), as Core ML requires."""
    params = layer.biDirectionalLSTM
    params.inputVectorSize = node.weights["W_ih"].shape[1]
    params.outputVectorSize = int(node.attrs["hidden"])
    fill_lstm_activations(params.activationsForwardLSTM, node)
    fill_lstm_activations(params.activationsBackwardLSTM, node)
    params.params.sequenceOutput = bool(node.attrs.get("return_sequences"))
    params.params.hasBiasVectors = "bias" in node.weights
    for suffix in ("", "_back"):
        fill_lstm_weights(params.weightParams.add(), node, suffix)
    layer.output.extend(f"{node.name}_final_{state}" for state in ("h", "c", "h_back", "c_back"))


define(
    "gru",
    family="recurrent",
    doc="(Seq, in) -> (Seq, H) or last step (H,); zero initial state; the reset gate applies "
    "to the previous output before its recursion matrix (Keras reset_after=False); a: hidden, "
    "return_sequences, activation and recurrent_activation (gates) as activation attrs; "
    "w: W_ih (3H, in), W_hh (3H, H), bias (3H,) optional, gate order z, r, o",
    shape=_recurrent_shape,
    write=one_layer(_write_gru),
    layers=writes("gru"),
)
define(
    "simple_rnn",
    family="recurrent",
    doc="(Seq, in) -> (Seq, H) or last step (H,); y_t = f(W_ih x_t + W_hh y_{t-1} + bias) "
    "from zero state, written as a GRU with pinned gates; a: hidden, return_sequences, "
    "activation; w: W_ih (H, in), W_hh (H, H), bias (H,) optional",
    shape=_recurrent_shape,
    write=one_layer(_write_simple_rnn),
    layers=writes("gru"),
)
define(
    "bilstm",
    family="recurrent",
    doc="(Seq, in) -> (Seq, 2H) or (2H,): [forward, backward] LSTM outputs; a: as lstm; "
    "w: W_ih, W_hh, bias (forward) and W_ih_back, W_hh_back, bias_back, as lstm's",
    shape=_recurrent_shape,
    write=one_layer(_write_bilstm),
    layers=writes("biDirectionalLSTM"),
)
