"""Elementwise ops: add, mul (with a constant: an affine activation), softmax, log_softmax."""

from __future__ import annotations

from typing import Any, Optional

from .... import ops
from ....errors import UnsupportedError
from ...common.rules import LOG_SOFTMAX_ONLY_AS_OUTPUT
from ..context import Translation, channel_axis, converter, full_shape, where
from .activations import _softsign_div


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
    else:
        _binary(state, fx, "add", a["other"])


@converter("mul")
def _mul(state: Translation, fx: Any, a: dict) -> None:
    constant = _scalar(state, a["other"])
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
