"""Recurrent ops besides the unidirectional LSTM (``sequence``): GRU, simple RNN and the
bidirectional LSTM, all from zero state and all frozen (Core ML updates none of them:
``coreml_rules.UPDATABLE_LAYER_TYPES``).

Core ML clips their pre-activations to [-50, 50] (NeuralNetwork.proto), which frontends keep
harmless by allowing bounded activations only; ``fill_recurrent_activation`` refuses what the
recurrent layers do not support.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from .._proto import NeuralNetwork_pb2
from ..ir import Node
from ._spec import new_layer, one_layer, put_weights
from ._table import Layer, Shape, Shapes, define, writes
from .activation import fill_nonlinearity, fill_recurrent_activation
from .sequence import fill_lstm_activations, fill_lstm_weights

#: The spec's GRU weight field prefixes, in the IR's gate order z (update), r (reset), o.
GRU_GATES = ("updateGate", "resetGate", "outputGate")

#: The gate bias a simple RNN written as a GRU pins its gates with: with zero weights the
#: update gate is sigmoid(-50) (~2e-22) and the reset gate sigmoid(50) (1.0 in fp32), so the
#: GRU's y_t = (1 - z) * o_t + z * y_{t-1} is o_t = f(W x_t + R y_{t-1} + b) to fp32 rounding.
PINNED_GATE = 50.0


def _recurrent_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    both = node.op == "bilstm" or node.attrs.get("bidirectional")
    hidden = int(node.attrs["hidden"]) * (2 if both else 1)
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


# -- a GRU that resets after its recursion matrix, unrolled -----------------------------------
# Keras' default GRU (reset_after=True) and torch's nn.GRU compute
#   n_t = g(W_n x_t + b_in + r_t * (U_n y_{t-1} + b_hn)),
# which Core ML's ``gru`` cannot express (it multiplies r_t into y_{t-1} before U_n). Every step
# is therefore written out with classic layers, which the frozen part may hold: the input
# projections of all steps at once (innerProduct works per step of the rank-5 blob), moved onto
# the width axis (permute) and sliced per step; per step the recursion matrices
# (innerProduct), sums (add), gates (activation), products (multiply, scale) and
# y_t = n_t + z_t * (y_{t-1} - n_t). Nothing is clipped, unlike Core ML's recurrent layers, so
# any single-layer activation computes what the source computed. Steps are fixed at export.


class _Unrolled:
    """Appends the classic layers of one unrolled GRU direction to ``nn``: blobs and layers
    ``<prefix>_<blob>``; the node's last layer is named like the node (``name``)."""

    def __init__(self, nn: Any, prefix: str, name: str) -> None:
        self.nn, self.prefix, self.name = nn, prefix, name

    def layer(self, blob: str, inputs: Sequence[str], output: Optional[str] = None) -> Any:
        if output is not None:
            return new_layer(self.nn, self.name, inputs, [output])
        return new_layer(self.nn, f"{self.prefix}_{blob}", inputs, [f"{self.prefix}_{blob}"])

    def dense(self, blob: str, x: str, weight: np.ndarray, bias: Optional[np.ndarray]) -> str:
        params = self.layer(blob, [x]).innerProduct
        params.outputChannels, params.inputChannels = weight.shape
        put_weights(params.weights, weight)
        if bias is not None:
            params.hasBias = True
            put_weights(params.bias, bias)
        return f"{self.prefix}_{blob}"

    def activation(self, blob: str, x: str, attrs: Mapping[str, Any]) -> str:
        fill_nonlinearity(self.layer(blob, [x]).activation, attrs, self.name)
        return f"{self.prefix}_{blob}"

    def binary(self, kind: str, blob: str, a: str, b: str, output: Optional[str] = None) -> str:
        getattr(self.layer(blob, [a, b], output), kind).SetInParent()
        return output or f"{self.prefix}_{blob}"


def _write_gru_reset_after(nn: Any, node: Node, shapes: Shapes) -> None:
    """The unrolled GRU (see above); with ``bidirectional`` a second one over the reversed
    steps (weights ``*_back``), whose output at step t has read from the end down to t, and a
    channel ``concat`` [forward, backward], as Keras' Bidirectional(GRU) merges them."""
    if not node.attrs.get("bidirectional"):
        _unroll(nn, node, "", node.outputs[0])
        return
    forward = _unroll(nn, node, "", None)
    backward = _unroll(nn, node, "_back", None)
    new_layer(nn, node.name, [forward, backward], node.outputs).concat.SetInParent()


