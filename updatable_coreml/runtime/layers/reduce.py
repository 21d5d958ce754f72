"""The classic ``reduce`` layer."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..._proto import NeuralNetwork_pb2 as nn_pb
from ..registry import WeightGetter, register_forward
from .common import Blobs, _classic, _fail, _restore

Reduce = nn_pb.ReduceLayerParams


_REDUCE_AXES = {Reduce.CHW: (-3, -2, -1), Reduce.HW: (-2, -1), Reduce.C: (-3,),
                Reduce.H: (-2,), Reduce.W: (-1,)}


_REDUCERS: dict[int, Callable[[np.ndarray, tuple, float], np.ndarray]] = {
    Reduce.SUM: lambda v, axes, eps: v.sum(axis=axes, keepdims=True),
    Reduce.AVG: lambda v, axes, eps: v.mean(axis=axes, keepdims=True),
    Reduce.PROD: lambda v, axes, eps: v.prod(axis=axes, keepdims=True),
    Reduce.LOGSUM: lambda v, axes, eps: np.log(v + eps).sum(axis=axes, keepdims=True),
    Reduce.SUMSQUARE: lambda v, axes, eps: (v * v).sum(axis=axes, keepdims=True),
    Reduce.L1: lambda v, axes, eps: np.abs(v).sum(axis=axes, keepdims=True),
    Reduce.L2: lambda v, axes, eps: np.sqrt((v * v).sum(axis=axes, keepdims=True)),
    Reduce.MAX: lambda v, axes, eps: v.max(axis=axes, keepdims=True),
    Reduce.MIN: lambda v, axes, eps: v.min(axis=axes, keepdims=True),
}


@register_forward("reduce")
def reduce(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Classic reduce; the reduced axes stay as size 1; LOGSUM's epsilon 0 means 1e-6."""
    params = layer.reduce
    axes = _REDUCE_AXES.get(params.axis)
    if axes is None:
        raise _fail(layer, f"unknown reduce axis {params.axis}")
    x = inputs[0]
    view = _classic(x)
    if params.mode == Reduce.ARGMAX:
        if len(axes) != 1:
            raise _fail(layer, "ARGMAX is only defined over a single axis (C, H or W)")
        out = np.argmax(view, axis=axes[0], keepdims=True).astype(x.dtype)
    elif params.mode in _REDUCERS:
        out = _REDUCERS[params.mode](view, axes, params.epsilon or 1e-6)
    else:
        raise _fail(layer, f"unknown reduce mode {params.mode}")
    return [_restore(out, x.ndim)]
