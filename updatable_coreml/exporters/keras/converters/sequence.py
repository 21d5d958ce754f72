"""Sequence layers. A sequence is (Seq, C) in the IR; Core ML carries its steps on the Seq
axis of the rank-5 mapping (see docs/keras.md, "Sequence models"). Recurrent layers read a
Conv1D's (C, 1, steps) output through ``temporal.as_sequence``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import UnsupportedError
from ....ops.activation import NONLINEARITIES
from ..activations import ACTIVATIONS, _activation_name
from ..context import Context, LayerCall, Tensor, _numpy, _source, converts
from .temporal import as_sequence

#: Activations a Keras recurrent layer may use: bounded ones, because Core ML clips a recurrent
#: layer's gate pre-activations (and an LSTM's cell) to [-50, 50] (NeuralNetwork.proto), which
#: would change an unbounded activation's result. Keras 3's hard_sigmoid (x / 6 + 0.5) is not
#: among them: Core ML's recurrent layers support a hard sigmoid only as 0.2 * x + 0.5
#: (``coreml_rules.RECURRENT_ACTIVATIONS``).
RECURRENT_ACTIVATIONS = ("sigmoid", "tanh")


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


def _recurrent_activation(fn, where: str) -> dict:
    name = _activation_name(fn, where)
    if name not in RECURRENT_ACTIVATIONS:
        reason = (
            "Keras 3's hard_sigmoid is x / 6 + 0.5, and Core ML's recurrent layers support a "
            "hard sigmoid only as 0.2 * x + 0.5 (NeuralNetwork.proto)"
            if name == "hard_sigmoid"
            else "Core ML clips recurrent (LSTM) pre-activations to [-50, 50]"
        )
        raise UnsupportedError(
            f"{where}: activation {name!r} in a recurrent layer is not supported: {reason}; "
            "use one of " + ", ".join(RECURRENT_ACTIVATIONS)
        )
    activation = ACTIVATIONS[name]
    assert activation is not None  # every RECURRENT_ACTIVATIONS entry has a Core ML form
    return activation


def _check_recurrent(ctx: Context, layer, call: LayerCall, where: str) -> Tensor:
    """The sequence a Keras RNN layer reads, refusing what a Core ML recurrent layer, which
    starts from zero state and reads every step, cannot carry."""
    x = as_sequence(ctx, call.inputs[0], layer)
    if len(x.shape) != 2:
        raise UnsupportedError(
            f"{where}: a recurrent layer needs a sequence (steps, features), got {x.shape}"
        )
    if layer.stateful:
        raise UnsupportedError(
            f"{where}: stateful=True keeps state between batches, but a Core ML "
            "prediction always starts from zero state; export with stateful=False"
        )
    if call.kwargs.get("initial_state") is not None or call.kwargs.get("mask") is not None:
        raise UnsupportedError(
            f"{where}: initial_state and mask arguments cannot be carried; the "
            "Core ML recurrent layers start from zero state and read every step"
        )
    for part in (layer, getattr(layer, "backward_layer", None)):
        if part is not None and (part.dropout or part.recurrent_dropout):
            ctx.refuse(
                f"{where}: dropout={part.dropout}, recurrent_dropout={part.recurrent_dropout} "
                "cannot be carried: Core ML has no dropout, so on-device training would run "
                "without it"
            )
    return x


def _forward_only(layer, where: str) -> None:
    if layer.go_backwards:
        raise UnsupportedError(
            f"{where}: go_backwards=True is not supported (the reference runtime "
            "cannot check Core ML's reverseInput); reverse the sequence instead"
        )


def _output(name: str, x: Tensor, hidden: int, return_sequences: bool) -> Tensor:
    return Tensor(name, (x.shape[0], hidden) if return_sequences else (hidden,))


def _lstm_weights(layer, suffix: str = "") -> dict[str, np.ndarray]:
    """A Keras LSTM's kernels as the IR's W_ih (4H, in), W_hh (4H, H), bias (4H,); Keras
    stacks the gates i, f, c, o, the IR's i, f, g, o."""
    cell = layer.cell
    weights = {
        "W_ih" + suffix: np.ascontiguousarray(_numpy(cell.kernel).T),
        "W_hh" + suffix: np.ascontiguousarray(_numpy(cell.recurrent_kernel).T),
    }
    if layer.use_bias:
        weights["bias" + suffix] = _numpy(cell.bias)
    return weights


