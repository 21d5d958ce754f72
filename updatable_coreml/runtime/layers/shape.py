"""Layers that move values without computing new ones: flatten (forward, backward), reshape,
concat, split, slice, gather, transpose, permute, squeeze, padding, crop, ... with the size
estimates of the ones whose output size comes from their parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..._proto import NeuralNetwork_pb2 as nn_pb
from ..registry import FORWARD, WeightGetter, register_backward, register_estimate, register_forward
from .common import (
    Blobs,
    _border_sum,
    _classic,
    _common_batch,
    _fail,
    _nd_axis,
    _per_example,
    _restore,
    _spatial,
    _with_sequence,
)

CHANNEL_LAST = nn_pb.FlattenLayerParams.CHANNEL_LAST


Slice = nn_pb.SliceLayerParams


Reorganize = nn_pb.ReorganizeDataLayerParams


@register_forward("flatten")
def flatten(layer, inputs, weight):
    """``(..., C, H, W)`` -> ``(..., C*H*W, 1, 1)`` in C,H,W order or (CHANNEL_LAST) H,W,C."""
    x = inputs[0]
    if x.ndim < 4:
        return [x]
    if layer.flatten.mode == CHANNEL_LAST:
        x = np.moveaxis(x, -3, -1)
    return [x.reshape(x.shape[:-3] + (-1, 1, 1))]


@register_backward("flatten")
def flatten_backward(layer, x, y, gy, weight, want_input):
    """Flatten only moves values: send each gradient back to where its value came from, found
    by running the forward op on the element indices."""
    if not want_input:
        return None, {}
    count = math.prod(x.shape[1:])
    index = np.arange(count).reshape((1,) + x.shape[1:])
    source = FORWARD[layer.WhichOneof("layer")](layer, [index], weight)[0].reshape(-1)
    dx = np.empty((x.shape[0], count), dtype=gy.dtype)
    dx[:, source] = gy.reshape(x.shape[0], -1)
    return dx.reshape(x.shape), {}


@register_forward("reshape")
def reshape(layer, inputs, weight):
    """Rank-5 reshape on ``(B[, Seq], C, H, W)``; a 3-value target keeps Seq, 4 values set it.

    CHANNEL_LAST reads the input in H,W,C order and writes the target in H,W,C order.
    """
    params = layer.reshape
    x = inputs[0]
    x5 = x[:, None, :, None, None] if x.ndim == 2 else x[:, None] if x.ndim == 4 else x
    if x5.ndim != 5:
        raise ValueError(f"reshape needs a rank-1, 3 or 4 input per example, got {x.shape[1:]}")
    target = [int(v) for v in params.targetShape]
    if len(target) not in (3, 4):
        raise ValueError(f"targetShape must have 3 or 4 values, got {target}")
    seq, (c, h, w) = (x5.shape[1], target) if len(target) == 3 else (target[0], target[1:])
    channel_last = params.mode == nn_pb.ReshapeLayerParams.CHANNEL_LAST
    if channel_last:
        x5 = np.moveaxis(x5, 2, 4)
    flat = x5.reshape(x5.shape[0], -1)
    if flat.shape[1] != seq * c * h * w:
        raise ValueError(f"cannot reshape {x.shape[1:]} ({flat.shape[1]} values) to {target}")
    y = (
        np.moveaxis(flat.reshape(-1, seq, h, w, c), 4, 2)
        if channel_last
        else flat.reshape(-1, seq, c, h, w)
    )
    return [y if x.ndim == 5 or seq != 1 else y[:, 0]]


def _border(amounts) -> tuple[tuple[int, int], tuple[int, int]]:
    """``BorderAmounts`` as ``((top, bottom), (left, right))``; unset means no border."""
    edges = [(int(e.startEdgeSize), int(e.endEdgeSize)) for e in amounts.borderAmounts]
    edges += [(0, 0)] * (2 - len(edges))
    return edges[0], edges[1]


@register_forward("concat")
def concat(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Classic concat along channels, or along the sequence axis when ``sequenceConcat``."""
    rank = max(x.ndim for x in inputs)
    if layer.concat.sequenceConcat:
        views, axis = [_with_sequence(layer, x) for x in inputs], 1
    else:
        views, axis = [_classic(x) for x in inputs], -3
    try:
        return [_restore(np.concatenate(_common_batch(layer, views), axis=axis), rank)]
    except ValueError as exc:
        raise _fail(layer, f"cannot concatenate: {exc}") from None


