"""Sequences: ``Embedding``, ``EmbeddingBag(mode="mean")``, ``LSTM``, ``GRU``, ``RNN``, taking
one step of a sequence, and transposes between sequences and 1-D maps.

A torch ``(N, L, C)`` sequence is the IR's ``(Seq, C)``, which Core ML carries on the Seq axis
of its rank-5 blobs. A time-major ``(L, N, C)`` sequence (``batch_first=False``, reached by
``transpose(0, 1)``) is the same IR tensor; ``Translation.layouts`` remembers which axis is
torch's batch so that ``select`` and the next recurrent layer read it right. The model input
must stay batch-first: the batch is axis 0 of every exported input.

Recurrent layers start from zero state, as a Core ML prediction does: an initial state other
than torch's default zeros is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import UnsupportedError
from ....passes import infer_shapes
from ..context import Translation, _op_name, converter, full_shape, where
from .tokens import select_token

#: torch's recurrent ops (aten names) whose zero initial states export writes with ``zeros``.
RECURRENT = ("lstm", "gru", "rnn_tanh", "rnn_relu")
TIME_MAJOR = "time_major"
FINAL_H = "final_h"
#: ``LAST_STEP + str(axis)``: a recurrent output of which only the last step (on torch axis
#: ``axis``) is read, so the layer returns just that step.
LAST_STEP = "last_step:"
#: Core ML's LSTM activations that are torch's fixed ones (the IR's activation attrs).
SIGMOID, TANH = {"kind": "sigmoid"}, {"kind": "tanh"}


def _users_are(fx: Any, *ops: str) -> bool:
    return bool(fx.users) and all(
        user.op == "call_function" and _op_name(user) in ops for user in fx.users
    )


def _ir_shape(state: Translation, name: str) -> tuple[int, ...]:
    return tuple(infer_shapes(state.graph)[name])


@converter("zeros")
def _zeros(state: Translation, fx: Any, a: dict) -> None:
    """Zeros that only serve as a recurrent layer's initial state compute nothing: Core ML's
    recurrent layers start from zero state. Any other use is a constant Core ML cannot take."""
    if not _users_are(fx, *RECURRENT):
        raise UnsupportedError(
            f"a tensor of zeros in {where(fx)} is used as a value; only a recurrent "
            "layer's initial state may be zeros"
        )


def token_input(state: Translation, arg: Any, fx: Any, what: str) -> str:
    """The model input of token ids ``(N, L)`` an embedding reads, declared ``(L, 1)``: a
    sequence of one-value steps, as Core ML's classic ``embedding`` wants them."""
    name = state.tensor(arg)
    spec = next((s for s in state.graph.inputs if s.name == name), None)
    if spec is None or len(spec.shape) not in (1, 2) or spec.shape[1:] not in ((), (1,)):
        raise UnsupportedError(
            f"{what} in {where(fx)} must read a model input of token ids shaped (N, L), "
            f"not a computed tensor or a {len(full_shape(arg))}-D input"
        )
    if len(spec.shape) == 1 and any(name in node.inputs for node in state.graph.nodes):
        raise UnsupportedError(
            f"{what} in {where(fx)}: the token ids {name!r} are also read by another layer"
        )
    spec.shape = (spec.shape[0], 1)
    return name


@converter("embedding")
def _embedding(state: Translation, fx: Any, a: dict) -> None:
    """A lookup table as Core ML's classic ``embedding`` (frozen: it is not a layer type Core
    ML updates). ``padding_idx`` only changes training in torch, so the lookup is exact."""
    ids = token_input(state, a["indices"], fx, "Embedding")
    state.emit(fx, "embedding", [ids], weights={"weight": state.weight(a["weight"])})


@converter("arange")
def _arange(state: Translation, fx: Any, a: dict) -> None:
    """The offsets ``nn.EmbeddingBag`` makes for a 2-D input (one bag per row) compute
    nothing; its converter checks them. Any other ``arange`` is a constant Core ML lacks."""
    if not _users_are(fx, "embedding_bag"):
        raise UnsupportedError(f"torch.arange in {where(fx)} is not supported")


def bag_indices(fx: Any) -> bool:
    """A reshape only ``nn.EmbeddingBag`` reads: the 2-D ids flattened for its kernel. It
    computes nothing in Core ML (the bag converter reads the ids through it)."""
    return _users_are(fx, "embedding_bag")


#: aten ``embedding_bag``'s ``mode``: 0 sum, 1 mean, 2 max.
_BAG_MEAN = 1


