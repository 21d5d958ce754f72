"""Comparisons, logical ops and ``whereBroadcastable``: ND elementwise layers whose result is
1.0 where a condition holds and 0.0 elsewhere (NeuralNetwork.proto ``GreaterThanLayerParams``
...: "Output is 1.0f if the condition is true otherwise 0.0f"; one input compares to
``alpha``; broadcasting as the other ND layers)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..registry import WeightGetter, register_estimate, register_forward
from .common import Blobs, _broadcast, _fail, _same_rank
from .elementwise import broadcast_size

_COMPARISONS: dict[str, Callable] = {
    "equal": np.equal,
    "notEqual": np.not_equal,
    "lessThan": np.less,
    "lessEqual": np.less_equal,
    "greaterThan": np.greater,
    "greaterEqual": np.greater_equal,
}
_LOGICAL: dict[str, Callable] = {
    "logicalAnd": np.logical_and,
    "logicalOr": np.logical_or,
    "logicalXor": np.logical_xor,
}


def _pair(layer, inputs: Blobs) -> list[np.ndarray]:
    blobs = _same_rank(inputs)
    _broadcast(layer, blobs)
    return blobs


@register_forward(*_COMPARISONS)
def comparison(layer, inputs: Blobs, weight: WeightGetter) -> list:
    kind = layer.WhichOneof("layer")
    x = inputs[0]
    if len(inputs) == 1:
        other = np.asarray(getattr(layer, kind).alpha, dtype=x.dtype)
        return [_COMPARISONS[kind](x, other).astype(x.dtype)]
    if len(inputs) != 2:
        raise _fail(layer, f"needs 1 or 2 inputs, got {len(inputs)}")
    a, b = _pair(layer, inputs)
    return [_COMPARISONS[kind](a, b).astype(np.result_type(a, b))]


@register_forward(*_LOGICAL)
def logical(layer, inputs: Blobs, weight: WeightGetter) -> list:
    if len(inputs) != 2:
        raise _fail(layer, f"needs 2 inputs, got {len(inputs)}")
    a, b = _pair(layer, inputs)
    return [_LOGICAL[layer.WhichOneof("layer")](a != 0, b != 0).astype(np.result_type(a, b))]


@register_forward("logicalNot")
def logical_not(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    return [(x == 0).astype(x.dtype)]


@register_forward("whereBroadcastable")
def where(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``x`` where the condition (first input) is non-zero, else ``y``."""
    if len(inputs) != 3:
        raise _fail(layer, f"needs 3 inputs (condition, x, y), got {len(inputs)}")
    condition, x, y = _pair(layer, inputs)
    return [np.where(condition != 0, x, y).astype(np.result_type(x, y))]


register_estimate(*_COMPARISONS, *_LOGICAL, "whereBroadcastable")(broadcast_size)
