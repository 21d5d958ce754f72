"""Forward ops of the reference runtime beyond the core set.

Semantics follow the comments of Apple's ``NeuralNetwork.proto``; where the spec is silent, the
choice and its source are written on the op. Blob conventions are those of ``registry``:

* Classic (rank-5) layers see their input through :func:`_classic`: a ``(B, C)`` vector blob
  is read as ``(B, C, 1, 1)``; from rank 3 up, axes -3, -2, -1 are C, H, W and the leading
  axes are batch-like. Layers that need the sequence axis (-5) add leading singleton axes
  (:func:`_as_rank5`). :func:`_restore` drops the added singleton axes again, so a layer keeps
  its input's rank whenever the result allows it.
* ND layers (names ending in ``ND``, ``Static``, ``Broadcastable``, transpose, squeeze, …)
  work on the array as given.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import numpy as np

from ..errors import RuntimeLayerError
from .registry import WeightGetter, decode_weights, register_forward

Blobs = Sequence[np.ndarray]


# ----------------------------------------------------------------------------- shared helpers


def _fail(layer, what: str) -> RuntimeLayerError:
    return RuntimeLayerError(f"layer {layer.name!r} ({layer.WhichOneof('layer')}): {what}")


def _classic(x: np.ndarray) -> np.ndarray:
    """View a blob as ``(..., C, H, W)``: vectors and scalars get trailing unit H, W axes."""
    return x.reshape(x.shape + (1,) * (4 - x.ndim)) if x.ndim < 3 else x


def _as_rank5(x: np.ndarray) -> np.ndarray:
    """View a blob as Core ML's ``(Seq, B, C, H, W)`` for layers that act on the sequence axis."""
    view = _classic(x)
    return view.reshape((1,) * max(0, 5 - view.ndim) + view.shape)


def _restore(y: np.ndarray, rank: int) -> np.ndarray:
    """Undo :func:`_classic` / :func:`_as_rank5` where the result still has unit axes there."""
    extra = y.ndim - (rank if rank >= 3 else 4)
    if extra > 0 and all(d == 1 for d in y.shape[:extra]):
        y = y.reshape(y.shape[extra:])
    if rank < 3 and y.ndim == 4 and all(d == 1 for d in y.shape[rank:]):
        y = y.reshape(y.shape[:rank])
    return y


def _axis(layer, axis: int, rank: int) -> int:
    """Normalise a possibly negative axis, refusing one outside the blob."""
    if not -rank <= axis < rank:
        raise _fail(layer, f"axis {axis} is out of range for a rank-{rank} input")
    return axis % rank


def _broadcast(layer, arrays: Blobs) -> None:
    try:
        np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise _fail(layer, f"input shapes {shapes} cannot be broadcast together") from None


def _param(layer, values: np.ndarray, shape: Sequence[int], what: str) -> np.ndarray:
    """Shape a classic parameter declared ``[1]``, ``[C]``, ``[1, H, W]`` or ``[C, H, W]``.

    The result broadcasts against a ``(..., C, H, W)`` view.
    """
    dims = tuple(int(d) for d in shape) or (values.size,)
    if len(dims) not in (1, 3) or math.prod(dims) != values.size:
        raise _fail(layer, f"{what} of {values.size} values does not fit declared shape {dims}")
    return values.reshape(dims + (1, 1) if len(dims) == 1 else dims)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _border(amounts) -> tuple[tuple[int, int], tuple[int, int]]:
    """``BorderAmounts`` as ``((top, bottom), (left, right))``; unset means no border."""
    edges = [(int(e.startEdgeSize), int(e.endEdgeSize)) for e in amounts.borderAmounts]
    edges += [(0, 0)] * (2 - len(edges))
    return edges[0], edges[1]


# ----------------------------------------------------------------------------- elementwise


_CLASSIC_REDUCERS: dict[str, Callable] = {
    "add": np.add, "multiply": np.multiply, "max": np.maximum, "min": np.minimum,
}


