"""Activations: the classic ``activation`` layer (forward; backward for the kinds Core ML
trains through), softmax and softmaxND, gelu, clip."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..._proto import NeuralNetwork_pb2 as nn_pb
from ..registry import WeightGetter, register_backward, register_forward
from .common import Blobs, _fail, _nd_axis, channel_shape
from .elementwise import _erf

Gelu = nn_pb.GeluLayerParams


# The first argument is the layer's protobuf parameters (no stubs: Any).
Activation = Callable[[Any, np.ndarray, WeightGetter], np.ndarray]


ACTIVATIONS: dict[str, Activation] = {}


def _activation(name: str) -> Callable[[Activation], Activation]:
    def decorate(fn: Activation) -> Activation:
        ACTIVATIONS[name] = fn
        return fn

    return decorate


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function via tanh: no overflow warnings for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


_activation("linear")(lambda p, x, w: p.alpha * x + p.beta)
_activation("ReLU")(lambda p, x, w: np.maximum(x, 0))
_activation("leakyReLU")(lambda p, x, w: np.where(x >= 0, x, p.alpha * x))
_activation("thresholdedReLU")(lambda p, x, w: np.where(x >= p.alpha, x, 0))
_activation("tanh")(lambda p, x, w: np.tanh(x))
_activation("scaledTanh")(lambda p, x, w: p.alpha * np.tanh(p.beta * x))
_activation("sigmoid")(lambda p, x, w: sigmoid(x))
_activation("sigmoidHard")(lambda p, x, w: np.clip(p.alpha * x + p.beta, 0, 1))
_activation("ELU")(lambda p, x, w: np.where(x >= 0, x, p.alpha * np.expm1(np.minimum(x, 0))))
_activation("softsign")(lambda p, x, w: x / (1 + np.abs(x)))
_activation("softplus")(lambda p, x, w: np.logaddexp(0, x))


@_activation("PReLU")
def _prelu(p, x, weight):
    return np.where(x >= 0, x, channel_shape(weight("PReLU.alpha"), x) * x)


@_activation("parametricSoftplus")
def _parametric_softplus(p, x, weight):
    alpha = channel_shape(weight("parametricSoftplus.alpha"), x)
    beta = channel_shape(weight("parametricSoftplus.beta"), x)
    return alpha * np.logaddexp(0, beta * x)


@register_forward("activation")
def activation(layer, inputs, weight):
    params = layer.activation
    kind = params.WhichOneof("NonlinearityType")
    if kind not in ACTIVATIONS:
        raise ValueError(f"unknown activation {kind!r}")
    x = inputs[0]
    return [np.asarray(ACTIVATIONS[kind](getattr(params, kind), x, weight), dtype=x.dtype)]


@register_backward("activation")
def activation_backward(layer, x, y, gy, weight, want_input):
    if not want_input:
        return None, {}
    kind = layer.activation.WhichOneof("NonlinearityType")
    if kind == "ReLU":
        return gy * (x > 0), {}
    if kind == "sigmoid":
        return gy * y * (1 - y), {}
    return gy * (1 - y * y), {}


def softmax_axis(x: np.ndarray) -> int:
    """Classic softmax normalizes axis -3 of each example, or the whole rank-1 vector."""
    if x.ndim == 2:
        return 1
    if x.ndim >= 4:
        return x.ndim - 3
    raise ValueError(f"softmax needs a rank-1 or rank>=3 input per example, got {x.shape[1:]}")


@register_forward("softmax")
def softmax(layer, inputs, weight):
    x = inputs[0]
    axis = softmax_axis(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [e / e.sum(axis=axis, keepdims=True)]


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


@register_forward("softmaxND")
def softmax_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    x = inputs[0]
    return [_softmax(x, _nd_axis(layer, layer.softmaxND.axis, x.ndim - 1))]


_GELU: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    Gelu.EXACT: lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    Gelu.TANH_APPROXIMATION: lambda x: (
        0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    ),
    Gelu.SIGMOID_APPROXIMATION: lambda x: x / (1 + np.exp(-1.702 * x)),
}


@register_forward("gelu")
def gelu(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """GELU, exact or with the tanh / sigmoid(1.702 x) approximation the mode names."""
    fn = _GELU.get(layer.gelu.mode)
    if fn is None:
        raise _fail(layer, f"unknown GELU mode {layer.gelu.mode}")
    return [fn(inputs[0])]


@register_forward("clip")
def clip(layer, inputs: Blobs, weight: WeightGetter) -> list:
    return [np.clip(inputs[0], layer.clip.minVal, layer.clip.maxVal)]


@register_forward("clampedReLU")
def clamped_relu(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``min(beta, x)`` for ``x >= 0``, else ``min(beta, alpha * x)`` (NeuralNetwork.proto)."""
    params = layer.clampedReLU
    x = inputs[0]
    return [np.minimum(params.beta, np.where(x >= 0, x, params.alpha * x)).astype(x.dtype)]
