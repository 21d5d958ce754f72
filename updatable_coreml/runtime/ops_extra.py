"""Forward ops of the reference runtime beyond the core set.

Semantics follow the comments of Apple's ``NeuralNetwork.proto``; where the spec is silent, the
choice and its source are written on the op. Blob conventions are those of ``registry``:

* Classic (rank-5) layers see their input through :func:`_classic` as ``(..., C, H, W)``: a
  ``(B, C)`` vector blob is ``(B, C, 1, 1)`` (as ``ops_core`` reads it), a ``(B, H, W)`` blob
  (a rank-2 tensor from an ND layer) is ``(B, 1, H, W)``, and from rank 4 up the leading axes
  are batch-like.
* A sequence travels batch first, ``(B, Seq, C, H, W)``, the layout ``ops_core`` uses; layers
  that act on Core ML's sequence axis see every blob that way (:func:`_with_sequence`).
* :func:`_restore` drops the axes a view added, so a layer keeps its input's rank whenever
  the result allows it.
* ND layers (names ending in ``ND``, ``Static``, ``Broadcastable``, transpose, squeeze, …)
  see Core ML's tensor behind the batch axis: the runtime gives every input the blob
  ``(B, *declared shape)`` in either shape mapping, so a per-example Core ML tensor of rank r
  is a blob of rank r + 1. Axes, shapes and per-axis lists in the file describe the Core ML
  tensor; :func:`_nd_axis` moves them past the batch axis, and constants get a batch of one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .._proto import NeuralNetwork_pb2 as nn_pb
from ..errors import RuntimeLayerError
from .registry import WeightGetter, register_forward

Blobs = Sequence[np.ndarray]
Unary = nn_pb.UnaryFunctionLayerParams
Reduce = nn_pb.ReduceLayerParams
Slice = nn_pb.SliceLayerParams
Reorganize = nn_pb.ReorganizeDataLayerParams
Upsample = nn_pb.UpsampleLayerParams
Sampling = nn_pb.SamplingMode
Gelu = nn_pb.GeluLayerParams


# ----------------------------------------------------------------------------- shared helpers


def _fail(layer, what: str) -> RuntimeLayerError:
    return RuntimeLayerError(f"layer {layer.name!r} ({layer.WhichOneof('layer')}): {what}")


def _classic(x: np.ndarray) -> np.ndarray:
    """View a blob as ``(..., C, H, W)``; see the module docstring."""
    if x.ndim == 3:
        return x[:, None]
    return x.reshape(x.shape + (1,) * (4 - x.ndim)) if x.ndim < 4 else x


def _with_sequence(layer, x: np.ndarray) -> np.ndarray:
    """View a blob as ``(B, Seq, C, H, W)``; blobs without a sequence axis have Seq = 1."""
    view = _classic(x)
    if view.ndim == 4:
        return view[:, None]
    if view.ndim != 5:
        raise _fail(layer, f"needs a (B, C), (B, C, H, W) or (B, Seq, C, H, W) blob, got {x.shape}")
    return view


def _restore(y: np.ndarray, rank: int) -> np.ndarray:
    """Undo :func:`_classic` / :func:`_with_sequence` where the result has unit axes there."""
    if rank < 5 and y.ndim == 5 and y.shape[1] == 1:
        y = y[:, 0]
    if rank == 3 and y.ndim == 4 and y.shape[1] == 1:
        y = y[:, 0]
    if rank < 3 and y.ndim == 4 and all(d == 1 for d in y.shape[rank:]):
        y = y.reshape(y.shape[:rank])
    return y


def _nd_axis(layer, axis: int, rank: int) -> int:
    """Blob axis of Core ML axis ``axis`` (negative counts from the end) of a rank-``rank``
    per-example tensor, i.e. one past it for the batch axis; refuses an axis outside it."""
    if not -rank <= axis < rank:
        raise _fail(layer, f"axis {axis} is out of range for a rank-{rank} tensor")
    return axis % rank + 1


def _same_rank(blobs: Blobs) -> list[np.ndarray]:
    """Give ND blobs one rank by inserting unit axes right after the batch axis.

    Core ML broadcasts ND tensors aligned at their last axis; the batch axis must stay first.
    """
    rank = max(b.ndim for b in blobs)
    return [b.reshape(b.shape[:1] + (1,) * (rank - b.ndim) + b.shape[1:]) for b in blobs]


def _common_batch(layer, blobs: Blobs) -> list[np.ndarray]:
    """Repeat batch-of-one blobs (loaded constants) to the batch of the others."""
    batch = max(len(b) for b in blobs)
    if any(len(b) not in (1, batch) for b in blobs):
        raise _fail(layer, f"inputs have different batch sizes {[len(b) for b in blobs]}")
    return [np.broadcast_to(b, (batch,) + b.shape[1:]) for b in blobs]


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
    """Classic n-ary elementwise ops; a lone input to add/multiply gets ``+alpha`` / ``*alpha``."""
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
    """ND binary ops with NumPy broadcasting of the Core ML tensors, applied left to right."""
    if len(inputs) < 2:
        raise _fail(layer, f"needs 2 inputs, got {len(inputs)}")
    blobs = _same_rank(inputs)
    _broadcast(layer, blobs)
    return [functools.reduce(_BROADCASTABLE[layer.WhichOneof("layer")], blobs)]


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
    Unary.SQRT: lambda x, alpha, eps: np.sqrt(x),
    Unary.RSQRT: lambda x, alpha, eps: 1 / np.sqrt(x + eps),
    Unary.INVERSE: lambda x, alpha, eps: 1 / (x + eps),
    Unary.POWER: lambda x, alpha, eps: np.power(x, alpha),
    Unary.EXP: lambda x, alpha, eps: np.exp(x),
    # The spec writes log(x); coremltools' MIL backend passes its log epsilon into this
    # field with the documented meaning log(x + epsilon), so that is what we do.
    Unary.LOG: lambda x, alpha, eps: np.log(x + eps),
    Unary.ABS: lambda x, alpha, eps: np.abs(x),
    Unary.THRESHOLD: lambda x, alpha, eps: np.maximum(x, alpha),
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


def _erf(x: np.ndarray) -> np.ndarray:
    """Elementwise erf, exact to double precision (NumPy has none; SciPy is no dependency)."""
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


@register_forward("erf")
def erf(layer, inputs: Blobs, weight: WeightGetter) -> list:
    return [_erf(inputs[0])]


#: Parameter-free elementwise ND layers (coremltools emits them for torch/TF math ops).
_ELEMENTWISE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "asinh": np.arcsinh,
    "acosh": np.arccosh, "atanh": np.arctanh, "exp2": np.exp2, "ceil": np.ceil,
    "floor": np.floor, "round": np.round, "sign": np.sign,
}


@register_forward(*_ELEMENTWISE)
def parameter_free(layer, inputs: Blobs, weight: WeightGetter) -> list:
    return [_ELEMENTWISE[layer.WhichOneof("layer")](inputs[0]).astype(inputs[0].dtype)]


_GELU: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    Gelu.EXACT: lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    Gelu.TANH_APPROXIMATION: lambda x: 0.5 * x * (
        1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    Gelu.SIGMOID_APPROXIMATION: lambda x: x / (1 + np.exp(-1.702 * x)),
}


@register_forward("gelu")
def gelu(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """GELU, exact or with the tanh / sigmoid(1.702 x) approximation the mode names."""
    fn = _GELU.get(layer.gelu.mode)
    if fn is None:
        raise _fail(layer, f"unknown GELU mode {layer.gelu.mode}")
    return [fn(inputs[0])]


# ----------------------------------------------------------------------------- normalisation


@register_forward("softmaxND")
def softmax_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    return [_softmax(x, _nd_axis(layer, layer.softmaxND.axis, x.ndim - 1))]


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


# ----------------------------------------------------------------------------- reshaping


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
    """The constant as a batch of one, ``(1, *shape)``."""
    shape = tuple(int(d) for d in layer.loadConstantND.shape)
    data = weight("data")
    if math.prod(shape) != data.size:
        raise _fail(layer, f"{data.size} values do not fit shape {shape}")
    return [data.reshape((1,) + shape)]


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
    if mode == Upsample.ALIGN_CORNERS_TRUE:
        grid = i * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    elif mode == Upsample.ALIGN_CORNERS_FALSE:
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
        if params.mode != Upsample.BILINEAR:
            raise _fail(layer, "fractional scaling factors need BILINEAR mode")
        factors = [float(f) for f in params.fractionalScalingFactor]
    else:
        factors = [int(f) for f in params.scalingFactor] or [1, 1]
    if len(factors) != 2 or min(factors) <= 0:
        raise _fail(layer, f"scaling factors must be two positive numbers, got {factors}")
    if params.mode == Upsample.NN:
        out = view.repeat(factors[0], axis=-2).repeat(factors[1], axis=-1)
    elif params.mode == Upsample.BILINEAR:
        out_h, out_w = math.floor(height * factors[0]), math.floor(width * factors[1])
        mode = params.linearUpsampleMode
        out = _bilinear(view, _upsample_grid(height, out_h, mode),
                        _upsample_grid(width, out_w, mode))
    else:
        raise _fail(layer, f"unknown interpolation mode {params.mode}")
    return [_restore(out, x.ndim)]


def _sampling_grid(size_in: int, size_out: int, method: int) -> np.ndarray:
    """Sample positions of the spec's ``SamplingMode`` methods."""
    if method == Sampling.STRICT_ALIGN_ENDPOINTS_MODE or (
            method == Sampling.ALIGN_ENDPOINTS_MODE and size_out > 1):
        return np.linspace(0, size_in - 1, size_out)
    if method == Sampling.ALIGN_ENDPOINTS_MODE:
        return np.full(1, (size_in - 1) / 2)
    if method == Sampling.UPSAMPLE_MODE:
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
    if method not in Sampling.Method.values():
        raise _fail(layer, f"unknown sampling method {method}")
    height, width = view.shape[-2:]
    grid_h, grid_w = _sampling_grid(height, out_h, method), _sampling_grid(width, out_w, method)
    out = _bilinear(view, grid_h, grid_w)
    return [_restore(out, x.ndim)]


