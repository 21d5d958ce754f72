"""Elementwise ops: add (with a number: an affine activation; with a constant tensor: an
``add_constant``), mul, softmax, log_softmax."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .... import ops
from ....errors import UnsupportedError
from ...common.rules import LOG_SOFTMAX_ONLY_AS_OUTPUT
from .. import layout
from ..context import Translation, channel_axis, converter, full_shape, where
from .activations import _softsign_div
from .tokens import add_constant


def _scalar(state: Translation, value: Any) -> Optional[float]:
    """``value`` as a Python float if it is a number or a one-element constant, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if getattr(value, "name", None) in state.state_names:
        array, _ = state.weight(value)
        return float(array.reshape(-1)[0]) if array.size == 1 else None
    return None


def _binary(state: Translation, fx: Any, op: str, other: Any) -> None:
    left = fx.args[0]
    views = [state.views.get(getattr(x, "name", "")) for x in (left, other)]
    first, second = views
    if first is not None and second is not None and first.base == second.base:
        if np.array_equal(first.index, second.index):
            # both seen the same way (a ViT's residual connections): the op on the tensors
            # behind them, seen that way too
            state.emit(fx, op, [first.tensor, second.tensor])
            layout.emitted_as(state, fx, first)
            return
    shapes = full_shape(left), full_shape(other)
    if (
        shapes[0] != shapes[1]
        and len(shapes[0]) == len(shapes[1]) == 4
        and (shapes[0][0] == shapes[1][0])
    ):
        # a per-example broadcast Core ML's classic layers do (squeeze-excitation's (C, 1, 1)
        # scale); the op's shape rule (ops/elementwise) refuses the others by name
        node = state.emit(fx, op, [state.tensor(left), state.tensor(other)])
        ops.output_shape(node, [tuple(s[1:]) for s in shapes])
        return
    if full_shape(left) != full_shape(other):
        raise UnsupportedError(
            f"{op} of tensors shaped {list(full_shape(left))} and "
            f"{list(full_shape(other))} in {where(fx)}: broadcasting is not "
            "supported; give both operands the same shape"
        )
    state.emit(fx, op, [state.tensor(left), state.tensor(other)])


@converter("add")
def _add(state: Translation, fx: Any, a: dict) -> None:
    if _softsign_div(fx) is not None:
        return  # the softsign's div writes it
    alpha, constant = float(a.get("alpha", 1)), _scalar(state, a["other"])
    if constant is not None:
        state.emit(
            fx,
            "activation",
            [state.tensor(a["self"])],
            attrs={"kind": "linear", "alpha": 1.0, "beta": alpha * constant},
        )
    elif alpha != 1.0:
        raise UnsupportedError(f"add with alpha={alpha} in {where(fx)} is not supported")
    elif state.is_weight(a["other"]) or state.is_weight(a["self"]):
        source, constant = (
            (a["self"], a["other"]) if state.is_weight(a["other"]) else (a["other"], a["self"])
        )
        add_constant(state, fx, source, constant)
    else:
        _binary(state, fx, "add", a["other"])


def _per_channel_scale(state: Translation, fx: Any, a: dict) -> bool:
    """A product of an image and a parameter with one value per channel (ConvNeXt's layer
    scale, (C, 1, 1) against (N, C, H, W), or (C,) against a channel-last view): a ``scale``
    node. False when the product is not of that form."""
    operands = [a["self"], a["other"]]
    weights = [x for x in operands if state.is_weight(x)]
    if len(weights) != 1:
        return False
    (weight,) = weights
    (source,) = [x for x in operands if x is not weight]
    view = layout.channel_last(state, source)
    shape = full_shape(source)
    array, fqn = state.weight(weight)
    channels = shape[-1] if view is not None else shape[1]
    wanted = (channels,) if view is not None else (channels, 1, 1)
    if len(shape) != 4 or tuple(array.shape[-len(wanted) :]) != wanted or array.size != channels:
        return False
    tensor = view.tensor if view is not None else state.tensor(source)
    state.emit(fx, "scale", [tensor], weights={"scale": (array.reshape(channels), fqn)})
    if view is not None:
        layout.emitted_channel_last(state, fx, view.base, view.made_by)
    return True


@converter("mul")
def _mul(state: Translation, fx: Any, a: dict) -> None:
    constant = _scalar(state, a["other"])
    if constant is None and _per_channel_scale(state, fx, a):
        return
    if constant is not None:
        state.emit(
            fx,
            "activation",
            [state.tensor(a["self"])],
            attrs={"kind": "linear", "alpha": constant, "beta": 0.0},
        )
    else:
        _binary(state, fx, "mul", a["other"])


@converter("softmax", "_softmax")
def _softmax(state: Translation, fx: Any, a: dict) -> None:
    channel_axis(fx, int(a["dim"]), "softmax")
    state.emit(fx, "softmax", [state.tensor(a["self"])])


@converter("log_softmax", "_log_softmax")
def _log_softmax(state: Translation, fx: Any, a: dict) -> None:
    """Only as the model's output, exported as softmax (``rules.LOG_SOFTMAX_ONLY_AS_OUTPUT``)."""
    channel_axis(fx, int(a["dim"]), "log_softmax")
    if any(user.op != "output" for user in fx.users):
        raise UnsupportedError(
            f"log_softmax in {where(fx)} feeds other ops; " + LOG_SOFTMAX_ONLY_AS_OUTPUT
        )
    node = state.emit(fx, "softmax", [state.tensor(a["self"])])
    state.log_softmax.add(node.name)