@converter("embedding_bag")
def _embedding_bag(state: Translation, fx: Any, a: dict) -> None:
    """``nn.EmbeddingBag(mode="mean")`` over a 2-D input (every bag one row of L ids): an
    ``embedding`` of the L ids, its steps moved onto the width axis, and a global average
    pool over them, all classic layers. Variable-length bags (1-D ids with offsets),
    per-sample weights, ``padding_idx`` (its ids leave the mean) and other modes are
    refused: Core ML has no layer that skips ids or sums over the sequence axis."""
    reshape, offsets = a["indices"], a["offsets"]
    problems = []
    if int(a["mode"]) != _BAG_MEAN:
        problems.append("mode must be 'mean'")
    if a["per_sample_weights"] is not None:
        problems.append("per_sample_weights are not supported")
    if a.get("padding_idx") not in (None, -1):
        problems.append("padding_idx changes which ids count; build it without")
    if a["include_last_offset"]:
        problems.append("include_last_offset is not supported")
    is_2d = (
        _op_name(reshape) in ("reshape", "view")
        and len(full_shape(reshape.args[0])) == 2
        and _op_name(offsets) == "arange"
        and tuple(offsets.args) == (0, reshape.meta["val"].numel(), full_shape(reshape.args[0])[1])
    )
    if not is_2d:
        problems.append("the ids must be one 2-D (N, L) tensor (fixed-length bags), not offsets")
    if problems:
        raise UnsupportedError(f"EmbeddingBag in {where(fx)}: " + "; ".join(problems))
    ids = token_input(state, reshape.args[0], fx, "EmbeddingBag")
    looked_up = state.emit(
        fx, "embedding", [ids], weights={"weight": state.weight(a["weight"])}, suffix=".lookup"
    )
    wide = state.emit(fx, "sequence_to_width", looked_up.outputs, suffix=".steps")
    state.emit(
        fx,
        "pool2d",
        wide.outputs,
        attrs={
            "kind": "avg",
            "kernel": (1, full_shape(reshape.args[0])[1]),
            "strides": (1, 1),
            "padding": "valid",
            "global": True,
            "count_include_pad": False,
        },
    )


# -- LSTM ----------------------------------------------------------------------------------


def _sequence_input(state: Translation, arg: Any, fx: Any, batch_first: bool) -> str:
    """The IR ``(Seq, C)`` tensor a recurrent layer reads, checked against torch's layout."""
    name = state.tensor(arg)
    time_major = state.layouts.get(arg.name) == TIME_MAJOR
    if batch_first and time_major:
        raise UnsupportedError(
            f"recurrent layer in {where(fx)} has batch_first=True but reads a time-major "
            "(L, N, C) tensor; transpose it back or set batch_first=False"
        )
    if not batch_first and not time_major:
        raise UnsupportedError(
            f"recurrent layer in {where(fx)} has batch_first=False, so it reads (L, N, C), "
            "but its input has the batch first: exported inputs keep the batch on axis 0. "
            "Use batch_first=True, or transpose(0, 1) a batch-first tensor inside forward()"
        )
    shape = full_shape(arg)
    steps, features = (shape[1], shape[2]) if batch_first else (shape[0], shape[2])
    if _ir_shape(state, name) != (steps, features):
        raise UnsupportedError(
            f"recurrent layer in {where(fx)} reads a tensor the exporter holds as "
            f"{_ir_shape(state, name)}, not {steps} steps of {features} features"
        )
    return name


def _zero_state(fx: Any, hx: Any) -> None:
    states = hx if isinstance(hx, (list, tuple)) else [hx]
    for value in states:
        if value is not None and _op_name(value) != "zeros":
            raise UnsupportedError(
                f"recurrent layer in {where(fx)} starts from a given state; a Core ML "
                "prediction starts from zero state: call it without (h0, c0)"
            )


def _needs_sequence(fx: Any, batch_first: bool) -> bool:
    """Whether anything reads more of the output sequence than its last step."""
    outputs = [user for user in fx.users if user.args[1] == 0]
    step_axis = 1 if batch_first else 0
    return any(
        not (
            user.op == "call_function"
            and _op_name(user) == "select"
            and int(user.args[1]) == step_axis
            and int(user.args[2]) in (-1, full_shape(user.args[0])[step_axis] - 1)
        )
        for out in outputs
        for user in out.users
    )


