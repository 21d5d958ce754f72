"""Recurrent layers Core ML has no single layer for, written step by step in classic layers.

torch's ``nn.GRU`` (like Keras' default ``GRU(reset_after=True)``) applies the reset gate
*after* the recurrent matrix, ``n_t = g(W_n x_t + b_in + r_t * (R_n h_{t-1} + b_hn))``;
Core ML's ``gru`` applies it before, ``o_t = g(W_o x_t + R_o (r_t * y_{t-1}) + b_o)``
(NeuralNetwork.proto ``GRULayerParams``): a different function whenever ``R_n`` is not
diagonal, so no ``gru`` layer computes it. The sequence length is fixed at export, so the GRU
is unrolled: the input projections of every step at once (1x1 convolutions after moving the
steps onto the width axis), then per step a ``crop`` of its column, ``innerProduct`` on the
previous output, ``add``, ``multiply``, ``scale`` and the gate activations; the steps are
joined on the sequence axis (``concat`` with ``sequenceConcat``). Every layer is a classic
iOS 11 one, so the rank-5 mapping sequences need holds; none is updatable and Core ML
passes no gradient through ``crop``/``permute``, so such a GRU is frozen and belongs to the
part before the first trainable layer. No clipping: torch and Keras clip nothing, and neither
do these layers (Core ML's ``gru`` would clip to [-50, 50]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..ir import Node
from ._spec import new_layer, put_weights
from ._table import Layer, Shape, Shapes, define
from .activation import NONLINEARITIES, fill_nonlinearity
from .sequence import SEQUENCE_TO_WIDTH

#: The IR's gate order of ``W_ih``/``W_hh``/biases: update z, reset r, new n (Core ML's
#: ``gru`` order updateGate, resetGate, outputGate, so both GRU ops stack alike).
GATES = ("z", "r", "n")
SIGMOID, TANH = {"kind": "sigmoid"}, {"kind": "tanh"}
_ONE_MINUS = {"kind": "linear", "alpha": -1.0, "beta": 1.0}


class _Steps:
    """Appends classic layers named ``<node>.<what>`` whose single output has that name."""

    def __init__(self, nn: Any, node: Node) -> None:
        self.nn, self.node = nn, node

    def layer(self, what: str, inputs: Sequence[str], output: str | None = None) -> Any:
        """The layer writing the node's output carries the node's name (as every op's)."""
        name = f"{self.node.name}.{what}"
        if output == self.node.outputs[0]:
            name = self.node.name
        return new_layer(self.nn, name, list(inputs), [output or name])

    def activation(self, what: str, x: str, attrs: Mapping[str, Any]) -> str:
        layer = self.layer(what, [x])
        fill_nonlinearity(layer.activation, attrs, self.node.name)
        return layer.output[0]

    def binary(self, what: str, kind: str, a: str, b: str, output: str | None = None) -> str:
        layer = self.layer(what, [a, b], output)
        getattr(layer, kind).SetInParent()
        return layer.output[0]

    def dense(self, what: str, x: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
        layer = self.layer(what, [x])
        params = layer.innerProduct
        params.outputChannels, params.inputChannels = weight.shape
        put_weights(params.weights, weight)
        if bias is not None:
            params.hasBias = True
            put_weights(params.bias, bias)
        return layer.output[0]


def _shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    if int(node.attrs["steps"]) != shapes[0][0]:
        raise UnsupportedError(
            f"layer {node.name!r}: unrolled for {node.attrs['steps']} steps, but its input "
            f"has {shapes[0][0]}"
        )
    hidden = int(node.attrs["hidden"])
    return (shapes[0][0], hidden) if node.attrs.get("return_sequences") else (hidden,)


def _gates(array: np.ndarray | None) -> dict[str, np.ndarray | None]:
    if array is None:
        return dict.fromkeys(GATES)
    return dict(zip(GATES, np.split(np.asarray(array, np.float32), 3), strict=True))


def _write_gru_unrolled(nn: Any, node: Node, shapes: Shapes) -> None:
    """The unrolled GRU (see the module doc); the node's output is the last step's h, or
    all steps joined on the sequence axis."""
    steps, features = shapes[node.inputs[0]]
    hidden = int(node.attrs["hidden"])
    gate_fn = node.attrs.get("recurrent_activation", SIGMOID)
    cell_fn = node.attrs.get("activation", TANH)
    w_ih, w_hh = _gates(node.weights["W_ih"]), _gates(node.weights["W_hh"])
    b_ih, b_hh = _gates(node.weights.get("b_ih")), _gates(node.weights.get("b_hh"))
    out = _Steps(nn, node)
    wide = out.layer("steps", node.inputs)
    wide.permute.axis.extend(SEQUENCE_TO_WIDTH)
    projected = {}
    for gate in GATES:  # W x_t + b for every step; z and r take both biases here
        layer = out.layer(f"x_{gate}", wide.output)
        params = layer.convolution
        params.outputChannels, params.kernelChannels, params.nGroups = hidden, features, 1
        params.kernelSize.extend((1, 1))
        params.stride.extend((1, 1))
        params.dilationFactor.extend((1, 1))
        params.valid.SetInParent()
        put_weights(params.weights, w_ih[gate].reshape(hidden, features, 1, 1))  # type: ignore[union-attr]
        parts = [b for b in (b_ih[gate], b_hh[gate] if gate != "n" else None) if b is not None]
        if parts:
            params.hasBias = True
            put_weights(params.bias, np.sum(parts, axis=0))
        projected[gate] = layer.output[0]
    joined = bool(node.attrs.get("return_sequences")) and steps > 1

    def final(t: int) -> str | None:
        """The node's output is the last step's h unless the steps are joined."""
        return node.outputs[0] if t == steps - 1 and not joined else None

    outputs: list[str] = []
    h = ""
    for t in range(steps):
        x = {}
        for gate in GATES:
            crop = out.layer(f"t{t}.x_{gate}", [projected[gate]])
            for start, end in ((0, 0), (t, steps - 1 - t)):
                amount = crop.crop.cropAmounts.borderAmounts.add()
                amount.startEdgeSize, amount.endEdgeSize = start, end
            x[gate] = crop.output[0]
        if t == 0:  # h_{-1} = 0: the recurrent terms are their biases
            z = out.activation(f"t{t}.z", x["z"], gate_fn)
            r = out.activation(f"t{t}.r", x["r"], gate_fn)
            scale = out.layer(f"t{t}.r_hn", [r])  # r * b_hn (zeros without biases)
            scale.scale.shapeScale.append(hidden)
            b_hn = b_hh["n"] if b_hh["n"] is not None else np.zeros(hidden, np.float32)
            put_weights(scale.scale.scale, b_hn)
            pre = out.binary(f"t{t}.n_in", "add", x["n"], scale.output[0])
            n = out.activation(f"t{t}.n", pre, cell_fn)
            keep = out.activation(f"t{t}.one_minus_z", z, _ONE_MINUS)
            h = out.binary(f"t{t}.h", "multiply", keep, n, final(t))
        else:
            z_in = out.dense(f"t{t}.h_z", h, w_hh["z"], None)  # type: ignore[arg-type]
            r_in = out.dense(f"t{t}.h_r", h, w_hh["r"], None)  # type: ignore[arg-type]
            h_n = out.dense(f"t{t}.h_n", h, w_hh["n"], b_hh["n"])  # type: ignore[arg-type]
            z = out.activation(f"t{t}.z", out.binary(f"t{t}.z_in", "add", x["z"], z_in), gate_fn)
            r = out.activation(f"t{t}.r", out.binary(f"t{t}.r_in", "add", x["r"], r_in), gate_fn)
            reset = out.binary(f"t{t}.r_hn", "multiply", r, h_n)
            n = out.activation(f"t{t}.n", out.binary(f"t{t}.n_in", "add", x["n"], reset), cell_fn)
            keep = out.activation(f"t{t}.one_minus_z", z, _ONE_MINUS)
            new = out.binary(f"t{t}.new", "multiply", keep, n)
            old = out.binary(f"t{t}.old", "multiply", z, h)
            h = out.binary(f"t{t}.h", "add", new, old, final(t))
        outputs.append(h)
    if joined:
        out.layer("sequence", outputs, node.outputs[0]).concat.sequenceConcat = True


def _unrolled_layers(attrs: Mapping[str, Any]) -> tuple[Layer, ...]:
    """The layers the unrolled GRU writes, in order, for its ``steps``."""
    gate = ("activation", NONLINEARITIES[attrs.get("recurrent_activation", SIGMOID)["kind"]][0])
    cell = ("activation", NONLINEARITIES[attrs.get("activation", TANH)["kind"]][0])
    one_minus = ("activation", "linear")
    crops: tuple[Layer, ...] = (("crop", None),) * 3
    first: tuple[Layer, ...] = (
        *crops,
        gate,
        gate,
        ("scale", None),
        ("add", None),
        cell,
        one_minus,
        ("multiply", None),
    )
    later: tuple[Layer, ...] = (
        *crops,
        *(("innerProduct", None),) * 3,
        ("add", None),
        gate,
        ("add", None),
        gate,
        ("multiply", None),
        ("add", None),
        cell,
        one_minus,
        ("multiply", None),
        ("multiply", None),
        ("add", None),
    )
    steps = int(attrs.get("steps", 1))
    joined: tuple[Layer, ...] = (
        (("concat", None),) if attrs.get("return_sequences") and steps > 1 else ()
    )
    return (("permute", None), *(("convolution", None),) * 3, *first, *later * (steps - 1), *joined)


define(
    "gru_unrolled",
    family="recurrent",
    doc="a GRU that resets after the recurrent matrix (torch nn.GRU, Keras reset_after=True), "
    "unrolled over its fixed steps in classic layers; (Seq, in) -> (Seq, H) or last step (H,); "
    "zero initial state; a: steps, hidden, return_sequences, activation (tanh) and "
    "recurrent_activation (sigmoid) as activation attrs; w: W_ih (3H, in), W_hh (3H, H), "
    "b_ih (3H,) and b_hh (3H,) optional, gate order z, r, n",
    shape=_shape,
    write=_write_gru_unrolled,
    layers=_unrolled_layers,
    variants=({"steps": 2}, {"steps": 2, "return_sequences": True}),
)
