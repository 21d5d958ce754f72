"""Elementwise layers: classic n-ary (add, multiply, ...), broadcastable ND, scale, bias,
unary functions, erf, the parameter-free ND functions, dot; with the broadcast size estimate."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from ..._proto import NeuralNetwork_pb2 as nn_pb
from ..registry import WeightGetter, register_estimate, register_forward
from .common import Blobs, _broadcast, _classic, _fail, _param, _restore, _same_rank

Unary = nn_pb.UnaryFunctionLayerParams


_CLASSIC_REDUCERS: dict[str, Callable] = {
    "add": np.add,
    "multiply": np.multiply,
    "max": np.maximum,
    "min": np.minimum,
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
    # the remainder takes the divisor's sign (numpy/Python/torch.remainder); the proto does not
    # say, and MIL's ``mod``, which coremltools lowers to this layer, is defined that way
    "modBroadcastable": np.mod,
    "floorDivBroadcastable": np.floor_divide,
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
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "asinh": np.arcsinh,
    "acosh": np.arccosh,
    "atanh": np.arctanh,
    "exp2": np.exp2,
    "ceil": np.ceil,
    "floor": np.floor,
    "round": np.round,
    "sign": np.sign,
}


@register_forward(*_ELEMENTWISE)
def parameter_free(layer, inputs: Blobs, weight: WeightGetter) -> list:
    return [_ELEMENTWISE[layer.WhichOneof("layer")](inputs[0]).astype(inputs[0].dtype)]


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


@register_estimate(
    "add",
    "multiply",
    "average",
    "max",
    "min",
    "addBroadcastable",
    "subtractBroadcastable",
    "multiplyBroadcastable",
    "divideBroadcastable",
    "maxBroadcastable",
    "minBroadcastable",
    "powBroadcastable",
    "modBroadcastable",
    "floorDivBroadcastable",
)
def broadcast_size(layer, inputs) -> int:
    try:
        shape = np.broadcast_shapes(*(x.shape[1:] for x in inputs))
    except ValueError:
        return 0  # the op reports the mismatch itself
    return math.prod(shape)