def _recurrent_weights(
    state: Translation, params: list, layer: int, directions: int, has_biases: bool
) -> tuple[dict[str, tuple[Any, str]], dict[str, str]]:
    """IR weights of one layer (``_back`` for the reverse direction) and the parameter
    names behind them; torch's two biases add up to Core ML's one."""
    per_direction = 4 if has_biases else 2
    weights: dict[str, tuple[Any, str]] = {}
    names: dict[str, str] = {}
    for direction, suffix in enumerate(("", "_back")[:directions]):
        start = (layer * directions + direction) * per_direction
        chunk = [state.weight(p) for p in params[start : start + per_direction]]
        weights["W_ih" + suffix], weights["W_hh" + suffix] = chunk[0], chunk[1]
        if has_biases:
            weights["bias" + suffix] = (np.asarray(chunk[2][0] + chunk[3][0], np.float32), "")
        for role, (_, fqn) in zip(("W_ih", "W_hh", "b_ih", "b_hh"), chunk):
            names[role + suffix] = fqn
    return weights, names


@converter("lstm")
def _lstm(state: Translation, fx: Any, a: dict) -> None:
    """``nn.LSTM`` (1 or more layers, batch_first either way, bidirectional or not): one Core
    ML ``uniDirectionalLSTM`` (``biDirectionalLSTM``) per layer. torch's gate order i, f, g, o
    is the IR's and Core ML's (inputGate, forgetGate, blockInput, outputGate), its output
    per step [forward, backward] the bidirectional layer's. When only the last step is read
    (``out[:, -1]``, ``h_n[-1]``) of a unidirectional LSTM, its last layer returns only that
    step, as Core ML's LSTM can; a bidirectional one always returns the sequence (its
    backward output at the last step has read one step, not the whole sequence).

    Only a unidirectional LSTM without biases can train: Core ML updates a
    uniDirectionalLSTM (``coreml_rules``, from coremltools 5.0b1) but has one bias where torch
    trains two."""
    batch_first, bidirectional = bool(a["batch_first"]), bool(a["bidirectional"])
    x = _sequence_input(state, a["input"], fx, batch_first)
    _zero_state(fx, a["hx"])
    layers, has_biases = int(a["num_layers"]), bool(a["has_biases"])
    params = list(a["params"])
    directions = 2 if bidirectional else 1
    expected = layers * directions * (4 if has_biases else 2)
    if len(params) != expected:
        raise UnsupportedError(
            f"LSTM in {where(fx)} has {len(params)} weight tensors, expected {expected} "
            "(proj_size is not supported)"
        )
    sequence = bidirectional or _needs_sequence(fx, batch_first)
    node = None
    for layer in range(layers):
        weights, names = _recurrent_weights(state, params, layer, directions, has_biases)
        node = state.emit(
            fx,
            "bilstm" if bidirectional else "lstm",
            [x],
            attrs={
                "hidden": int(weights["W_hh"][0].shape[1]),
                "return_sequences": sequence or layer < layers - 1,
                "activation": TANH,
                "recurrent_activation": SIGMOID,
            },
            weights=weights,
            suffix="" if layers == 1 else f".l{layer}",
        )
        state.node_params[node.name] = names
        if has_biases:
            state.frozen_only[node.name] = (
                "torch trains an LSTM's two biases (b_ih, b_hh) separately while Core ML's "
                "LSTM has one, so updates would differ; build it with bias=False, or freeze "
                "it (requires_grad_(False)) and train the layers after it"
            )
        x = node.outputs[0]
    assert node is not None
    _map_results(state, fx, node.outputs[0], sequence, batch_first, bidirectional)


def _reorder_gru(array: np.ndarray) -> np.ndarray:
    """torch stacks a GRU's gates r, z, n; the IR z, r, n."""
    reset, update, new = np.split(array, 3)
    return np.concatenate([update, reset, new])


