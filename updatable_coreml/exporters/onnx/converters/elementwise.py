"""Softmax, log-softmax, and elementwise arithmetic (with a constant: affine layers)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ....errors import UnsupportedError
from ...common.rules import (
    LOG_SOFTMAX_ONLY_AS_OUTPUT,
)
from ..context import (
    Converter,
    OnnxTranslation,
    _axis,
    converts,
    node_attrs,
    where,
)
from .weights import _fold_bias


def _channel_axis(state: OnnxTranslation, node: Any, what: str) -> None:
    rank = len(state.full_shape(node.input[0], node))
    axis = _axis(int(node_attrs(node).get("axis", -1)), rank)
    if axis != 1 or rank not in (2, 4):
        raise UnsupportedError(
            f"{where(node)}: {what} over axis {axis} of a rank-{rank} tensor; "
            "Core ML's layer works on the channel axis (1) of (N, C) or (N, C, H, W)"
        )


@converts("Softmax")
def _softmax(state: OnnxTranslation, node: Any, a: dict) -> None:
    _channel_axis(state, node, "softmax")
    state.emit(node, "softmax", [state.tensor(node.input[0], node)])


@converts("LogSoftmax")
def _log_softmax(state: OnnxTranslation, node: Any, a: dict) -> None:
    """Only as the model output, written as softmax: softmax(log_softmax(x)) == softmax(x), so
    cross-entropy on the probabilities trains like NLL on the log-probabilities."""
    _channel_axis(state, node, "log-softmax")
    if state.uses.get(node.output[0]) != 1 or node.output[0] not in state.model_outputs:
        raise UnsupportedError(f"{where(node)} feeds other nodes; " + LOG_SOFTMAX_ONLY_AS_OUTPUT)
    state.emit(node, "softmax", [state.tensor(node.input[0], node)])
    state.graph.notes.append(
        f"LogSoftmax {node.name!r} exported as softmax: the model outputs "
        "probabilities, not log-probabilities"
    )


# -- elementwise ---------------------------------------------------------------------------


def _per_channel(
    state: OnnxTranslation, node: Any, x: str, constant: np.ndarray
) -> Optional[np.ndarray]:
    """``constant`` as a (C,) vector when it broadcasts over ``x`` one value per channel."""
    shape = state.full_shape(x, node)
    if constant.ndim > len(shape):
        return None
    full: np.ndarray = constant.reshape((1,) * (len(shape) - constant.ndim) + constant.shape)
    if full.shape[1] not in (1, shape[1]) or any(
        d != 1 for i, d in enumerate(full.shape) if i != 1
    ):
        return None
    return np.broadcast_to(full.reshape(-1), (shape[1],))


def _elementwise(op: str) -> Converter:
    """Add/Sub/Mul/Div: of two same-shaped activations (Add/Mul), or of an activation and a
    constant scalar (a linear activation) or per-channel constant (a scale layer)."""

    def convert(state: OnnxTranslation, node: Any, a: dict) -> None:
        left, right = node.input
        if left not in state.constants and right not in state.constants:
            _binary(state, node, {"Add": "add", "Mul": "mul"}.get(op))
            return
        swapped = left in state.constants
        if swapped and op in ("Sub", "Div"):
            raise UnsupportedError(
                f"{where(node)}: only an activation {op.lower()} a constant is "
                f"supported, not a constant {op.lower()} an activation"
            )
        x, constant = (right, state.constants[left]) if swapped else (left, state.constants[right])
        constant = constant.astype(np.float64)
        if op == "Add" and _fold_bias(state, node, x, constant):
            return
        scale, bias = {
            "Add": (1.0, constant),
            "Sub": (1.0, -constant),
            "Mul": (constant, 0.0),
            "Div": (1.0 / constant, 0.0),
        }[op]
        _affine(state, node, x, scale, bias)

    return convert


def _affine(state: OnnxTranslation, node: Any, x: str, scale: Any, bias: Any) -> None:
    """``x * scale + bias`` with scalar or per-channel constants."""
    scale, bias = np.asarray(scale, np.float64), np.asarray(bias, np.float64)
    if scale.size == 1 and bias.size == 1:
        state.emit(
            node,
            "activation",
            [state.tensor(x, node)],
            attrs={
                "kind": "linear",
                "alpha": float(scale.reshape(-1)[0]),
                "beta": float(bias.reshape(-1)[0]),
            },
        )
        return
    channel_scale = _per_channel(state, node, x, scale)
    channel_bias = _per_channel(state, node, x, bias)
    if channel_scale is None or channel_bias is None:
        raise UnsupportedError(
            f"{where(node)}: the constant of shape "
            f"{list((scale if scale.size > 1 else bias).shape)} does not "
            "broadcast per channel; only scalars and per-channel constants are supported"
        )
    state.emit(
        node,
        "scale",
        [state.tensor(x, node)],
        weights={"scale": channel_scale, "bias": channel_bias},
    )


def _binary(state: OnnxTranslation, node: Any, op: Optional[str]) -> None:
    if op is None:
        raise UnsupportedError(
            f"{where(node)} of two activations is not supported (only Add and Mul)"
        )
    shapes = [state.full_shape(name, node) for name in node.input]
    if shapes[0] != shapes[1]:
        raise UnsupportedError(
            f"{where(node)} of tensors shaped {list(shapes[0])} and "
            f"{list(shapes[1])}: broadcasting is not supported"
        )
    state.emit(node, op, [state.tensor(name, node) for name in node.input])


for _op in ("Add", "Sub", "Mul", "Div"):
    converts(_op)(_elementwise(_op))