# ----------------------------------------------------------------------------- LSTM

#: The spec's gate field prefixes, in the order the stacked (4H, ...) matrices below use.
LSTM_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")
_PEEPHOLES = ("inputGate", "forgetGate", "outputGate")
#: Core ML clips every gate pre-activation to [-50, 50], and the cell to ``cellClipThreshold``
#: (50 when 0), as the spec's LSTM equations say.
CLIP = 50.0


@dataclass(frozen=True)
class Recurrent:
    """An activation of a recurrent layer with its derivative, given input ``v`` and output ``y``
    (backpropagation needs both: sigmoid/tanh are cheapest from ``y``, ReLU needs ``v``)."""

    fn: Callable[[np.ndarray], np.ndarray]
    slope: Callable[[np.ndarray, np.ndarray], np.ndarray]


def recurrent_activation(layer, params) -> Recurrent:
    """The activations the spec allows inside recurrent layers."""
    kind = params.WhichOneof("NonlinearityType")
    if kind == "sigmoid":
        return Recurrent(lambda v: 1 / (1 + np.exp(-v)), lambda v, y: y * (1 - y))
    if kind == "tanh":
        return Recurrent(np.tanh, lambda v, y: 1 - y * y)
    if kind == "ReLU":
        return Recurrent(lambda v: np.maximum(v, 0), lambda v, y: (v > 0).astype(v.dtype))
    if kind == "linear":
        a, b = params.linear.alpha, params.linear.beta
        return Recurrent(lambda v: a * v + b, lambda v, y: np.full_like(v, a))
    if kind == "scaledTanh":
        a, b = params.scaledTanh.alpha, params.scaledTanh.beta
        return Recurrent(lambda v: a * np.tanh(b * v), lambda v, y: a * b * (1 - np.tanh(b * v) ** 2))
    if kind == "sigmoidHard":
        a, b = params.sigmoidHard.alpha, params.sigmoidHard.beta
        return Recurrent(lambda v: np.clip(a * v + b, 0, 1),
                         lambda v, y: a * ((a * v + b > 0) & (a * v + b < 1)).astype(v.dtype))
    raise _fail(layer, f"activation {kind!r} is not supported in a recurrent layer")


