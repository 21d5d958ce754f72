"""Normalizations: batchnorm (forward, backward), l2normalize, mvn, lrn."""

from __future__ import annotations

import numpy as np

from ..registry import WeightGetter, register_backward, register_forward
from .common import Blobs, _classic, _fail, _restore, from_nchw, to_nchw


def batchnorm_stats_axes(params) -> tuple[int, ...] | None:
    """Axes of ``(N, C, H, W)`` the layer computes mean/variance over, or None (stored stats)."""
    if not params.computeMeanVar:
        return None
    return (2, 3) if params.instanceNormalization else (0, 2, 3)


def batchnorm_parts(params, x4: np.ndarray, weight: WeightGetter):
    """(mean, inverse std, gamma) shaped to broadcast over ``x4``."""
    eps = params.epsilon or 1e-5
    axes = batchnorm_stats_axes(params)
    if axes is None:
        mean = weight("mean").reshape(-1, 1, 1)
        var = weight("variance").reshape(-1, 1, 1)
    else:
        mean = x4.mean(axis=axes, keepdims=True)
        var = x4.var(axis=axes, keepdims=True)
    return mean, 1.0 / np.sqrt(var + eps), weight("gamma").reshape(-1, 1, 1)


@register_forward("batchnorm")
def batchnorm(layer, inputs, weight):
    params = layer.batchnorm
    x4 = to_nchw(inputs[0])
    mean, inv_std, gamma = batchnorm_parts(params, x4, weight)
    y = (x4 - mean) * (inv_std * gamma) + weight("beta").reshape(-1, 1, 1)
    return [from_nchw(y.astype(x4.dtype, copy=False), inputs[0])]


@register_backward("batchnorm")
def batchnorm_backward(layer, x, y, gy, weight, want_input):
    """Inference-mode stats give a per-channel scale; batch/instance stats the full formula."""
    if not want_input:
        return None, {}
    params = layer.batchnorm
    x4, g4 = to_nchw(x), to_nchw(gy)
    mean, inv_std, gamma = batchnorm_parts(params, x4, weight)
    axes = batchnorm_stats_axes(params)
    dxhat = g4 * gamma
    if axes is None:
        return (dxhat * inv_std).reshape(x.shape), {}
    xhat = (x4 - mean) * inv_std
    dx = inv_std * (
        dxhat
        - dxhat.mean(axis=axes, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)
    )
    return dx.astype(x.dtype, copy=False).reshape(x.shape), {}


@register_forward("l2normalize")
def l2normalize(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Divide by the L2 norm over C, H and W of each example."""
    x = inputs[0]
    view = _classic(x)
    norm = np.sqrt(
        (view * view).sum(axis=(-3, -2, -1), keepdims=True) + (layer.l2normalize.epsilon or 1e-6)
    )
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
    window = sum(squares[..., k : k + channels, :, :] for k in range(size))
    out = view / np.power((params.k or 1.0) + params.alpha / size * window, params.beta)
    return [_restore(out, x.ndim)]


@register_forward("layerNormalization")
def layer_normalization(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` with mean and (population) variance over
    the last ``len(normalizedShape)`` axes of each example (NeuralNetwork.proto
    ``LayerNormalizationLayerParams``)."""
    params = layer.layerNormalization
    x = inputs[0]
    shape = tuple(int(d) for d in params.normalizedShape)
    if not shape or x.shape[x.ndim - len(shape) :] != shape or len(shape) >= x.ndim:
        raise _fail(
            layer, f"normalizedShape {list(shape)} is not the end of the input shape {x.shape[1:]}"
        )
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    gamma, beta = weight("gamma"), weight("beta")
    size = int(np.prod(shape))
    gamma = gamma.reshape(shape) if gamma.size == size else np.ones(shape, x.dtype)
    beta = beta.reshape(shape) if beta.size == size else np.zeros(shape, x.dtype)
    return [(gamma * (x - mean) / np.sqrt(var + params.eps) + beta).astype(x.dtype, copy=False)]
