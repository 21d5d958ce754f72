"""ND indexing layers (NeuralNetwork.proto, specification 4+): gatherND, gatherAlongAxis, the
three scatters, sliceBySize, sliceDynamic, oneHot, whereNonZero and the triangular / band
masks. Per example, like ``gather``: a batch of one (a loaded constant) serves every example.
Indices are integers stored as floats; negative ones count from the end.
"""

from __future__ import annotations

import numpy as np

from ..._proto import NeuralNetwork_pb2 as nn_pb
from ..registry import WeightGetter, register_forward
from .common import Blobs, _common_batch, _fail, _nd_axis, _shape_of

Mode = nn_pb.ScatterMode
_ACCUMULATE: dict[int, np.ufunc] = {
    Mode.SCATTER_ADD: np.add,
    Mode.SCATTER_SUB: np.subtract,
    Mode.SCATTER_MUL: np.multiply,
    Mode.SCATTER_DIV: np.divide,
    Mode.SCATTER_MAX: np.maximum,
    Mode.SCATTER_MIN: np.minimum,
}


def _indices(layer, values: np.ndarray, size: int) -> np.ndarray:
    index = values.astype(np.int64)
    if index.size and (index.min() < -size or index.max() >= size):
        raise _fail(layer, f"index out of range for an axis of size {size}")
    return np.where(index < 0, index + size, index)


@register_forward("gatherND")
def gather_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``params[indices[..., :]]``: the last axis of ``indices`` is a multi-index into the
    leading axes of ``params``."""
    data, indices = _common_batch(layer, inputs)
    depth = indices.shape[-1]
    if depth > data.ndim - 1:
        raise _fail(layer, f"multi-indices of length {depth} for a rank-{data.ndim - 1} tensor")
    out = []
    for d, i in zip(data, indices, strict=True):
        parts = tuple(_indices(layer, i[..., k], d.shape[k]) for k in range(depth))
        out.append(d[parts])
    return [np.stack(out)]


@register_forward("gatherAlongAxis")
def gather_along_axis(layer, inputs: Blobs, weight: WeightGetter) -> list:
    data, indices = _common_batch(layer, inputs)
    axis = _nd_axis(layer, int(layer.gatherAlongAxis.axis), data.ndim - 1)
    index = _indices(layer, indices, data.shape[axis])
    return [np.take_along_axis(data, index, axis=axis)]


def _scatter(layer, out: np.ndarray, where: tuple, updates: np.ndarray, mode: int) -> None:
    """Apply ``updates`` at ``where`` in order (later updates of one position see earlier
    ones, as a loop over the updates would)."""
    if mode == Mode.SCATTER_UPDATE:
        out[where] = updates
        return
    if mode not in _ACCUMULATE:
        raise _fail(layer, f"unknown scatter mode {mode}")
    _ACCUMULATE[mode].at(out, where, updates)


@register_forward("scatter")
def scatter(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``output[..., indices[i], ...] (op)= updates[..., i, ...]`` along ``axis``."""
    container, indices, updates = _common_batch(layer, inputs)
    params = layer.scatter
    axis = _nd_axis(layer, int(params.axis), container.ndim - 1)
    out = container.copy()
    for b in range(len(out)):
        index = _indices(layer, indices[b], out.shape[axis])
        lead = index.ndim  # updates hold the index axes where ``axis`` is
        moved = np.moveaxis(updates[b], tuple(range(axis - 1, axis - 1 + lead)), tuple(range(lead)))
        target = np.moveaxis(out[b], axis - 1, 0)
        _scatter(layer, target, (index,), moved, params.mode)
    return [out]


@register_forward("scatterND")
def scatter_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    container, indices, updates = _common_batch(layer, inputs)
    out = container.copy()
    depth = indices.shape[-1]
    for b in range(len(out)):
        where = tuple(_indices(layer, indices[b][..., k], out.shape[k + 1]) for k in range(depth))
        _scatter(layer, out[b], where, updates[b], layer.scatterND.mode)
    return [out]


@register_forward("scatterAlongAxis")
def scatter_along_axis(layer, inputs: Blobs, weight: WeightGetter) -> list:
    container, indices, updates = _common_batch(layer, inputs)
    params = layer.scatterAlongAxis
    axis = _nd_axis(layer, int(params.axis), container.ndim - 1)
    out = container.copy()
    index = _indices(layer, indices, out.shape[axis])
    grid: list[np.ndarray] = list(np.indices(index.shape, sparse=True))
    grid[axis] = index
    _scatter(layer, out, tuple(grid), updates, params.mode)
    return [out]