def _recurrent_attrs(layer, where: str) -> dict:
    attrs = {
        "hidden": int(layer.units),
        "return_sequences": bool(layer.return_sequences),
        "activation": _recurrent_activation(layer.activation, where),
    }
    if hasattr(layer, "recurrent_activation"):
        attrs["recurrent_activation"] = _recurrent_activation(layer.recurrent_activation, where)
    return attrs


@converts("LSTM")
def _lstm(ctx: Context, layer, call: LayerCall) -> Tensor:
    """An LSTM from zero state, as a uniDirectionalLSTM (experimental when trainable)."""
    where = f"layer {layer.name!r}"
    x = _check_recurrent(ctx, layer, call, where)
    _forward_only(layer, where)
    attrs = _recurrent_attrs(layer, where)
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
        weights=_lstm_weights(layer),
        trainable=trains,
        source=_source(layer),
    )
    return _output(name, x, attrs["hidden"], attrs["return_sequences"])


@converts("GRU")
def _gru(ctx: Context, layer, call: LayerCall) -> Tensor:
    """A GRU from zero state, as a ``gru`` (frozen: Core ML cannot update it). Only
    ``reset_after=False`` is Core ML's GRU (NeuralNetwork.proto ``GRULayerParams``:
    ``c_t = y_{t-1} * r_t`` before the recursion matrix)."""
    where = f"layer {layer.name!r}"
    x = _check_recurrent(ctx, layer, call, where)
    _forward_only(layer, where)
    if layer.reset_after:
        return _gru_reset_after(ctx, layer, x, where)
    return _one_cell(ctx, layer, x, where, "gru")  # Keras gates z, r, h


def _gru_reset_after(ctx: Context, layer, x: Tensor, where: str) -> Tensor:
    """Keras' default GRU, ``r * (U h + b_rec)``, which Core ML's ``gru`` cannot express
    (NeuralNetwork.proto ``GRULayerParams`` applies r before U): the ``gru_reset_after`` op
    unrolls it over the fixed steps into classic layers, frozen, with no clipping, so any
    activation with a single Core ML layer works."""
    attrs, weights = _unrolled_gru(layer, x, where)
    return _emit_unrolled(ctx, layer, x, where, attrs, weights)


def _unrolled_gru(layer, x: Tensor, where: str, suffix: str = "") -> tuple[dict, dict]:
    """The ``gru_reset_after`` attrs and weights (names + ``suffix``) of a Keras GRU."""
    cell = layer.cell
    attrs: dict[str, Any] = {
        "steps": x.shape[0],
        "hidden": int(layer.units),
        "return_sequences": bool(layer.return_sequences),
        "bias": bool(layer.use_bias),
    }
    for role in ("activation", "recurrent_activation"):
        name = _activation_name(getattr(layer, role), where)
        kind = ACTIVATIONS[name]
        if kind is None or kind.get("kind", "linear") not in NONLINEARITIES:
            raise UnsupportedError(
                f"{where}: {role} {name!r} has no single Core ML activation layer; use one of "
                + ", ".join(sorted(n for n, a in ACTIVATIONS.items() if _single_layer(a)))
            )
        attrs[role] = kind
    weights = {
        "W_ih" + suffix: np.ascontiguousarray(_numpy(cell.kernel).T),  # Keras gates z, r, h
        "W_hh" + suffix: np.ascontiguousarray(_numpy(cell.recurrent_kernel).T),
    }
    if layer.use_bias:
        input_bias, recurrent_bias = _numpy(cell.bias)
        weights["b_ih" + suffix], weights["b_hh" + suffix] = input_bias, recurrent_bias
    return attrs, weights


def _emit_unrolled(ctx: Context, layer, x: Tensor, where: str, attrs: dict, weights: dict):
    directions = 2 if attrs.get("bidirectional") else 1
    copies = directions * (x.shape[0] - 1) * weights["W_hh"].nbytes
    ctx.warnings.append(
        f"{where}: reset_after=True is unrolled over its {x.shape[0]} steps into classic "
        f"layers (Core ML's gru resets before the recurrent kernel); the recurrent kernel is "
        f"stored once per step ({copies / 1e6:.2f} MB). GRU(reset_after=False) is one Core ML "
        "gru layer, if you can train that form"
    )
    name = ctx.add(
        "gru_reset_after",
        layer.name,
        [x],
        attrs=attrs,
        weights=weights,
        trainable=ctx.trains(layer),
        source=_source(layer),
    )
    return _output(name, x, directions * attrs["hidden"], attrs["return_sequences"])


def _single_layer(activation) -> bool:
    return activation is not None and activation.get("kind", "linear") in NONLINEARITIES