def lstm_activations(layer) -> tuple[Recurrent, Recurrent, Recurrent]:
    """The spec's ``[f, g, h]``: gates, block input, cell output."""
    activations = layer.uniDirectionalLSTM.activations
    if len(activations) != 3:
        raise _fail(layer, f"needs 3 activations [f, g, h], got {len(activations)}")
    gate, block, out = (recurrent_activation(layer, a) for a in activations)
    return gate, block, out


@dataclass(frozen=True)
class LSTMWeights:
    """A uniDirectionalLSTM's weights with the gates stacked in ``LSTM_GATES`` order."""

    w_x: np.ndarray  # (4H, D)
    w_h: np.ndarray  # (4H, H)
    b: np.ndarray  # (4H,), forgetBias included
    peepholes: tuple[np.ndarray, np.ndarray, np.ndarray]  # input, forget, output gate (H,)


def lstm_weights(layer, weight: WeightGetter, dtype) -> LSTMWeights:
    """Read the weights one message deeper than other layers keep them, by dotted name."""
    spec = layer.uniDirectionalLSTM
    params = spec.params
    n_in, n_out = int(spec.inputVectorSize), int(spec.outputVectorSize)

    def nested(name: str) -> np.ndarray:
        return weight("weightParams." + name)

    w_x = np.concatenate([nested(g + "WeightMatrix").reshape(n_out, n_in) for g in LSTM_GATES])
    w_h = np.concatenate([nested(g + "RecursionMatrix").reshape(n_out, n_out) for g in LSTM_GATES])
    b = (np.concatenate([nested(g + "BiasVector") for g in LSTM_GATES]) if params.hasBiasVectors
         else np.zeros(4 * n_out, dtype=dtype))
    if params.forgetBias:
        b = b + np.repeat(np.array([0, 1, 0, 0], dtype=b.dtype), n_out)
    zeros = np.zeros(n_out, dtype=dtype)
    peepholes = (tuple(nested(g + "PeepholeVector") for g in _PEEPHOLES)
                 if params.hasPeepholeVectors else (zeros, zeros, zeros))
    return LSTMWeights(w_x, w_h, b, peepholes)