def _unroll(nn: Any, node: Node, suffix: str, output: Optional[str]) -> str:
    """One direction (``suffix`` '' forwards, '_back' backwards); returns its output blob,
    ``output`` when given (then its last layer is named like the node)."""
    steps, hidden = int(node.attrs["steps"]), int(node.attrs["hidden"])
    f, g = node.attrs["recurrent_activation"], node.attrs["activation"]
    w_ih = np.split(node.weights["W_ih" + suffix], 3)
    w_hh = np.split(node.weights["W_hh" + suffix], 3)
    biased = "b_ih" + suffix in node.weights
    b_ih = np.split(node.weights["b_ih" + suffix], 3) if biased else []
    b_hh = np.split(node.weights["b_hh" + suffix], 3) if biased else []
    # z and r add both biases outside the reset product: fold them into the input projection.
    x_bias: list[Optional[np.ndarray]] = (
        [b_ih[0] + b_hh[0], b_ih[1] + b_hh[1], b_ih[2]] if biased else [None, None, None]
    )
    hn_bias = b_hh[2] if biased else None
    put = _Unrolled(nn, node.name + suffix, node.name)
    projected = []
    for gate, weight, bias in zip("zrn", w_ih, x_bias, strict=True):
        over_steps = put.dense(f"x{gate}", node.inputs[0], weight, bias)
        put.layer(f"x{gate}_over_time", [over_steps]).permute.axis.extend(
            (2, 1, 3, 0)  # [Seq, C, 1, 1] -> [1, C, 1, Seq], as sequence_to_width
        )
        projected.append(f"{put.prefix}_x{gate}_over_time")
    last = not node.attrs.get("return_sequences")
    order = list(range(steps))[::-1] if suffix else list(range(steps))
    outputs, h = {}, ""
    for t in order:
        x = {}
        for gate, source in zip("zrn", projected, strict=True):
            params = put.layer(f"t{t}_x{gate}", [source]).slice
            params.axis, params.startIndex, params.endIndex, params.stride = _WIDTH, t, t + 1, 1
            x[gate] = f"{put.prefix}_t{t}_x{gate}"
        out = output if last and t == order[-1] else None
        if t == order[0]:  # y before the first step is 0: only b_hn is inside the reset product
            z = put.activation(f"t{t}_z", x["z"], f)
            r = put.activation(f"t{t}_r", x["r"], f)
            pre_n = x["n"]
            if biased:
                scale = put.layer(f"t{t}_rb", [r]).scale
                scale.shapeScale.append(hidden)
                put_weights(scale.scale, b_hh[2])
                pre_n = put.binary("add", f"t{t}_pre_n", x["n"], f"{put.prefix}_t{t}_rb")
            n = put.activation(f"t{t}_n", pre_n, g)
            zn = put.binary("multiply", f"t{t}_zn", z, n)
            negated = put.activation(f"t{t}_neg_zn", zn, _NEGATE)
            h = put.binary("add", f"t{t}_h", n, negated, out)
        else:
            hz = put.dense(f"t{t}_hz", h, w_hh[0], None)
            hr = put.dense(f"t{t}_hr", h, w_hh[1], None)
            hn = put.dense(f"t{t}_hn", h, w_hh[2], hn_bias)
            z = put.activation(f"t{t}_z", put.binary("add", f"t{t}_pre_z", x["z"], hz), f)
            r = put.activation(f"t{t}_r", put.binary("add", f"t{t}_pre_r", x["r"], hr), f)
            rn = put.binary("multiply", f"t{t}_rn", r, hn)
            n = put.activation(f"t{t}_n", put.binary("add", f"t{t}_pre_n", x["n"], rn), g)
            negated = put.activation(f"t{t}_neg_n", n, _NEGATE)
            d = put.binary("add", f"t{t}_d", h, negated)
            zd = put.binary("multiply", f"t{t}_zd", z, d)
            h = put.binary("add", f"t{t}_h", n, zd, out)
        outputs[t] = h
    if last:
        return h
    in_time_order = [outputs[t] for t in range(steps)]
    if steps == 1:  # a concat needs two inputs (Apple's validateConcatLayer): repeat once
        put.layer("steps", in_time_order, output).sequenceRepeat.nRepetitions = 1
    else:
        put.layer("steps", in_time_order, output).concat.sequenceConcat = True
    return output or f"{put.prefix}_steps"


_WIDTH = NeuralNetwork_pb2.SliceLayerParams.WIDTH_AXIS

#: y -> -y, a linear activation.
_NEGATE: Mapping[str, Any] = {"kind": "linear", "alpha": -1.0, "beta": 0.0}

#: attrs covering every layer the unrolled GRU writes (for docs and the op-table test).
_GRU_RESET_AFTER_VARIANT: Mapping[str, Any] = {
    "steps": 2,
    "hidden": 1,
    "return_sequences": True,
    "activation": {"kind": "tanh"},
    "recurrent_activation": {"kind": "sigmoid"},
    "bias": True,
    "bidirectional": True,
}


def _gru_reset_after_layers(attrs: Mapping[str, Any]) -> tuple[Layer, ...]:
    """The layers a node with ``attrs`` writes: the writer run on zero weights of the same
    configuration, so the list cannot drift from what is written."""
    hidden = int(attrs.get("hidden", 1))
    weights: dict[str, np.ndarray] = {
        "W_ih": np.zeros((3 * hidden, 1), np.float32),
        "W_hh": np.zeros((3 * hidden, hidden), np.float32),
    }
    if attrs.get("bias", True):
        weights["b_ih"] = weights["b_hh"] = np.zeros(3 * hidden, np.float32)
    if attrs.get("bidirectional"):
        weights.update({f"{key}_back": value for key, value in weights.items()})
    scratch = NeuralNetwork_pb2.NeuralNetwork()
    node = Node("gru_reset_after", "n", ["x"], ["y"], dict(attrs), weights)
    _write_gru_reset_after(scratch, node, {})
    return tuple(
        (
            layer.WhichOneof("layer"),
            layer.activation.WhichOneof("NonlinearityType")
            if layer.WhichOneof("layer") == "activation"
            else None,
        )
        for layer in scratch.layers
    )


define(
    "gru_reset_after",
    family="recurrent",
    doc="(Seq, in) -> (Seq, H) or last step (H,); a GRU whose reset gate applies after the "
    "recursion matrix (Keras reset_after=True, torch nn.GRU), unrolled over the fixed steps "
    "into classic layers (frozen only); a: steps, hidden, return_sequences, activation, "
    "recurrent_activation, bias (whether b_ih/b_hh exist), bidirectional (then (Seq, 2H) or "
    "(2H,): [forward, backward], weights *_back too); w: W_ih (3H, in), W_hh (3H, H), "
    "b_ih (3H,), b_hh (3H,) optional, gate order z, r, n",
    shape=_recurrent_shape,
    write=_write_gru_reset_after,
    layers=_gru_reset_after_layers,
    variants=(_GRU_RESET_AFTER_VARIANT,),
)
