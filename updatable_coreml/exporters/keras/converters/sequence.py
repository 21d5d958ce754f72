"""Sequence layers. A sequence is (Seq, C) in the IR; Core ML carries its steps on the Seq
axis of the rank-5 mapping (see docs/keras.md, "Sequence models")."""

from __future__ import annotations

import numpy as np

from ....errors import UnsupportedError
from ..activations import ACTIVATIONS, _activation_name
from ..context import Context, LayerCall, Tensor, _numpy, _source, converts
from .temporal import as_sequence

#: Activations a Keras LSTM may use: bounded ones, because Core ML clips the LSTM's gate
#: pre-activations and cell to [-50, 50], which would change an unbounded activation's result.
LSTM_ACTIVATIONS = ("sigmoid", "tanh", "hard_sigmoid")


@converts("Embedding")
def _embedding(ctx: Context, layer, call: LayerCall):
    """Token ids ``(steps,)`` -> ``(steps, dim)``. The model input it reads becomes a sequence
    of one-value steps, ``(Seq, 1)`` (see ``keras_to_graph``)."""
    (x,) = call.inputs
    where = f"layer {layer.name!r}"
    if getattr(layer, "quantization_mode", None):
        raise UnsupportedError(
            f"{where}: quantized Embedding ({layer.quantization_mode}) cannot "
            "be exported; export the float model"
        )
    if len(x.shape) != 1 or any(x.name in node.outputs for node in ctx.nodes):
        raise UnsupportedError(
            f"{where}: an Embedding must read a model input of token ids shaped "
            f"(steps,), not {x.shape}"
        )
    if layer.mask_zero:
        raise UnsupportedError(
            f"{where}: mask_zero=True cannot be carried: Core ML has no "
            "masking, so the layers after it would process padding tokens (0) "
            "like any other token; export a copy built with mask_zero=False"
        )
    return ctx.add(
        "embedding",
        layer.name,
        [Tensor(x.name, (x.shape[0], 1))],
        weights={"weight": _numpy(layer.embeddings)},
        trainable=ctx.trains(layer),
        source=_source(layer),
    )


def _lstm_activation(fn, where: str) -> dict:
    name = _activation_name(fn, where)
    if name not in LSTM_ACTIVATIONS:
        raise UnsupportedError(
            f"{where}: activation {name!r} in an LSTM is not supported; Core ML "
            "clips LSTM pre-activations to [-50, 50], so use one of " + ", ".join(LSTM_ACTIVATIONS)
        )
    activation = ACTIVATIONS[name]
    assert activation is not None  # every LSTM_ACTIVATIONS entry has a Core ML form
    return activation


@converts("LSTM")
def _lstm(ctx: Context, layer, call: LayerCall) -> Tensor:
    """An LSTM from zero state, as a uniDirectionalLSTM (experimental when trainable)."""
    where = f"layer {layer.name!r}"
    x = as_sequence(ctx, call.inputs[0], layer)
    if len(x.shape) != 2:
        raise UnsupportedError(
            f"{where}: an LSTM needs a sequence (steps, features), got {x.shape}"
        )
    if layer.stateful:
        raise UnsupportedError(
            f"{where}: stateful=True keeps state between batches, but a Core ML "
            "prediction always starts from zero state; export with stateful=False"
        )
    if layer.go_backwards:
        raise UnsupportedError(
            f"{where}: go_backwards=True is not supported (the reference runtime "
            "cannot check Core ML's reverseInput); reverse the sequence instead"
        )
    if call.kwargs.get("initial_state") is not None or call.kwargs.get("mask") is not None:
        raise UnsupportedError(
            f"{where}: initial_state and mask arguments cannot be carried; the "
            "Core ML LSTM starts from zero state and reads every step"
        )
    if layer.dropout or layer.recurrent_dropout:
        ctx.refuse(
            f"{where}: dropout={layer.dropout}, recurrent_dropout={layer.recurrent_dropout} "
            "cannot be carried: Core ML has no dropout, so on-device training would run "
            "without it"
        )
    cell = layer.cell
    weights = {
        "W_ih": np.ascontiguousarray(_numpy(cell.kernel).T),
        "W_hh": np.ascontiguousarray(_numpy(cell.recurrent_kernel).T),
    }
    if layer.use_bias:
        weights["bias"] = _numpy(cell.bias)
    attrs = {
        "hidden": int(layer.units),
        "return_sequences": bool(layer.return_sequences),
        "activation": _lstm_activation(layer.activation, where),
        "recurrent_activation": _lstm_activation(layer.recurrent_activation, where),
    }
    trains = ctx.trains(layer)
    if trains:
        ctx.warnings.append(
            f"{where}: training an LSTM on device is experimental: Apple's validator "
            "accepts an updatable uniDirectionalLSTM only from coremltools 5.0b1 on (3.x "
            "and 4.x refuse it) and no on-device run is public; verify on a device, or "
            "freeze it and train the layers after it"
        )
    name = ctx.add(
        "lstm",
        layer.name,
        [x],
        attrs=attrs,
        weights=weights,
        trainable=trains,
        source=_source(layer),
    )
    hidden = int(layer.units)
    return Tensor(name, (x.shape[0], hidden) if layer.return_sequences else (hidden,))