def lstm_trainable_fields(layer) -> list[str]:
    """Dotted names of the weights an updatable LSTM trains: the 8 matrices and, when present,
    the 4 bias vectors (peepholes are refused by the backward op)."""
    fields = [g + kind for kind in ("WeightMatrix", "RecursionMatrix") for g in LSTM_GATES]
    if layer.uniDirectionalLSTM.params.hasBiasVectors:
        fields += [g + "BiasVector" for g in LSTM_GATES]
    return ["weightParams." + f for f in fields]


def lstm_sequence(layer, x: np.ndarray) -> np.ndarray:
    """The ``(B, Seq, D)`` vectors of an LSTM input blob (see :func:`_with_sequence`)."""
    seq = _with_sequence(layer, x)
    n_in = int(layer.uniDirectionalLSTM.inputVectorSize)
    if seq.shape[2:] != (n_in, 1, 1):
        raise _fail(layer, f"input shape {x.shape} does not hold vectors of size {n_in}")
    return seq[..., 0, 0]


@dataclass(frozen=True)
class LSTMTrace:
    """Every step of a forward run, ``(B, Seq, ...)``: what backpropagation through time reads.

    ``z`` are the clipped gate pre-activations and ``gates`` their activations, both
    ``(B, Seq, 4, H)`` in ``LSTM_GATES`` order (with a coupled gate, the forget slot holds
    ``1 - i``); ``*_open`` mark where a clip let the value through (gradient 1, else 0).
    """

    z: np.ndarray
    z_open: np.ndarray
    gates: np.ndarray
    c: np.ndarray
    c_open: np.ndarray
    hc: np.ndarray  # h(c), the cell output activation
    h: np.ndarray


