"""ND tensor shaping (NeuralNetwork.proto, specification 4+): copy, tile, stack, reverse, the
reshape and broadcast-to variants, getShape, constantPad, slidingWindows.

Shapes in the file and in shape inputs describe the Core ML tensor of one example; the blob
has the batch axis in front (see ``common``). A shape given as an input must be the same for
every example of a batch (``common._shape_of``).
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import WeightGetter, register_forward
from .common import Blobs, _fail, _nd_axis, _shape_of, _values


@register_forward("copy")
def copy(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """The input, unchanged (the one layer that may rewrite an existing blob name)."""
    return [inputs[0]]


@register_forward("tile")
def tile(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Repeat the tensor ``reps`` times per axis; shorter ``reps`` are padded with 1s in front."""
    x = inputs[0]
    reps = (
        _shape_of(layer, inputs[1], "reps")
        if len(inputs) > 1
        else tuple(int(r) for r in layer.tile.reps)
    )
    rank = x.ndim - 1
    if not 1 <= len(reps) <= rank or min(reps) < 1:
        raise _fail(layer, f"reps {list(reps)} must hold 1 to {rank} positive values")
    return [np.tile(x, (1,) * (1 + rank - len(reps)) + reps)]


@register_forward("stack")
def stack(layer, inputs: Blobs, weight: WeightGetter) -> list:
    if len(inputs) < 2 or any(x.shape[1:] != inputs[0].shape[1:] for x in inputs):
        raise _fail(
            layer, f"needs 2 or more inputs of one shape, got {[x.shape[1:] for x in inputs]}"
        )
    axis = _nd_axis(layer, int(layer.stack.axis), inputs[0].ndim)
    batch = max(len(x) for x in inputs)
    return [np.stack([np.broadcast_to(x, (batch,) + x.shape[1:]) for x in inputs], axis=axis)]