@register_forward("concatND")
def concat_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Concat along any axis; ``interleave`` alternates the inputs' slices along that axis."""
    params = layer.concatND
    blobs = _common_batch(layer, inputs)
    axis = _nd_axis(layer, params.axis, blobs[0].ndim - 1)
    try:
        if not params.interleave:
            return [np.concatenate(blobs, axis=axis)]
        stacked = np.stack(blobs, axis=axis + 1)
    except ValueError as exc:
        raise _fail(layer, f"cannot concatenate: {exc}") from None
    shape = list(blobs[0].shape)
    shape[axis] *= len(blobs)
    return [stacked.reshape(shape)]


def _split_points(layer, length: int, sizes: Sequence[int], parts: int) -> list[int]:
    """Cut points for splitting an axis of ``length`` into ``sizes`` or ``parts`` equal parts."""
    if sizes:
        if sum(sizes) != length:
            raise _fail(layer, f"split sizes {list(sizes)} do not add up to {length}")
        return list(np.cumsum(sizes)[:-1])
    if parts < 1 or length % parts:
        raise _fail(layer, f"axis of size {length} cannot be split into {parts} equal parts")
    return [length // parts * i for i in range(1, parts)]


@register_forward("split")
def split(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Equal split along channels into one piece per output."""
    x = inputs[0]
    view = _classic(x)
    parts = int(layer.split.nOutputs) or len(layer.output)
    points = _split_points(layer, view.shape[-3], (), parts)
    return [_restore(p, x.ndim) for p in np.split(view, points, axis=-3)]


@register_forward("splitND")
def split_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    params = layer.splitND
    x = inputs[0]
    axis = _nd_axis(layer, params.axis, x.ndim - 1)
    parts = int(params.numSplits) or len(layer.output)
    points = _split_points(layer, x.shape[axis], [int(s) for s in params.splitSizes], parts)
    return np.split(x, points, axis=axis)


_SLICE_AXES = {Slice.CHANNEL_AXIS: -3, Slice.HEIGHT_AXIS: -2, Slice.WIDTH_AXIS: -1}


@register_forward("slice")
def slice_classic(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Classic slice of C, H or W with Python ``[start:end:stride]`` semantics."""
    params = layer.slice
    x = inputs[0]
    view = _classic(x)
    if params.axis not in _SLICE_AXES:
        raise _fail(layer, f"unknown slice axis {params.axis}")
    index = [slice(None)] * view.ndim
    index[_SLICE_AXES[params.axis]] = slice(params.startIndex, params.endIndex, params.stride or 1)
    return [_restore(view[tuple(index)], x.ndim)]


@register_forward("sliceStatic")
def slice_static(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Strided slice per axis; a mask ignores that begin/end, ``squeezeMasks`` drops the axis."""
    params = layer.sliceStatic
    x = inputs[0]
    rank = x.ndim - 1
    fields = (params.beginIds, params.endIds, params.strides, params.beginMasks, params.endMasks)
    if any(len(f) != rank for f in fields):
        raise _fail(layer, f"begin/end/stride/mask lists must all have length {rank}")
    index = [slice(None)]
    for axis in range(rank):
        begin = None if params.beginMasks[axis] else int(params.beginIds[axis])
        end = None if params.endMasks[axis] else int(params.endIds[axis])
        index.append(slice(begin, end, int(params.strides[axis]) or 1))
    out = x[tuple(index)]
    squeeze = tuple(axis + 1 for axis, flag in enumerate(params.squeezeMasks) if flag)
    if any(out.shape[axis] != 1 for axis in squeeze):
        raise _fail(layer, "squeezeMasks names an axis whose slice is not of size 1")
    return [out.squeeze(axis=squeeze)]


@register_forward("gather")
def gather(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Per example, ``np.take`` of the data along ``axis``; negative indices count from the end.

    A batch of one (a loaded constant) on either side serves every example.
    """
    data, indices = _common_batch(layer, inputs)
    axis = _nd_axis(layer, layer.gather.axis, data.ndim - 1)
    idx = indices.astype(np.int64)
    size = data.shape[axis]
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise _fail(layer, f"index out of range for an axis of size {size}")
    return [np.stack([np.take(d, i, axis=axis - 1) for d, i in zip(data, idx)])]


@register_forward("reshapeStatic")
def reshape_static(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Reshape each example to ``targetShape``."""
    x = inputs[0]
    target = (x.shape[0],) + tuple(int(d) for d in layer.reshapeStatic.targetShape)
    try:
        return [x.reshape(target)]
    except ValueError:
        raise _fail(layer, f"cannot reshape {x.shape[1:]} to {target[1:]}") from None


@register_forward("flattenTo2D")
def flatten_to_2d(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Collapse each example's axes before ``axis`` into rows and the rest into columns."""
    x = inputs[0]
    shape, axis = x.shape[1:], layer.flattenTo2D.axis
    if not -len(shape) <= axis <= len(shape):
        raise _fail(layer, f"axis {axis} is out of range for a rank-{len(shape)} tensor")
    axis += len(shape) if axis < 0 else 0
    return [x.reshape(x.shape[0], math.prod(shape[:axis]), math.prod(shape[axis:]))]


@register_forward("transpose")
def transpose(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    axes = [int(a) for a in layer.transpose.axes]
    if sorted(axes) != list(range(x.ndim - 1)):
        raise _fail(layer, f"axes {axes} are not a permutation of a rank-{x.ndim - 1} tensor's")
    return [x.transpose([0] + [a + 1 for a in axes])]


@register_forward("permute")
def permute(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Permute (Seq, C, H, W), axes 1-4 of the ``(B, Seq, C, H, W)`` view; batch stays first."""
    order = [int(a) for a in layer.permute.axis] or [0, 1, 2, 3]
    if sorted(order) != [0, 1, 2, 3]:
        raise _fail(layer, f"axis {order} is not a permutation of [0, 1, 2, 3]")
    x = inputs[0]
    out = _with_sequence(layer, x).transpose([0] + [1 + a for a in order])
    return [_restore(out, x.ndim)]


@register_forward("squeeze")
def squeeze(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Drop the listed unit axes (all of them with ``squeezeAll``); rank 1 stays rank 1."""
    params = layer.squeeze
    x = inputs[0]
    if params.squeezeAll:
        axes = [axis for axis in range(1, x.ndim) if x.shape[axis] == 1]
    else:
        axes = [_nd_axis(layer, int(a), x.ndim - 1) for a in params.axes]
    if any(x.shape[axis] != 1 for axis in axes):
        raise _fail(layer, f"cannot squeeze axes {list(params.axes)} of shape {x.shape[1:]}")
    out = x.squeeze(axis=tuple(axes))
    return [out.reshape(-1, 1) if out.ndim == 1 else out]


@register_forward("expandDims")
def expand_dims(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Insert unit axes; the listed axes index the output, negative ones from its end."""
    x = inputs[0]
    out_rank = x.ndim - 1 + len(layer.expandDims.axes)
    axes = tuple(_nd_axis(layer, int(a), out_rank) for a in layer.expandDims.axes)
    return [np.expand_dims(x, axes)]


@register_forward("reorganizeData")
def reorganize_data(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Space <-> depth moves of ``blockSize`` blocks.

    SPACE_TO_DEPTH / DEPTH_TO_SPACE use TensorFlow's channel order (block offset major,
    channel minor): coremltools lowers TF's DepthToSpace to DEPTH_TO_SPACE and torch's
    pixel_shuffle (channel major) to PIXEL_SHUFFLE.
    """
    params = layer.reorganizeData
    b = int(params.blockSize)
    x = inputs[0]
    view = _classic(x)
    *lead, c, h, w = view.shape
    n = len(lead)
    if b < 2:
        raise _fail(layer, "blockSize must be greater than 1")
    if params.mode == Reorganize.SPACE_TO_DEPTH:
        if h % b or w % b:
            raise _fail(layer, f"blockSize {b} does not divide H={h} and W={w}")
        blocks = view.reshape(*lead, c, h // b, b, w // b, b)
        out = blocks.transpose(*range(n), n + 2, n + 4, n, n + 1, n + 3)
        return [_restore(out.reshape(*lead, c * b * b, h // b, w // b), x.ndim)]
    if c % (b * b):
        raise _fail(layer, f"blockSize^2 = {b * b} does not divide C={c}")
    if params.mode == Reorganize.DEPTH_TO_SPACE:
        blocks = view.reshape(*lead, b, b, c // (b * b), h, w)
        out = blocks.transpose(*range(n), n + 2, n + 3, n, n + 4, n + 1)
    elif params.mode == Reorganize.PIXEL_SHUFFLE:
        blocks = view.reshape(*lead, c // (b * b), b, b, h, w)
        out = blocks.transpose(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    else:
        raise _fail(layer, f"unknown reorganization mode {params.mode}")
    return [_restore(out.reshape(*lead, c // (b * b), h * b, w * b), x.ndim)]


@register_forward("sequenceRepeat")
def sequence_repeat(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    reps = int(layer.sequenceRepeat.nRepetitions) or 1
    view = _with_sequence(layer, x)
    return [_restore(np.concatenate([view] * reps, axis=1), x.ndim)]


@register_forward("padding")
def padding(layer, inputs: Blobs, weight: WeightGetter) -> list:
    params = layer.padding
    x = inputs[0]
    view = _classic(x)
    widths = [(0, 0)] * (view.ndim - 2) + list(_border(params.paddingAmounts))
    kind = params.WhichOneof("PaddingType")
    if kind == "constant":
        out = np.pad(view, widths, mode="constant", constant_values=params.constant.value)
    elif kind == "reflection":
        if any(max(p) >= n for p, n in zip(widths[-2:], view.shape[-2:])):
            raise _fail(layer, "reflection padding must be smaller than the padded dimension")
        out = np.pad(view, widths, mode="reflect")
    elif kind == "replication":
        out = np.pad(view, widths, mode="edge")
    else:
        raise _fail(layer, "no padding type (constant, reflection or replication) is set")
    return [_restore(out, x.ndim)]


@register_forward("crop")
def crop(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Crop H, W by ``cropAmounts``, or to the second input's H, W at ``offset``."""
    params = layer.crop
    x = inputs[0]
    view = _classic(x)
    height, width = view.shape[-2:]
    if len(inputs) == 2:
        top, left = (int(o) for o in params.offset) if len(params.offset) == 2 else (0, 0)
        out_h, out_w = _classic(inputs[1]).shape[-2:]
        bottom, right = height - top - out_h, width - left - out_w
    else:
        (top, bottom), (left, right) = _border(params.cropAmounts)
    if min(bottom, right) < 0 or top + bottom >= height or left + right >= width:
        raise _fail(layer, f"crop does not fit an input of H={height}, W={width}")
    return [_restore(view[..., top : height - bottom, left : width - right], x.ndim)]


@register_estimate("padding")
def padding_size(layer, inputs) -> int:
    x = inputs[0]
    height, width = _spatial(x) if x.ndim >= 4 else (x.shape[-1] if x.ndim == 3 else 1, 1)
    pad_h, pad_w = _border_sum(layer.padding.paddingAmounts)
    return _per_example(x) // max(height * width, 1) * (height + pad_h) * (width + pad_w)


@register_estimate("sequenceRepeat")
def sequence_repeat_size(layer, inputs) -> int:
    return _per_example(inputs[0]) * max(int(layer.sequenceRepeat.nRepetitions), 1)