@register_forward("sliceBySize")
def slice_by_size(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``x[..., begin:begin + size, ...]`` along ``axis``, ``begin`` from the second input."""
    x = inputs[0]
    params = layer.sliceBySize
    axis = _nd_axis(layer, int(params.axis), x.ndim - 1)
    begin = _shape_of(layer, inputs[1], "begin")[0]
    begin = begin + x.shape[axis] if begin < 0 else begin
    size = int(params.size)
    if begin < 0 or size < 1 or begin + size > x.shape[axis]:
        raise _fail(layer, f"slice {begin}:{begin + size} is outside an axis of {x.shape[axis]}")
    return [np.take(x, range(begin, begin + size), axis=axis)]


@register_forward("sliceDynamic")
def slice_dynamic(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``sliceStatic`` whose begin (and optionally end, strides, masks) come from inputs 2-7."""
    params = layer.sliceDynamic
    x = inputs[0]
    rank = x.ndim - 1
    given = [_shape_of(layer, blob, "slice") for blob in inputs[1:7]]
    fields = [given[0]] + [
        given[k] if len(given) > k else tuple(field)
        for k, field in enumerate(
            (
                params.endIds,
                params.strides,
                params.beginMasks,
                params.endMasks,
                params.squeezeMasks,
            ),
            start=1,
        )
    ]
    begin, end, strides, begin_masks, end_masks, squeeze_masks = fields
    strides = strides or (1,) * rank
    begin_masks, end_masks = begin_masks or (False,) * rank, end_masks or (False,) * rank
    if any(len(f) != rank for f in (begin, end, strides, begin_masks, end_masks)):
        raise _fail(layer, f"begin/end/stride/mask lists must all have length {rank}")
    index = [slice(None)] + [
        slice(
            None if begin_masks[a] else int(begin[a]),
            None if end_masks[a] else int(end[a]),
            int(strides[a]) or 1,
        )
        for a in range(rank)
    ]
    out = x[tuple(index)]
    squeeze = tuple(a + 1 for a, flag in enumerate(squeeze_masks) if flag)
    if any(out.shape[a] != 1 for a in squeeze):
        raise _fail(layer, "squeezeMasks names an axis whose slice is not of size 1")
    return [out.squeeze(axis=squeeze)]


@register_forward("oneHot")
def one_hot(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """A new axis (``axis`` of the output) of ``oneHotVectorSize``: ``onValue`` at the index,
    ``offValue`` elsewhere; an index outside 0..size-1 gives all ``offValue``."""
    params = layer.oneHot
    x = inputs[0]
    size = (
        _shape_of(layer, inputs[1], "size")[0] if len(inputs) > 1 else int(params.oneHotVectorSize)
    )
    axis = _nd_axis(layer, int(params.axis), x.ndim)
    hot = np.arange(size).reshape((size,) + (1,) * (x.ndim - axis)) == np.expand_dims(x, axis)
    return [np.where(hot, params.onValue, params.offValue).astype(x.dtype)]


@register_forward("whereNonZero")
def where_non_zero(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``(N, rank)`` multi-indices of the non-zero values, in row-major order."""
    x = inputs[0]
    found = [np.argwhere(example != 0) for example in x]
    if len({len(f) for f in found}) > 1:
        raise _fail(
            layer,
            "the examples of the batch have different numbers of non-zero values; "
            "predict them one at a time",
        )
    return [np.stack(found).astype(x.dtype if x.dtype.kind == "f" else np.float32)]


def _band(layer, x: np.ndarray, lower: int, upper: int) -> np.ndarray:
    """Keep ``x[..., m, n]`` where ``-lower <= n - m <= upper`` (a negative bound: no limit)."""
    if x.ndim < 3:
        raise _fail(layer, f"needs a tensor of rank >= 2, got shape {x.shape[1:]}")
    m, n = x.shape[-2:]
    diff = np.arange(n)[None, :] - np.arange(m)[:, None]
    keep = ((lower < 0) | (-diff <= lower)) & ((upper < 0) | (diff <= upper))
    return np.where(keep, x, 0).astype(x.dtype)


@register_forward("lowerTriangular")
def lower_triangular(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Zero above diagonal ``k`` (numpy.tril)."""
    x = inputs[0]
    return [np.tril(x, int(layer.lowerTriangular.k)) if x.ndim >= 3 else _band(layer, x, 0, 0)]


@register_forward("upperTriangular")
def upper_triangular(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Zero below diagonal ``k`` (numpy.triu)."""
    x = inputs[0]
    return [np.triu(x, int(layer.upperTriangular.k)) if x.ndim >= 3 else _band(layer, x, 0, 0)]


@register_forward("matrixBandPart")
def matrix_band_part(layer, inputs: Blobs, weight: WeightGetter) -> list:
    params = layer.matrixBandPart
    return [_band(layer, inputs[0], int(params.numLower), int(params.numUpper))]


@register_forward("reverseSeq")
def reverse_seq(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Along ``batchAxis`` of the tensor, slice i has its first ``seq_lengths[i]`` entries
    along ``sequenceAxis`` reversed (NeuralNetwork.proto ``ReverseSeqLayerParams``)."""
    data, lengths = _common_batch(layer, inputs)
    params = layer.reverseSeq
    rank = data.ndim - 1
    batch_axis = _nd_axis(layer, int(params.batchAxis), rank) - 1
    seq_axis = _nd_axis(layer, int(params.sequenceAxis), rank) - 1
    if batch_axis >= seq_axis:
        raise _fail(layer, "batchAxis must be before sequenceAxis")
    out = data.copy()
    for example, counts in zip(out, lengths, strict=True):
        counts = counts.reshape(-1).astype(np.int64)
        if len(counts) != example.shape[batch_axis]:
            raise _fail(
                layer,
                f"seq_lengths has {len(counts)} values for a batch axis of "
                f"{example.shape[batch_axis]}",
            )
        for i, count in enumerate(counts):
            count = min(int(count), example.shape[seq_axis])
            head: list = [slice(None)] * example.ndim
            head[batch_axis], head[seq_axis] = i, slice(0, count)
            rows = tuple(head)
            example[rows] = np.flip(example[rows], seq_axis - 1)
    return [out]