def _stacked(state: Translation, fx: Any, a: dict, what: str, emit_layer, both: bool) -> None:
    """A torch recurrent op of one or more layers (GRU, RNN): checks, then per layer
    ``emit_layer(x, weights, suffix, return_sequences, steps)``, where ``weights`` are
    (array, name) pairs of W_ih, W_hh[, b_ih, b_hh] per direction (``_back`` for the
    reverse one); ``both``: whether the op can run bidirectionally."""
    bidirectional = bool(a["bidirectional"])
    if bidirectional and not both:
        raise UnsupportedError(
            f"bidirectional {what} in {where(fx)}: Core ML has no bidirectional layer for "
            "it; use a unidirectional one, a bidirectional GRU or a bidirectional LSTM"
        )
    batch_first = bool(a["batch_first"])
    x = _sequence_input(state, a["input"], fx, batch_first)
    _zero_state(fx, a["hx"])
    layers, has_biases = int(a["num_layers"]), bool(a["has_biases"])
    params = list(a["params"])
    per_direction = 4 if has_biases else 2
    directions = 2 if bidirectional else 1
    if len(params) != layers * directions * per_direction:
        raise UnsupportedError(
            f"{what} in {where(fx)} has {len(params)} weight tensors, expected "
            f"{layers * directions * per_direction}"
        )
    sequence = bidirectional or _needs_sequence(fx, batch_first)
    steps = full_shape(a["input"])[1 if batch_first else 0]
    roles = ("W_ih", "W_hh", "b_ih", "b_hh")
    for layer in range(layers):
        weights: dict[str, tuple[Any, str]] = {}
        for direction, tail in enumerate(("", "_back")[:directions]):
            start = (layer * directions + direction) * per_direction
            chunk = [state.weight(p) for p in params[start : start + per_direction]]
            weights.update({role + tail: pair for role, pair in zip(roles, chunk)})
        suffix = "" if layers == 1 else f".l{layer}"
        x = emit_layer(x, weights, suffix, sequence or layer < layers - 1, steps).outputs[0]
    _map_results(state, fx, x, sequence, batch_first, bidirectional)


@converter("gru")
def _gru(state: Translation, fx: Any, a: dict) -> None:
    """``nn.GRU`` (1 or more layers, batch_first either way, bidirectional or not): one
    ``gru_reset_after`` per layer (``ops/recurrent.py``, shared with Keras' default GRU):
    torch resets after the recurrent matrix, which no Core ML ``gru`` layer computes, so the
    GRU is unrolled over its steps; a bidirectional one per step [forward, backward], as
    torch orders its output."""

    def emit(x: str, weights: dict, suffix: str, sequence: bool, steps: int) -> Any:
        attrs = {
            "steps": steps,
            "hidden": int(weights["W_hh"][0].shape[1]),
            "return_sequences": sequence,
            "activation": TANH,
            "recurrent_activation": SIGMOID,
            "bias": "b_ih" in weights,
            "bidirectional": "W_ih_back" in weights,
        }
        return state.emit(
            fx,
            "gru_reset_after",
            [x],
            attrs=attrs,
            weights={role: (_reorder_gru(array), fqn) for role, (array, fqn) in weights.items()},
            suffix=suffix,
        )

    _stacked(state, fx, a, "GRU", emit, both=True)


@converter("rnn_tanh")
def _rnn_tanh(state: Translation, fx: Any, a: dict) -> None:
    """``nn.RNN`` (tanh): kseq's ``simple_rnn`` op, a Core ML ``gru`` with pinned gates; its
    clipping of pre-activations to [-50, 50] leaves tanh's result unchanged."""

    def emit(x: str, params: dict, suffix: str, sequence: bool, steps: int) -> Any:
        weights = {"W_ih": params["W_ih"], "W_hh": params["W_hh"]}
        if "b_ih" in params:
            weights["bias"] = (np.asarray(params["b_ih"][0] + params["b_hh"][0], np.float32), "")
        node = state.emit(
            fx,
            "simple_rnn",
            [x],
            attrs={
                "hidden": int(params["W_hh"][0].shape[1]),
                "return_sequences": sequence,
                "activation": TANH,
            },
            weights=weights,
            suffix=suffix,
        )
        state.node_params[node.name] = {role: fqn for role, (_, fqn) in params.items()}
        return node

    _stacked(state, fx, a, "RNN", emit, both=False)


@converter("rnn_relu")
def _rnn_relu(state: Translation, fx: Any, a: dict) -> None:
    raise UnsupportedError(
        f"RNN with nonlinearity='relu' in {where(fx)}: Core ML's recurrent layers clip "
        "pre-activations to [-50, 50] (NeuralNetwork.proto), which changes an unbounded "
        "ReLU's result; use nonlinearity='tanh'"
    )


