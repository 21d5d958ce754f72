"""Reductions: the classic ``reduce`` layer, the ND ``reduce*`` layers, argMax/argMin,
cumSum, topK and argSort."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..._proto import NeuralNetwork_pb2 as nn_pb
from ..registry import WeightGetter, register_forward
from .common import Blobs, _classic, _fail, _nd_axis, _restore, _values

Reduce = nn_pb.ReduceLayerParams


_REDUCE_AXES = {
    Reduce.CHW: (-3, -2, -1),
    Reduce.HW: (-2, -1),
    Reduce.C: (-3,),
    Reduce.H: (-2,),
    Reduce.W: (-1,),
}


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


# -- ND reductions ------------------------------------------------------------------------------

_ND_REDUCERS: dict[str, Callable] = {
    "reduceSum": lambda x, axes: x.sum(axis=axes, keepdims=True),
    "reduceMean": lambda x, axes: x.mean(axis=axes, keepdims=True),
    "reduceProd": lambda x, axes: x.prod(axis=axes, keepdims=True),
    "reduceMax": lambda x, axes: x.max(axis=axes, keepdims=True),
    "reduceMin": lambda x, axes: x.min(axis=axes, keepdims=True),
    "reduceL1": lambda x, axes: np.abs(x).sum(axis=axes, keepdims=True),
    "reduceL2": lambda x, axes: np.sqrt(np.square(x).sum(axis=axes, keepdims=True)),
    "reduceSumSquare": lambda x, axes: np.square(x).sum(axis=axes, keepdims=True),
    "reduceLogSum": lambda x, axes: np.log(x.sum(axis=axes, keepdims=True)),
    "reduceLogSumExp": lambda x, axes: _log_sum_exp(x, axes),
}


def _log_sum_exp(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    top = x.max(axis=axes, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=axes, keepdims=True))


def _nd_axes(layer, axes, rank: int) -> tuple[int, ...]:
    return tuple(sorted({_nd_axis(layer, int(a), rank) for a in axes}))


def _drop_axes(y: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Squeeze reduced axes; a tensor reduced to nothing keeps one axis of size 1 (Core ML
    tensors have rank >= 1)."""
    y = y.squeeze(axis=axes)
    return y.reshape(len(y), 1) if y.ndim == 1 else y


@register_forward(*_ND_REDUCERS)
def reduce_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``axes`` (negative from the end) of each example, or all of them with ``reduceAll``;
    ``keepDims`` keeps them with size 1 (NeuralNetwork.proto ``ReduceSumLayerParams``...)."""
    kind = layer.WhichOneof("layer")
    params = getattr(layer, kind)
    x = inputs[0]
    rank = x.ndim - 1
    axes = (
        tuple(range(1, x.ndim))
        if params.reduceAll or not len(params.axes)
        else _nd_axes(layer, params.axes, rank)
    )
    y = _ND_REDUCERS[kind](x, axes)
    return [y if params.keepDims else _drop_axes(y, axes)]


@register_forward("argMax", "argMin")
def arg_extreme(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Index of the first maximum (minimum) along ``axis``, as a float of the blob's type."""
    kind = layer.WhichOneof("layer")
    params = getattr(layer, kind)
    x = inputs[0]
    axis = _nd_axis(layer, int(params.axis), x.ndim - 1)
    pick = np.argmax if kind == "argMax" else np.argmin
    y = np.expand_dims(pick(x, axis=axis), axis).astype(x.dtype)
    return [y.squeeze(axis) if params.removeDim and x.ndim > 2 else y]


@register_forward("cumSum")
def cum_sum(layer, inputs: Blobs, weight: WeightGetter) -> list:
    params = layer.cumSum
    x = inputs[0]
    axis_value = int(_values(layer, inputs[1], "axis")[0]) if len(inputs) > 1 else int(params.axis)
    axis = _nd_axis(layer, axis_value, x.ndim - 1)
    data = np.flip(x, axis) if params.reverse else x
    y = np.cumsum(data, axis=axis)
    if params.excludeFinalSum:
        y = y - data
    return [np.flip(y, axis) if params.reverse else y]


def _sort_order(x: np.ndarray, axis: int, descending: bool) -> np.ndarray:
    """Indices sorting ``x`` along ``axis``; equal values keep their order (stable). Core
    ML's order of ties is not documented (unknown)."""
    return np.argsort(-x if descending else x, axis=axis, kind="stable")


@register_forward("topK")
def top_k(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """The K largest (``useBottomK``: smallest) values along ``axis``, in that order, and their
    indices (two outputs)."""
    params = layer.topK
    x = inputs[0]
    axis = _nd_axis(layer, int(params.axis), x.ndim - 1)
    k = int(_values(layer, inputs[1], "K")[0]) if len(inputs) > 1 else int(params.K)
    if not 0 < k <= x.shape[axis]:
        raise _fail(layer, f"K={k} is outside 1..{x.shape[axis]} for the axis")
    order = np.take(_sort_order(x, axis, not params.useBottomK), range(k), axis=axis)
    return [np.take_along_axis(x, order, axis=axis), order.astype(x.dtype)]


@register_forward("argSort")
def arg_sort(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    axis = _nd_axis(layer, int(layer.argSort.axis), x.ndim - 1)
    return [_sort_order(x, axis, layer.argSort.descending).astype(x.dtype)]
