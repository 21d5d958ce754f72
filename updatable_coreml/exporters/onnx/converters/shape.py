"""Shape ops that keep the batch axis, transposes that cancel or fold into an input, concat,
pad, and ops that compute nothing on device."""

from __future__ import annotations

import dataclasses
from typing import Any

from ....errors import UnsupportedError
from ...common.rules import (
    reshape_kind,
)
from ..context import (
    NCHW_TO_NHWC,
    NHWC_TO_NCHW,
    OnnxTranslation,
    PendingTranspose,
    _axis,
    _unused,
    converts,
    number,
    where,
)


def _reshape_to(state: OnnxTranslation, node: Any, source: str) -> None:
    """Any shape change that keeps the batch axis: none, a flatten, or a reshape."""
    after = state.full_shape(node.output[0], node)
    op, attrs = reshape_kind(_source_shape(state, node, source), after, where(node))
    pending = state.transposes.get(source)
    if pending is not None and pending.perm == NCHW_TO_NHWC and op == "flatten":
        state.emit(node, "flatten", [state.tensor(pending.source, node)], attrs={"order": "hwc"})
    elif op == "alias":
        state.alias(node, state.tensor(source, node))
    else:
        state.emit(node, op, [state.tensor(source, node)], attrs=attrs)


def _source_shape(state: OnnxTranslation, node: Any, source: str) -> tuple[int, ...]:
    pending = state.transposes.get(source)
    if pending is None:
        return state.full_shape(source, node)
    shape = state.full_shape(pending.source, node)
    return tuple(shape[i] for i in pending.perm)


@converts("Reshape", "Squeeze", "Unsqueeze")
def _reshape(state: OnnxTranslation, node: Any, a: dict) -> None:
    _reshape_to(state, node, node.input[0])


@converts("Flatten")
def _flatten(state: OnnxTranslation, node: Any, a: dict) -> None:
    rank = len(_source_shape(state, node, node.input[0]))
    if _axis(int(a.get("axis", 1)), rank) != 1:
        raise UnsupportedError(f"{where(node)}: Flatten must keep axis 0 as the batch (axis=1)")
    _reshape_to(state, node, node.input[0])


@converts("Transpose")
def _transpose(state: OnnxTranslation, node: Any, a: dict) -> None:
    source = node.input[0]
    rank = len(_source_shape(state, node, source))
    perm = tuple(int(p) for p in a.get("perm", range(rank - 1, -1, -1)))
    pending = state.transposes.get(source)
    if pending is not None:  # transpose of a transpose: one permutation of the original
        source, perm = pending.source, tuple(pending.perm[i] for i in perm)
    if perm[0] != 0:
        raise UnsupportedError(f"{where(node)} moves the batch axis (perm {list(perm)})")
    if perm == tuple(range(rank)):
        state.alias(node, state.tensor(source, node))
    elif _keeps_order(state.full_shape(source, node), perm):
        _reshape_to(state, node, source)
    elif perm == NHWC_TO_NCHW and _is_sole_input_reader(state, source):
        _channel_first_input(state, node, source)
    else:
        state.transposes[node.output[0]] = PendingTranspose(source, perm, node.name)


def _keeps_order(shape: tuple[int, ...], perm: tuple[int, ...]) -> bool:
    """Whether the permutation only moves size-1 axes (the data order is unchanged)."""
    moved = [axis for axis in perm if shape[axis] != 1]
    return moved == sorted(moved)


def _is_sole_input_reader(state: OnnxTranslation, source: str) -> bool:
    return any(spec.name == source for spec in state.graph.inputs) and state.uses.get(source) == 1


def _channel_first_input(state: OnnxTranslation, node: Any, source: str) -> None:
    """NHWC input -> NCHW: declare the Core ML input channel-first instead of transposing."""
    inputs = state.graph.inputs
    index = next(i for i, spec in enumerate(inputs) if spec.name == source)
    height, width, channels = inputs[index].shape
    inputs[index] = dataclasses.replace(inputs[index], shape=(channels, height, width))
    state.alias(node, source)
    state.graph.notes.append(
        f"input {source!r} is channel-first ({channels}, {height}, {width}) in "
        f"Core ML: the ONNX model's NHWC -> NCHW transpose {node.name!r} was "
        "folded into it"
    )


@converts("Concat")
def _concat(state: OnnxTranslation, node: Any, a: dict) -> None:
    rank = len(state.full_shape(node.output[0], node))
    if _axis(int(a["axis"]), rank) != 1:
        raise UnsupportedError(
            f"{where(node)} concatenates along axis {a['axis']}; "
            "Core ML's concat works on the channel axis (1) only"
        )
    if len(node.input) == 1:  # Core ML refuses a concat layer with fewer than 2 inputs
        state.alias(node, state.tensor(node.input[0], node))
        return
    state.emit(node, "concat", [state.tensor(name, node) for name in node.input])


@converts("Pad")
def _pad(state: OnnxTranslation, node: Any, a: dict) -> None:
    mode = a.get("mode", "constant")
    if mode != "constant":
        raise UnsupportedError(f"{where(node)}: {mode!r} padding is not supported, only constant")
    rank = len(state.full_shape(node.input[0], node))
    pads = [int(p) for p in state.required_constant(node, 1)]
    value = state.constant(node, 2)
    axes = state.constant(node, 3)
    begins, ends = [0] * rank, [0] * rank
    for i, axis in enumerate(range(rank) if axes is None else (_axis(int(v), rank) for v in axes)):
        begins[axis], ends[axis] = pads[i], pads[i + len(pads) // 2]
    if rank != 4 or begins[:2] != [0, 0] or ends[:2] != [0, 0] or min(begins + ends) < 0:
        raise UnsupportedError(
            f"{where(node)}: only non-negative padding of height and width of "
            f"(N, C, H, W) is supported, got pads {pads}"
        )
    state.emit(
        node,
        "pad",
        [state.tensor(node.input[0], node)],
        attrs={
            "pads": (begins[2], ends[2], begins[3], ends[3]),
            "value": 0.0 if value is None else number(value),
        },
    )


@converts("Identity")
def _identity(state: OnnxTranslation, node: Any, a: dict) -> None:
    state.alias(node, state.tensor(node.input[0], node))


@converts("Dropout")
def _dropout(state: OnnxTranslation, node: Any, a: dict) -> None:
    training = state.constant(node, 2)
    if training is not None and number(training):
        raise UnsupportedError(f"{where(node)} is in training mode; export the model in eval mode")
    _unused(state, node, "mask")
    ratio = state.constant(node, 1)
    state.emit(
        node,
        "dropout",
        [state.tensor(node.input[0], node)],
        attrs={"rate": 0.5 if ratio is None else number(ratio)},
    )