def _one_cell(ctx: Context, layer, x: Tensor, where: str, op: str) -> Tensor:
    """A one-direction recurrent layer whose cell has a kernel, a recurrent kernel and one
    bias, as the IR ``op`` (gru, simple_rnn) with its weights transposed to (out, in)."""
    cell = layer.cell
    weights = {
        "W_ih": np.ascontiguousarray(_numpy(cell.kernel).T),
        "W_hh": np.ascontiguousarray(_numpy(cell.recurrent_kernel).T),
    }
    if layer.use_bias:
        weights["bias"] = _numpy(cell.bias)
    attrs = _recurrent_attrs(layer, where)
    name = ctx.add(
        op,
        layer.name,
        [x],
        attrs=attrs,
        weights=weights,
        trainable=ctx.trains(layer),
        source=_source(layer),
    )
    return _output(name, x, attrs["hidden"], attrs["return_sequences"])


@converts("SimpleRNN")
def _simple_rnn(ctx: Context, layer, call: LayerCall) -> Tensor:
    """A SimpleRNN from zero state (frozen), ``y_t = f(W x_t + U y_{t-1} + b)``."""
    where = f"layer {layer.name!r}"
    x = _check_recurrent(ctx, layer, call, where)
    _forward_only(layer, where)
    return _one_cell(ctx, layer, x, where, "simple_rnn")


@converts("Bidirectional")
def _bidirectional(ctx: Context, layer, call: LayerCall) -> Tensor:
    """A Bidirectional LSTM (merge_mode='concat') as a ``biDirectionalLSTM`` (frozen), which
    pairs each step's forward output with the backward output that has read down to that
    step, as Keras does; a Bidirectional GRU (reset_after=True) as one unrolled
    ``gru_reset_after`` node with both directions."""
    where = f"layer {layer.name!r}"
    forward, backward = layer.forward_layer, layer.backward_layer
    kinds = {type(forward).__name__, type(backward).__name__}
    keras_own = type(forward).__module__.startswith("keras.")
    gru = kinds == {"GRU"} and keras_own and forward.reset_after and backward.reset_after
    if (kinds != {"LSTM"} or not keras_own) and not gru:
        raise UnsupportedError(
            f"{where}: Bidirectional({'/'.join(sorted(kinds))}) is not supported: Core ML's "
            "only bidirectional recurrent layer is biDirectionalLSTM (a reversed gru would "
            "need reverseInput, whose output order NeuralNetwork.proto does not say); use "
            "Bidirectional(LSTM(...)) or Bidirectional(GRU(...)) with reset_after=True"
        )
    if layer.merge_mode != "concat":
        raise UnsupportedError(
            f"{where}: merge_mode={layer.merge_mode!r} is not supported; Core ML's "
            "biDirectionalLSTM concatenates the two directions (merge_mode='concat')"
        )
    if forward.go_backwards or not backward.go_backwards:
        raise UnsupportedError(
            f"{where}: the forward layer must read forwards and the backward layer backwards"
        )
    x = _check_recurrent(ctx, forward, call, where)
    _check_recurrent(ctx, backward, LayerCall([x], {}, call.out_shape), where)
    if gru:  # both directions unrolled, the backward one over the reversed steps
        attrs, weights = _unrolled_gru(forward, x, where)
        back_attrs, back_weights = _unrolled_gru(backward, x, where, "_back")
        if back_attrs != attrs:
            raise UnsupportedError(
                f"{where}: the backward GRU differs from the forward one (units, activations, "
                "use_bias or return_sequences); export the same configuration both ways"
            )
        attrs["bidirectional"] = True
        return _emit_unrolled(ctx, layer, x, where, attrs, {**weights, **back_weights})
    attrs = _recurrent_attrs(forward, where)
    if _recurrent_attrs(backward, where) != attrs:
        raise UnsupportedError(
            f"{where}: the backward LSTM differs from the forward one (units, activations "
            "or return_sequences); Core ML's biDirectionalLSTM runs the same configuration"
        )
    if forward.use_bias != backward.use_bias:
        raise UnsupportedError(f"{where}: use_bias must be the same in both directions")
    name = ctx.add(
        "bilstm",
        layer.name,
        [x],
        attrs=attrs,
        weights={**_lstm_weights(forward), **_lstm_weights(backward, "_back")},
        trainable=ctx.trains(layer),
        source=_source(layer),
    )
    return _output(name, x, 2 * attrs["hidden"], attrs["return_sequences"])