@register_forward("reverse")
def reverse(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    flags = list(layer.reverse.reverseDim)
    if len(flags) != x.ndim - 1:
        raise _fail(layer, f"reverseDim has {len(flags)} values for a rank-{x.ndim - 1} tensor")
    axes = tuple(i + 1 for i, flag in enumerate(flags) if flag)
    return [np.flip(x, axes) if axes else x]


def _reshape(layer, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    try:
        return x.reshape((len(x),) + shape)
    except ValueError:
        raise _fail(layer, f"cannot reshape {x.shape[1:]} to {shape}") from None


@register_forward("rankPreservingReshape")
def rank_preserving_reshape(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``targetShape`` of the input's rank: 0 keeps that axis, one -1 is inferred."""
    x = inputs[0]
    target = [int(d) for d in layer.rankPreservingReshape.targetShape]
    if len(target) != x.ndim - 1:
        raise _fail(layer, f"targetShape {target} must have the input's rank {x.ndim - 1}")
    shape = tuple(x.shape[i + 1] if d == 0 else d for i, d in enumerate(target))
    return [_reshape(layer, x, shape)]


@register_forward("reshapeLike")
def reshape_like(layer, inputs: Blobs, weight: WeightGetter) -> list:
    return [_reshape(layer, inputs[0], inputs[1].shape[1:])]


@register_forward("reshapeDynamic")
def reshape_dynamic(layer, inputs: Blobs, weight: WeightGetter) -> list:
    return [_reshape(layer, inputs[0], _shape_of(layer, inputs[1], "shape"))]


def _broadcast_to(layer, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    view = x.reshape(x.shape[:1] + (1,) * max(len(shape) - x.ndim + 1, 0) + x.shape[1:])
    try:
        return np.broadcast_to(view, (len(x),) + tuple(shape)).copy()
    except ValueError:
        raise _fail(layer, f"cannot broadcast {x.shape[1:]} to {tuple(shape)}") from None


@register_forward("broadcastToLike")
def broadcast_to_like(layer, inputs: Blobs, weight: WeightGetter) -> list:
    return [_broadcast_to(layer, inputs[0], inputs[1].shape[1:])]


@register_forward("broadcastToStatic")
def broadcast_to_static(layer, inputs: Blobs, weight: WeightGetter) -> list:
    shape = tuple(int(d) for d in layer.broadcastToStatic.targetShape)
    return [_broadcast_to(layer, inputs[0], shape)]


@register_forward("broadcastToDynamic")
def broadcast_to_dynamic(layer, inputs: Blobs, weight: WeightGetter) -> list:
    return [_broadcast_to(layer, inputs[0], _shape_of(layer, inputs[1], "shape"))]


@register_forward("getShape")
def get_shape(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Each example's tensor shape, as a rank-1 tensor."""
    x = inputs[0]
    return [
        np.tile(
            np.asarray(x.shape[1:], dtype=x.dtype if x.dtype.kind == "f" else np.float32),
            (len(x), 1),
        )
    ]


@register_forward("constantPad")
def constant_pad(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Pad each axis by ``padAmounts[2i]`` before and ``[2i+1]`` after (or, with
    ``padToGivenOutputSizeMode``, up to the non-zero amount as the axis size, on that side)."""
    params = layer.constantPad
    x = inputs[0]
    rank = x.ndim - 1
    amounts = (
        _shape_of(layer, inputs[1], "padAmounts")
        if len(inputs) > 1
        else tuple(int(a) for a in params.padAmounts)
    )
    if len(amounts) != 2 * rank:
        raise _fail(layer, f"padAmounts has {len(amounts)} values for a rank-{rank} tensor")
    pads = [(0, 0)]
    for i in range(rank):
        before, after = amounts[2 * i], amounts[2 * i + 1]
        if params.padToGivenOutputSizeMode:
            grow = max(max(before, after) - x.shape[i + 1], 0)
            before, after = (grow, 0) if before else (0, grow)
        pads.append((before, after))
    return [np.pad(x, pads, constant_values=params.value)]


@register_forward("slidingWindows")
def sliding_windows(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Windows of ``windowSize`` every ``step`` along ``axis``: the axis of length L becomes
    two, (M, W) with M = (L - W) // step + 1."""
    params = layer.slidingWindows
    x = inputs[0]
    axis = _nd_axis(layer, int(params.axis), x.ndim - 1)
    size, step = int(params.windowSize), max(int(params.step), 1)
    if not 1 <= size <= x.shape[axis]:
        raise _fail(layer, f"windowSize {size} does not fit an axis of {x.shape[axis]}")
    count = (x.shape[axis] - size) // step + 1
    windows = [np.take(x, range(m * step, m * step + size), axis=axis) for m in range(count)]
    return [np.stack(windows, axis=axis)]


def _fill(layer, shape: tuple[int, ...], value: float, dtype) -> np.ndarray:
    if math.prod(shape) > (1 << 26) or min(shape, default=1) < 0:
        raise _fail(layer, f"cannot fill a tensor of shape {shape}")
    return np.full((1,) + tuple(shape), value, dtype=dtype)


@register_forward("fillLike")
def fill_like(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    return [
        np.full(x.shape, layer.fillLike.value, dtype=x.dtype if x.dtype.kind == "f" else np.float32)
    ]


@register_forward("fillStatic")
def fill_static(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """A batch of one (like loadConstantND): broadcasting layers meet any batch."""
    shape = tuple(int(d) for d in layer.fillStatic.targetShape)
    return [_fill(layer, shape, layer.fillStatic.value, np.float32)]


@register_forward("fillDynamic")
def fill_dynamic(layer, inputs: Blobs, weight: WeightGetter) -> list:
    shape = _shape_of(layer, inputs[0], "shape")
    return [
        np.repeat(
            _fill(layer, shape, layer.fillDynamic.value, inputs[0].dtype), len(inputs[0]), axis=0
        )
    ]


def _range(layer, end: float, start: float, step: float, dtype) -> np.ndarray:
    if step == 0 or (end - start) / step > (1 << 26):
        raise _fail(layer, f"range from {start} to {end} by {step} is empty or too long")
    return np.arange(start, end, step, dtype=np.float64).astype(dtype)[None]


@register_forward("rangeStatic")
def range_static(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``numpy.arange(startValue, endValue, stepSizeValue)`` as a batch of one."""
    p = layer.rangeStatic
    return [_range(layer, p.endValue, p.startValue, p.stepSizeValue, np.float32)]


@register_forward("rangeDynamic")
def range_dynamic(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """End from the first input; start and step from the next inputs when present."""
    p = layer.rangeDynamic
    values = [float(_values(layer, blob, "range")[0]) for blob in inputs[:3]]
    end = values[0]
    start = values[1] if len(values) > 1 else p.startValue
    step = values[2] if len(values) > 2 else p.stepSizeValue
    y = _range(layer, end, start, step, inputs[0].dtype)
    return [np.repeat(y, len(inputs[0]), axis=0)]