@register_forward("add", "multiply", "average", "max", "min")
def elementwise(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Classic n-ary elementwise ops; one input to add/multiply means ``x + alpha`` / ``alpha x``."""
    kind = layer.WhichOneof("layer")
    if len(inputs) == 1 and kind in ("add", "multiply"):
        alpha = getattr(layer, kind).alpha
        return [inputs[0] + alpha if kind == "add" else inputs[0] * alpha]
    views = [_classic(x) for x in inputs]
    _broadcast(layer, views)
    if kind == "average":
        out = functools.reduce(np.add, views) / len(views)
    else:
        out = functools.reduce(_CLASSIC_REDUCERS[kind], views)
    return [_restore(out, max(x.ndim for x in inputs))]


_BROADCASTABLE: dict[str, Callable] = {
    "addBroadcastable": np.add,
    "subtractBroadcastable": np.subtract,
    "multiplyBroadcastable": np.multiply,
    "divideBroadcastable": np.divide,
    "maxBroadcastable": np.maximum,
    "minBroadcastable": np.minimum,
    "powBroadcastable": np.power,
}


@register_forward(*_BROADCASTABLE)
def broadcastable(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """ND binary ops with NumPy broadcasting, applied left to right."""
    if len(inputs) < 2:
        raise _fail(layer, f"needs 2 inputs, got {len(inputs)}")
    _broadcast(layer, inputs)
    return [functools.reduce(_BROADCASTABLE[layer.WhichOneof("layer")], inputs)]


@register_forward("scale")
def scale(layer, inputs: Blobs, weight: WeightGetter) -> list:
    params = layer.scale
    x = inputs[0]
    out = _classic(x) * _param(layer, weight("scale"), params.shapeScale, "scale")
    if params.hasBias:
        out = out + _param(layer, weight("bias"), params.shapeBias, "bias")
    return [_restore(out, x.ndim)]


@register_forward("bias")
def bias(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    return [_restore(_classic(x) + _param(layer, weight("bias"), layer.bias.shape, "bias"), x.ndim)]


@register_forward("clip")
def clip(layer, inputs: Blobs, weight: WeightGetter) -> list:
    return [np.clip(inputs[0], layer.clip.minVal, layer.clip.maxVal)]


_UNARY: dict[int, Callable[[np.ndarray, float, float], np.ndarray]] = {
    0: lambda x, alpha, eps: np.sqrt(x),
    1: lambda x, alpha, eps: 1 / np.sqrt(x + eps),
    2: lambda x, alpha, eps: 1 / (x + eps),
    3: lambda x, alpha, eps: np.power(x, alpha),
    4: lambda x, alpha, eps: np.exp(x),
    # The spec writes log(x); coremltools' MIL backend passes its log epsilon into this
    # field with the documented meaning log(x + epsilon), so that is what we do.
    5: lambda x, alpha, eps: np.log(x + eps),
    6: lambda x, alpha, eps: np.abs(x),
    7: lambda x, alpha, eps: np.maximum(x, alpha),
}


@register_forward("unary")
def unary(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``f(scale * x + shift)``; scale 0 means 1 and epsilon 0 means 1e-6, as the spec says."""
    params = layer.unary
    fn = _UNARY.get(params.type)
    if fn is None:
        raise _fail(layer, f"unknown unary operation {params.type}")
    x = inputs[0] * (params.scale or 1.0) + params.shift
    return [fn(x, params.alpha, params.epsilon or 1e-6)]


# ----------------------------------------------------------------------------- normalisation


@register_forward("softmaxND")
def softmax_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    return [_softmax(x, _axis(layer, layer.softmaxND.axis, x.ndim))]


@register_forward("l2normalize")
def l2normalize(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Divide by the L2 norm over C, H and W of each example."""
    x = inputs[0]
    view = _classic(x)
    norm = np.sqrt((view * view).sum(axis=(-3, -2, -1), keepdims=True)
                   + (layer.l2normalize.epsilon or 1e-6))
    return [_restore(view / norm, x.ndim)]


@register_forward("mvn")
def mvn(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Mean (and variance) normalisation over C, H, W or per channel over H, W.

    The variance is the biased one and epsilon is added under the square root, as in the
    layer_norm -> mvn mapping of coremltools' MIL backend.
    """
    params = layer.mvn
    x = inputs[0]
    view = _classic(x)
    axes = (-3, -2, -1) if params.acrossChannels else (-2, -1)
    out = view - view.mean(axis=axes, keepdims=True)
    if params.normalizeVariance:
        out = out / np.sqrt((out * out).mean(axis=axes, keepdims=True) + (params.epsilon or 1e-6))
    return [_restore(out, x.ndim)]


@register_forward("lrn")
def lrn(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``x / (k + alpha / n * sum of x^2 over n neighbouring channels) ** beta``.

    The window for channel c is ``[c - (n-1)//2, c + n//2]``, the Caffe/ONNX placement, which
    only differs from torch's for even n.
    """
    params = layer.lrn
    size = int(params.localSize)
    if size < 1:
        raise _fail(layer, "localSize must be at least 1")
    x = inputs[0]
    view = _classic(x)
    channels = view.shape[-3]
    pad = [(0, 0)] * (view.ndim - 3) + [((size - 1) // 2, size // 2), (0, 0), (0, 0)]
    squares = np.pad(view * view, pad)
    window = sum(squares[..., k:k + channels, :, :] for k in range(size))
    out = view / np.power((params.k or 1.0) + params.alpha / size * window, params.beta)
    return [_restore(out, x.ndim)]


_REDUCE_AXES = {0: (-3, -2, -1), 1: (-2, -1), 2: (-3,), 3: (-2,), 4: (-1,)}
_REDUCERS: dict[int, Callable[[np.ndarray, tuple, float], np.ndarray]] = {
    0: lambda v, axes, eps: v.sum(axis=axes, keepdims=True),
    1: lambda v, axes, eps: v.mean(axis=axes, keepdims=True),
    2: lambda v, axes, eps: v.prod(axis=axes, keepdims=True),
    3: lambda v, axes, eps: np.log(v + eps).sum(axis=axes, keepdims=True),
    4: lambda v, axes, eps: (v * v).sum(axis=axes, keepdims=True),
    5: lambda v, axes, eps: np.abs(v).sum(axis=axes, keepdims=True),
    6: lambda v, axes, eps: np.sqrt((v * v).sum(axis=axes, keepdims=True)),
    7: lambda v, axes, eps: v.max(axis=axes, keepdims=True),
    8: lambda v, axes, eps: v.min(axis=axes, keepdims=True),
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
    if params.mode == 9:
        if len(axes) != 1:
            raise _fail(layer, "ARGMAX is only defined over a single axis (C, H or W)")
        out = np.argmax(view, axis=axes[0], keepdims=True).astype(x.dtype)
    elif params.mode in _REDUCERS:
        out = _REDUCERS[params.mode](view, axes, params.epsilon or 1e-6)
    else:
        raise _fail(layer, f"unknown reduce mode {params.mode}")
    return [_restore(out, x.ndim)]


@register_forward("dot")
def dot(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Dot product (or cosine similarity) of two channel vectors."""
    if len(inputs) != 2:
        raise _fail(layer, f"needs 2 inputs, got {len(inputs)}")
    a, b = (_classic(x) for x in inputs)
    if a.shape[-2:] != (1, 1) or b.shape[-2:] != (1, 1):
        raise _fail(layer, "inputs must be vectors (H and W of size 1)")
    if layer.dot.cosineSimilarity:
        a = a / np.sqrt((a * a).sum(axis=-3, keepdims=True))
        b = b / np.sqrt((b * b).sum(axis=-3, keepdims=True))
    return [_restore((a * b).sum(axis=-3, keepdims=True), inputs[0].ndim)]


# ----------------------------------------------------------------------------- joining, splitting


@register_forward("concat")
def concat(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Classic concat along channels, or along the sequence axis when ``sequenceConcat``."""
    rank = max(x.ndim for x in inputs)
    if layer.concat.sequenceConcat:
        views, axis = [_as_rank5(x) for x in inputs], -5
    else:
        views, axis = [_classic(x) for x in inputs], -3
    try:
        return [_restore(np.concatenate(views, axis=axis), rank)]
    except ValueError as exc:
        raise _fail(layer, f"cannot concatenate: {exc}") from None


@register_forward("concatND")
def concat_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Concat along any axis; ``interleave`` alternates the inputs' slices along that axis."""
    params = layer.concatND
    axis = _axis(layer, params.axis, inputs[0].ndim)
    try:
        if not params.interleave:
            return [np.concatenate(inputs, axis=axis)]
        stacked = np.stack(inputs, axis=axis + 1)
    except ValueError as exc:
        raise _fail(layer, f"cannot concatenate: {exc}") from None
    shape = list(inputs[0].shape)
    shape[axis] *= len(inputs)
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
    axis = _axis(layer, params.axis, x.ndim)
    parts = int(params.numSplits) or len(layer.output)
    points = _split_points(layer, x.shape[axis], [int(s) for s in params.splitSizes], parts)
    return np.split(x, points, axis=axis)


_SLICE_AXES = {0: -3, 1: -2, 2: -1}


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
    rank = x.ndim
    fields = (params.beginIds, params.endIds, params.strides, params.beginMasks, params.endMasks)
    if any(len(f) != rank for f in fields):
        raise _fail(layer, f"begin/end/stride/mask lists must all have length {rank}")
    index = []
    for axis in range(rank):
        begin = None if params.beginMasks[axis] else int(params.beginIds[axis])
        end = None if params.endMasks[axis] else int(params.endIds[axis])
        index.append(slice(begin, end, int(params.strides[axis]) or 1))
    out = x[tuple(index)]
    squeeze = [axis for axis, flag in enumerate(params.squeezeMasks) if flag]
    if squeeze:
        if any(out.shape[axis] != 1 for axis in squeeze):
            raise _fail(layer, "squeezeMasks names an axis whose slice is not of size 1")
        out = out.squeeze(axis=tuple(squeeze))
    return [out]


@register_forward("gather")
def gather(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``np.take`` along ``axis``; negative indices count from the end."""
    data, indices = inputs
    axis = _axis(layer, layer.gather.axis, data.ndim)
    idx = indices.astype(np.int64)
    if idx.size and (idx.min() < -data.shape[axis] or idx.max() >= data.shape[axis]):
        raise _fail(layer, f"index out of range for an axis of size {data.shape[axis]}")
    return [np.take(data, idx, axis=axis)]


# ----------------------------------------------------------------------------- reshaping


@register_forward("reshapeStatic")
def reshape_static(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Reshape to ``targetShape``; a leading 1 there is the batch slot and takes the batch size.

    Files are written for one example, so exporters put 1 in the batch slot; keeping the
    blob's leading axis there lets the same layer run on a mini-batch.
    """
    x = inputs[0]
    target = tuple(int(d) for d in layer.reshapeStatic.targetShape)
    if target[:1] == (1,):
        target = (x.shape[0],) + target[1:]
    try:
        return [x.reshape(target)]
    except ValueError:
        raise _fail(layer, f"cannot reshape {x.shape} to {target}") from None


@register_forward("flattenTo2D")
def flatten_to_2d(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Collapse the axes before ``axis`` into rows and the rest into columns."""
    x = inputs[0]
    axis = layer.flattenTo2D.axis
    if not -x.ndim <= axis <= x.ndim:
        raise _fail(layer, f"axis {axis} is out of range for a rank-{x.ndim} input")
    axis += x.ndim if axis < 0 else 0
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@register_forward("transpose")
def transpose(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    axes = [int(a) for a in layer.transpose.axes]
    if sorted(axes) != list(range(x.ndim)):
        raise _fail(layer, f"axes {axes} are not a permutation of a rank-{x.ndim} input's axes")
    return [x.transpose(axes)]


_PERMUTE_AXES = (0, 2, 3, 4)  # permute's axis i names this axis of (Seq, B, C, H, W)


@register_forward("permute")
def permute(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Permute (Seq, C, H, W) of the rank-5 view; the batch axis stays in place."""
    order = [int(a) for a in layer.permute.axis] or [0, 1, 2, 3]
    if sorted(order) != [0, 1, 2, 3]:
        raise _fail(layer, f"axis {order} is not a permutation of [0, 1, 2, 3]")
    x = inputs[0]
    mapped = [_PERMUTE_AXES[a] for a in order]
    out = _as_rank5(x).transpose([mapped[0], 1, *mapped[1:]])
    return [_restore(out, x.ndim)]


@register_forward("squeeze")
def squeeze(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Drop the listed unit axes (all of them with ``squeezeAll``); rank 1 stays rank 1."""
    params = layer.squeeze
    x = inputs[0]
    if params.squeezeAll:
        axes = [axis for axis, d in enumerate(x.shape) if d == 1]
    else:
        axes = [_axis(layer, int(a), x.ndim) for a in params.axes]
    if any(x.shape[axis] != 1 for axis in axes):
        raise _fail(layer, f"cannot squeeze axes {list(params.axes)} of shape {x.shape}")
    out = x.squeeze(axis=tuple(axes))
    return [out.reshape(1) if out.ndim == 0 else out]


@register_forward("expandDims")
def expand_dims(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Insert unit axes; the listed axes index the output, negative ones from its end."""
    x = inputs[0]
    out_rank = x.ndim + len(layer.expandDims.axes)
    axes = tuple(_axis(layer, int(a), out_rank) for a in layer.expandDims.axes)
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
    if params.mode == 0:
        if h % b or w % b:
            raise _fail(layer, f"blockSize {b} does not divide H={h} and W={w}")
        blocks = view.reshape(*lead, c, h // b, b, w // b, b)
        out = blocks.transpose(*range(n), n + 2, n + 4, n, n + 1, n + 3)
        return [_restore(out.reshape(*lead, c * b * b, h // b, w // b), x.ndim)]
    if c % (b * b):
        raise _fail(layer, f"blockSize^2 = {b * b} does not divide C={c}")
    if params.mode == 1:
        blocks = view.reshape(*lead, b, b, c // (b * b), h, w)
        out = blocks.transpose(*range(n), n + 2, n + 3, n, n + 4, n + 1)
    elif params.mode == 2:
        blocks = view.reshape(*lead, c // (b * b), b, b, h, w)
        out = blocks.transpose(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    else:
        raise _fail(layer, f"unknown reorganization mode {params.mode}")
    return [_restore(out.reshape(*lead, c // (b * b), h * b, w * b), x.ndim)]


@register_forward("sequenceRepeat")
def sequence_repeat(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    reps = int(layer.sequenceRepeat.nRepetitions) or 1
    view = _as_rank5(x)
    return [_restore(np.concatenate([view] * reps, axis=-5), x.ndim)]


# ----------------------------------------------------------------------------- constants, lookups


@register_forward("loadConstant")
def load_constant(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """A ``[C, H, W]`` constant as a batch of one, ``(1, C, H, W)``."""
    shape = tuple(int(d) for d in layer.loadConstant.shape)
    data = weight("data")
    if len(shape) != 3 or math.prod(shape) != data.size:
        raise _fail(layer, f"{data.size} values do not fit shape {shape} (must be [C, H, W])")
    return [data.reshape((1,) + shape)]


@register_forward("loadConstantND")
def load_constant_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    shape = tuple(int(d) for d in layer.loadConstantND.shape)
    data = weight("data")
    if math.prod(shape) != data.size:
        raise _fail(layer, f"{data.size} values do not fit shape {shape}")
    return [data.reshape(shape)]


def _lookup(layer, indices: np.ndarray, table: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Rows of ``table`` (vocab, size) for float class indices, plus an optional bias."""
    idx = indices.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0] or np.any(idx != indices)):
        raise _fail(layer, f"inputs must be whole class indices in [0, {table.shape[0] - 1}]")
    rows = table[idx]
    return rows if bias is None else rows + bias


@register_forward("embedding")
def embedding(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Classic embedding: each example's channel holds one class index."""
    params = layer.embedding
    x = inputs[0]
    view = _classic(x)
    if view.shape[-3:] != (1, 1, 1):
        raise _fail(layer, f"input must hold one index per example, got shape {x.shape}")
    table = weight("weights").reshape(int(params.outputChannels), int(params.inputDim)).T
    rows = _lookup(layer, view[..., 0, 0, 0], table, weight("bias") if params.hasBias else None)
    return [_restore(rows[..., None, None], x.ndim)]


@register_forward("embeddingND")
def embedding_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """ND embedding: the last axis (size 1) of the index tensor becomes ``embeddingSize``."""
    params = layer.embeddingND
    x = inputs[0]
    if x.shape[-1] != 1:
        raise _fail(layer, f"the last axis of the input must be 1, got shape {x.shape}")
    table = weight("weights").reshape(int(params.embeddingSize), int(params.vocabSize)).T
    return [_lookup(layer, x[..., 0], table, weight("bias") if params.hasBias else None)]


# ----------------------------------------------------------------------------- spatial


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
    return [_restore(view[..., top:height - bottom, left:width - right], x.ndim)]


def _interpolate(view: np.ndarray, grid: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``view`` along ``axis`` at fractional positions ``grid``."""
    lo = np.floor(grid).astype(np.int64)
    hi = np.minimum(lo + 1, view.shape[axis] - 1)
    frac = (grid - lo).astype(view.dtype)
    shape = [1] * view.ndim
    shape[axis] = grid.size
    frac = frac.reshape(shape)
    return np.take(view, lo, axis=axis) * (1 - frac) + np.take(view, hi, axis=axis) * frac


def _bilinear(view: np.ndarray, grid_h: np.ndarray, grid_w: np.ndarray) -> np.ndarray:
    return _interpolate(_interpolate(view, grid_h, -2), grid_w, -1)


def _upsample_grid(size_in: int, size_out: int, mode: int) -> np.ndarray:
    """Sample positions for bilinear upsample, per ``linearUpsampleMode`` (builder's formulas)."""
    i = np.arange(size_out, dtype=np.float64)
    if mode == 1:  # ALIGN_CORNERS_TRUE
        grid = i * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    elif mode == 2:  # ALIGN_CORNERS_FALSE
        spacing = size_in / size_out
        grid = i * spacing + 0.5 * spacing - 0.5
    else:  # DEFAULT
        grid = i * ((size_in - size_in / size_out) / (size_out - 1) if size_out > 1 else 0.0)
    return np.clip(grid, 0, size_in - 1)


@register_forward("upsample")
def upsample(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Nearest-neighbour or bilinear upsampling of H and W; fractional factors need bilinear."""
    params = layer.upsample
    x = inputs[0]
    view = _classic(x)
    height, width = view.shape[-2:]
    if params.fractionalScalingFactor:
        if params.mode != 1:
            raise _fail(layer, "fractional scaling factors need BILINEAR mode")
        factors = [float(f) for f in params.fractionalScalingFactor]
    else:
        factors = [int(f) for f in params.scalingFactor] or [1, 1]
    if len(factors) != 2 or min(factors) <= 0:
        raise _fail(layer, f"scaling factors must be two positive numbers, got {factors}")
    if params.mode == 0:
        out = view.repeat(factors[0], axis=-2).repeat(factors[1], axis=-1)
    elif params.mode == 1:
        out_h, out_w = math.floor(height * factors[0]), math.floor(width * factors[1])
        mode = params.linearUpsampleMode
        out = _bilinear(view, _upsample_grid(height, out_h, mode),
                        _upsample_grid(width, out_w, mode))
    else:
        raise _fail(layer, f"unknown interpolation mode {params.mode}")
    return [_restore(out, x.ndim)]


def _sampling_grid(size_in: int, size_out: int, method: int) -> np.ndarray:
    """Sample positions of the spec's ``SamplingMode`` methods."""
    if method == 0 or (method == 1 and size_out > 1):  # (STRICT_)ALIGN_ENDPOINTS
        return np.linspace(0, size_in - 1, size_out)
    if method == 1:
        return np.full(1, (size_in - 1) / 2)
    if method == 2:  # UPSAMPLE_MODE
        grid = np.linspace(0, size_in - size_in / size_out, size_out)
    else:  # ROI_ALIGN_MODE
        spacing = max(1, size_in - 1) / size_out
        grid = 0.5 * spacing + spacing * np.arange(size_out)
    return np.minimum(grid, size_in - 1)


@register_forward("resizeBilinear")
def resize_bilinear(layer, inputs: Blobs, weight: WeightGetter) -> list:
    params = layer.resizeBilinear
    x = inputs[0]
    view = _classic(x)
    out_h, out_w = [int(d) for d in params.targetSize] or [1, 1]
    method = params.mode.samplingMethod
    if method not in (0, 1, 2, 3):
        raise _fail(layer, f"unknown sampling method {method}")
    height, width = view.shape[-2:]
    out = _bilinear(view, _sampling_grid(height, out_h, method), _sampling_grid(width, out_w, method))
    return [_restore(out, x.ndim)]


# ----------------------------------------------------------------------------- LSTM


def lstm_weights(layer) -> dict[str, np.ndarray]:
    """Decode every set ``WeightParams`` of a ``uniDirectionalLSTM``'s ``weightParams``.

    Keys are the ``LSTMWeightParams`` field names (``inputGateWeightMatrix``, …); these are
    the names the LSTM op asks its weight getter for, since the LSTM keeps its weights one
    message deeper than every other layer.
    """
    nested = layer.uniDirectionalLSTM.weightParams
    return {field.name: decode_weights(value, f"layer {layer.name!r} {field.name}")
            for field, value in nested.ListFields()}


def _recurrent_activation(layer, params) -> Callable[[np.ndarray], np.ndarray]:
    """The activations the spec allows inside recurrent layers."""
    kind = params.WhichOneof("NonlinearityType")
    if kind == "sigmoid":
        return lambda v: 1 / (1 + np.exp(-v))
    if kind == "tanh":
        return np.tanh
    if kind == "ReLU":
        return lambda v: np.maximum(v, 0)
    if kind == "linear":
        return lambda v: params.linear.alpha * v + params.linear.beta
    if kind == "scaledTanh":
        return lambda v: params.scaledTanh.alpha * np.tanh(params.scaledTanh.beta * v)
    if kind == "sigmoidHard":
        return lambda v: np.clip(params.sigmoidHard.alpha * v + params.sigmoidHard.beta, 0, 1)
    raise _fail(layer, f"activation {kind!r} is not supported in a recurrent layer")


_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")


@register_forward("uniDirectionalLSTM")
def uni_directional_lstm(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Forward LSTM over the sequence axis of the rank-5 view ``(Seq, B, C, 1, 1)``.

    Inputs ``x[, h0, c0]``; outputs ``y, h, c`` with ``y`` all steps when ``sequenceOutput``.
    Gate pre-activations are clipped to [-50, 50] and the cell to ``cellClipThreshold``
    (50 when 0), peepholes see c_{t-1} for the input/forget gates and c_t for the output gate,
    and ``forgetBias`` adds 1 to the forget gate's bias, all as the spec describes.
    """
    spec = layer.uniDirectionalLSTM
    params = spec.params
    if spec.reverseInput:
        raise _fail(layer, "reverseInput is not supported (forward direction only)")
    if len(spec.activations) != 3:
        raise _fail(layer, f"needs 3 activations [f, g, h], got {len(spec.activations)}")
    f_act, g_act, h_act = (_recurrent_activation(layer, a) for a in spec.activations)
    n_in, n_out = int(spec.inputVectorSize), int(spec.outputVectorSize)
    x = inputs[0]
    seq = _as_rank5(x)
    if seq.shape[2:] != (n_in, 1, 1):
        raise _fail(layer, f"input shape {x.shape} does not hold vectors of size {n_in}")
    steps, batch = seq.shape[:2]
    w_x = np.concatenate([weight(g + "WeightMatrix").reshape(n_out, n_in) for g in _GATES])
    w_h = np.concatenate([weight(g + "RecursionMatrix").reshape(n_out, n_out) for g in _GATES])
    b = (np.concatenate([weight(g + "BiasVector") for g in _GATES]) if params.hasBiasVectors
         else np.zeros(4 * n_out, dtype=np.float32))
    if params.forgetBias:
        b = b + np.repeat(np.array([0, 1, 0, 0], dtype=b.dtype), n_out)
    if params.hasPeepholeVectors:
        p_i, p_f, p_o = (weight(g + "PeepholeVector") for g in ("inputGate", "forgetGate",
                                                                "outputGate"))
    else:
        p_i = p_f = p_o = np.zeros(n_out, dtype=np.float32)
    threshold = params.cellClipThreshold or 50.0
    h = (_as_rank5(inputs[1]).reshape(batch, n_out) if len(inputs) > 1
         else np.zeros((batch, n_out), dtype=x.dtype))
    c = (_as_rank5(inputs[2]).reshape(batch, n_out) if len(inputs) > 2
         else np.zeros((batch, n_out), dtype=x.dtype))
    projected = seq[..., 0, 0] @ w_x.T + b  # (steps, batch, 4 * n_out)
    outputs = []
    for t in range(steps):
        pre_i, pre_f, pre_z, pre_o = np.split(projected[t] + h @ w_h.T, 4, axis=-1)
        gate_i = f_act(np.clip(pre_i + p_i * c, -50, 50))
        block = g_act(np.clip(pre_z, -50, 50))
        if params.coupledInputAndForgetGate:
            c = c * (1 - gate_i) + gate_i * block
        else:
            c = c * f_act(np.clip(pre_f + p_f * c, -50, 50)) + gate_i * block
        c = np.clip(c, -threshold, threshold)
        h = h_act(c) * f_act(np.clip(pre_o + p_o * c, -50, 50))
        outputs.append(h)
    y = np.stack(outputs) if params.sequenceOutput else h[None]
    results = [y, h[None], c[None]]
    return [_restore(v[..., None, None], x.ndim) for v in results[: len(layer.output)]]