def _map_results(
    state: Translation,
    fx: Any,
    last: str,
    sequence: bool,
    batch_first: bool,
    bidirectional: bool,
) -> None:
    """Map the ``getitem`` results of a recurrent op: the output (a sequence, or the last
    step when only that is read) and ``h_n``, of which only the last layer's entry of a
    unidirectional layer is available (the output's last step); ``c_n`` cannot be read."""
    for user in list(fx.users):
        index = int(user.args[1])
        if index == 0:
            state.tensors[user.name] = last
            if not sequence:
                state.layouts[user.name] = f"{LAST_STEP}{1 if batch_first else 0}"
            elif not batch_first:
                state.layouts[user.name] = TIME_MAJOR
        elif index == 1 and user.users:
            if bidirectional or sequence or not _users_are(user, "select"):
                raise UnsupportedError(
                    f"h_n of the recurrent layer in {where(fx)} is read in a way the export "
                    "cannot carry; read the output's steps (out[:, -1]), or of a "
                    "unidirectional layer only h_n[-1]"
                )
            state.tensors[user.name] = last
            state.layouts[user.name] = FINAL_H
        elif user.users:
            raise UnsupportedError(
                f"the cell state c_n of the LSTM in {where(fx)} is read; Core ML's LSTM "
                "output carries only h: read the output or h_n[-1]"
            )


@converter("select")
def _select(state: Translation, fx: Any, a: dict) -> None:
    """One step of a recurrent layer's output (``out[:, t]``, time-major ``out[t]``): the
    steps moved onto the width axis, cropped to step t, flattened (classic layers). When
    the recurrent converter made the layer return only its last step (``out[:, -1]``,
    ``h_n[-1]``), that step is the layer's output. One token of a ViT's tokens (a view) is
    ``tokens.select_token``. Any other selection is refused."""
    source, dim, index = a["self"], int(a["dim"]), int(a["index"])
    if source.name in state.views:
        select_token(state, fx, source, dim, index)
        return
    layout = state.layouts.get(source.name, "")
    steps = full_shape(source)[dim]
    index %= steps
    if index == steps - 1 and ((layout == FINAL_H and dim == 0) or (layout == f"{LAST_STEP}{dim}")):
        state.alias(fx, source)
        return
    name = state.tensor(source)
    step_axis = 0 if layout == TIME_MAJOR else 1
    if len(full_shape(source)) == 3 and len(_ir_shape(state, name)) == 2 and dim == step_axis:
        wide = state.emit(fx, "sequence_to_width", [name], suffix=".steps")
        crop = state.emit(
            fx,
            "crop",
            wide.outputs,
            attrs={"crops": (0, 0, index, steps - 1 - index)},
            suffix=".step",
        )
        state.emit(fx, "flatten", crop.outputs)
        return
    raise UnsupportedError(
        f"select (index {index} of axis {dim}) in {where(fx)} is not supported: only one "
        "step of a sequence (out[:, t]), or h_n[-1] of a unidirectional LSTM, can be taken"
    )


def transpose_activation(state: Translation, fx: Any, a: dict) -> None:
    """``transpose(0, 1)`` (``permute(1, 0, 2)``) of a rank-3 sequence switches between
    batch-first (N, L, C) and time-major (L, N, C): the same IR tensor, its layout noted.
    Other transposes of activations are refused (Core ML keeps channel-first layouts)."""
    source = fx.args[0]
    rank = len(full_shape(source))
    op = _op_name(fx)
    if op == "transpose":
        pair = sorted((int(a["dim0"]) % rank, int(a["dim1"]) % rank))
        axes = list(range(rank))
        axes[pair[0]], axes[pair[1]] = pair[1], pair[0]
    elif op == "permute":
        axes = [int(d) % rank for d in a["dims"]]
    else:
        axes = list(range(rank))[::-1]
    ir_rank = len(_ir_shape(state, state.tensor(source))) if rank == 3 else 0
    time_major = state.layouts.get(source.name) == TIME_MAJOR
    if ir_rank == 2 and axes == [1, 0, 2]:
        state.alias(fx, source)
        if not time_major:
            state.layouts[fx.name] = TIME_MAJOR
        return
    if axes == [0, 2, 1] and not time_major and ir_rank in (2, 3):
        # (N, L, C) <-> (N, C, L): a sequence's steps onto the width axis of a 1-D map, or back
        op_name = "sequence_to_width" if ir_rank == 2 else "width_to_sequence"
        state.emit(fx, op_name, [state.tensor(source)])
        return
    raise UnsupportedError(
        f"{op} of an activation in {where(fx)}: Core ML layers keep the channel-first "
        "layout; only transpose(0, 1) of a sequence (batch-first <-> time-major) and "
        "transpose(1, 2) between a sequence (N, L, C) and a 1-D map (N, C, L) are supported"
    )
