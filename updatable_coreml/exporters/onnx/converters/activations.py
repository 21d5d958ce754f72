"""Activations, Clip included."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...common.rules import (
    clip_activation,
)
from ..context import (
    Converter,
    OnnxTranslation,
    converts,
    number,
)


def _activation(kind: str, **defaults: float) -> Converter:
    """Converter of an ONNX activation whose attributes (``alpha``, ``beta``) keep their name."""

    def convert(state: OnnxTranslation, node: Any, a: dict) -> None:
        attrs = {"kind": kind, **{key: float(a.get(key, value)) for key, value in defaults.items()}}
        _elementwise_activation(state, node, attrs)

    return convert


def _elementwise_activation(state: OnnxTranslation, node: Any, attrs: dict) -> None:
    """An activation; on a pending transpose it runs on the untransposed data and the
    transpose stays pending (they commute), so a later inverse transpose can still cancel."""
    pending = state.transposes.get(node.input[0])
    if pending is None:
        state.emit(node, "activation", [state.tensor(node.input[0], node)], attrs=attrs)
        return
    untransposed = f"{node.output[0]}_untransposed"
    state.emit(
        node, "activation", [state.tensor(pending.source, node)], attrs=attrs, output=untransposed
    )
    state.shapes[untransposed] = state.full_shape(pending.source, node)
    state.transposes[node.output[0]] = dataclasses.replace(pending, source=untransposed)


for _op, _kind, _defaults in (
    ("Relu", "relu", {}),
    ("Sigmoid", "sigmoid", {}),
    ("Tanh", "tanh", {}),
    ("Softplus", "softplus", {}),
    ("LeakyRelu", "leaky_relu", {"alpha": 0.01}),
    ("Elu", "elu", {"alpha": 1.0}),
    ("HardSigmoid", "hard_sigmoid", {"alpha": 0.2, "beta": 0.5}),
):
    converts(_op)(_activation(_kind, **_defaults))


@converts("Clip")
def _clip(state: OnnxTranslation, node: Any, a: dict) -> None:
    low, high = (state.constant(node, i) for i in (1, 2))
    attrs = clip_activation(
        None if low is None else number(low), None if high is None else number(high)
    )
    _elementwise_activation(state, node, attrs)
