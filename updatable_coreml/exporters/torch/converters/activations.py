"""Activations."""

from __future__ import annotations

from typing import Any

from ....errors import UnsupportedError
from ...common.rules import clip_activation
from ..context import Converter, Translation, _op_name, converter, where


def _activation(kind: str, **attrs: Any) -> Converter:
    def convert(state: Translation, fx: Any, a: dict) -> None:
        state.emit(fx, "activation", [state.tensor(a["self"])], attrs={"kind": kind, **attrs})

    return convert


for _ops, _kind in (
    (("relu",), "relu"),
    (("relu6",), "relu6"),
    (("sigmoid",), "sigmoid"),
    (("tanh",), "tanh"),
    (("silu",), "silu"),
    (("hardswish",), "hard_silu"),
):
    converter(*_ops)(_activation(_kind))
# relu6(x + 3) / 6 = min(max(x / 6 + 1/2, 0), 1): Core ML's sigmoidHard
converter("hardsigmoid")(_activation("hard_sigmoid", alpha=1 / 6, beta=0.5))


@converter("hardtanh")
def _hardtanh(state: Translation, fx: Any, a: dict) -> None:
    state.emit(
        fx,
        "activation",
        [state.tensor(a["self"])],
        attrs=clip_activation(float(a["min_val"]), float(a["max_val"])),
    )


@converter("leaky_relu")
def _leaky_relu(state: Translation, fx: Any, a: dict) -> None:
    state.emit(
        fx,
        "activation",
        [state.tensor(a["self"])],
        attrs={"kind": "leaky_relu", "alpha": float(a["negative_slope"])},
    )


@converter("elu")
def _elu(state: Translation, fx: Any, a: dict) -> None:
    if float(a["scale"]) != 1.0 or float(a["input_scale"]) != 1.0:
        raise UnsupportedError(
            f"scaled ELU (SELU/CELU) in {where(fx)} is not supported; use nn.ELU"
        )
    state.emit(
        fx,
        "activation",
        [state.tensor(a["self"])],
        attrs={"kind": "elu", "alpha": float(a["alpha"])},
    )


@converter("softplus")
def _softplus(state: Translation, fx: Any, a: dict) -> None:
    if float(a["beta"]) != 1.0:
        raise UnsupportedError(
            f"Softplus with beta={a['beta']} in {where(fx)}: Core ML's softplus has beta 1"
        )
    # torch returns x itself above `threshold`; log1p(exp(x)) differs from x by < exp(-x) there.
    state.emit(fx, "activation", [state.tensor(a["self"])], attrs={"kind": "softplus"})


def _softsign_div(fx: Any) -> Any | None:
    """The ``div`` of ``x / (abs(x) + 1)`` (what ``nn.Softsign`` / ``F.softsign`` export as)
    that ``fx`` (the abs, the add or the div) belongs to, or None."""

    def is_op(node: Any, name: str) -> bool:
        return hasattr(node, "target") and _op_name(node) == name

    node = fx
    for step in ("abs", "add"):
        if is_op(node, step):
            if len(node.users) != 1:
                return None
            node = next(iter(node.users))
    if not is_op(node, "div") or len(node.args) != 2 or node.kwargs.get("rounding_mode"):
        return None
    x, denominator = node.args
    if not is_op(denominator, "add") or len(denominator.users) != 1 or denominator.kwargs:
        return None
    magnitude = denominator.args[0]
    one = denominator.args[1] if len(denominator.args) > 1 else None
    if (
        one != 1
        or not is_op(magnitude, "abs")
        or len(magnitude.users) != 1
        or magnitude.args[0] is not x
    ):
        return None
    return node


@converter("abs", "div")
def _softsign(state: Translation, fx: Any, a: dict) -> None:
    """Softsign: the abs and add are skipped, the div becomes Core ML's softsign activation.
    Core ML has neither a division of two tensors nor an abs activation, so both appear
    only in this pattern."""
    div = _softsign_div(fx)
    if div is None:
        raise UnsupportedError(
            f"{_op_name(fx)} in {where(fx)} is supported only as part of "
            "softsign, x / (abs(x) + 1); use nn.Softsign"
        )
    if div is fx:
        state.emit(fx, "activation", [state.tensor(fx.args[0])], attrs={"kind": "softsign"})


@converter("gelu")
def _gelu(state: Translation, fx: Any, a: dict) -> None:
    state.emit(
        fx,
        "activation",
        [state.tensor(a["self"])],
        attrs={"kind": "gelu", "approximate": a["approximate"] == "tanh"},
    )