def lstm_run(layer, seq: np.ndarray, weights: LSTMWeights, h: np.ndarray, c: np.ndarray) -> LSTMTrace:
    """Run the spec's LSTM equations over ``seq`` (B, Seq, D) from states ``h``, ``c`` (B, H)."""
    params = layer.uniDirectionalLSTM.params
    gate_act, block_act, out_act = lstm_activations(layer)
    p_i, p_f, p_o = weights.peepholes
    threshold = params.cellClipThreshold or CLIP
    batch, steps = seq.shape[:2]
    projected = (seq @ weights.w_x.T + weights.b).reshape(batch, steps, 4, -1)
    record: dict[str, list] = {name: [] for name in LSTMTrace.__dataclass_fields__}
    for t in range(steps):
        raw = projected[:, t] + (h @ weights.w_h.T).reshape(batch, 4, -1)
        raw[:, 0] += p_i * c
        if not params.coupledInputAndForgetGate:
            raw[:, 1] += p_f * c
        z = np.clip(raw, -CLIP, CLIP)
        gate_i, block = gate_act.fn(z[:, 0]), block_act.fn(z[:, 2])
        forget = 1 - gate_i if params.coupledInputAndForgetGate else gate_act.fn(z[:, 1])
        c_raw = c * forget + gate_i * block
        c = np.clip(c_raw, -threshold, threshold)
        raw[:, 3] += p_o * c  # the output gate's peephole sees the new cell
        z[:, 3] = np.clip(raw[:, 3], -CLIP, CLIP)
        gate_o = gate_act.fn(z[:, 3])
        hc = out_act.fn(c)
        h = hc * gate_o
        for name, value in (("z", z), ("z_open", np.abs(raw) < CLIP),
                            ("gates", np.stack([gate_i, forget, block, gate_o], axis=1)),
                            ("c", c), ("c_open", np.abs(c_raw) < threshold), ("hc", hc), ("h", h)):
            record[name].append(value)
    return LSTMTrace(**{name: np.stack(values, axis=1) for name, values in record.items()})


@register_forward("uniDirectionalLSTM")
def uni_directional_lstm(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Forward LSTM over the sequence axis of the ``(B, Seq, C, 1, 1)`` view.

    Inputs ``x[, h0, c0]``; outputs ``y, h, c`` with ``y`` all steps when ``sequenceOutput``.
    Gate pre-activations are clipped to [-50, 50] and the cell to ``cellClipThreshold``
    (50 when 0), peepholes see c_{t-1} for the input/forget gates and c_t for the output gate,
    and ``forgetBias`` adds 1 to the forget gate's bias, all as the spec describes.
    """
    spec = layer.uniDirectionalLSTM
    if spec.reverseInput:
        raise _fail(layer, "reverseInput is not supported (forward direction only)")
    x = inputs[0]
    seq = lstm_sequence(layer, x)
    n_out = int(spec.outputVectorSize)
    h0, c0 = (inputs[k].reshape(len(seq), n_out) if len(inputs) > k
              else np.zeros((len(seq), n_out), dtype=x.dtype) for k in (1, 2))
    trace = lstm_run(layer, seq, lstm_weights(layer, weight, x.dtype), h0, c0)
    y = trace.h if spec.params.sequenceOutput else trace.h[:, -1:]
    return [_restore(v[..., None, None], x.ndim) for v in (y, trace.h[:, -1:], trace.c[:, -1:])]
