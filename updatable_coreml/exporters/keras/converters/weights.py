"""Layers with weights: Dense, the convolutions, batch normalization."""

from __future__ import annotations

import numpy as np

from ....errors import NotUpdatableError, UnsupportedError
from ..activations import _with_activation
from ..context import Context, LayerCall, Tensor, _channels_last, _numpy, _source, converts


@converts("Dense")
def _dense(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    if getattr(layer, "quantization_mode", None):
        raise UnsupportedError(
            f"layer {layer.name!r}: quantized Dense ({layer.quantization_mode}) "
            "cannot be exported; export the float model"
        )
    kernel = _numpy(layer.kernel)
    weights = {"weight": np.ascontiguousarray(kernel.T)}
    if layer.use_bias:
        weights["bias"] = _numpy(layer.bias)
    if len(x.shape) == 2 and ctx.trains(layer):  # a sequence (steps, C)
        raise NotUpdatableError(
            f"layer {layer.name!r}: a Dense applied to every step of a sequence cannot "
            "train on device (whether Core ML updates an innerProduct over a sequence "
            "is unknown: we found no Apple test or document on it); freeze it, or train a "
            "Dense after the sequence is pooled"
        )
    if len(x.shape) in (1, 2):  # a vector, or a sequence: the same Dense on every step
        op, attrs = "dense", {}
    elif len(x.shape) == 3:  # Dense on (H, W, C) acts per pixel: a 1x1 convolution
        op, attrs = "conv2d", {"strides": (1, 1), "padding": "valid"}
        weights["weight"] = weights["weight"][:, :, None, None]
    else:
        raise UnsupportedError(
            f"layer {layer.name!r}: Dense on a rank-{len(x.shape)} input {x.shape} is not supported"
        )

    def build(output):
        return ctx.add(
            op,
            layer.name,
            [x],
            attrs=attrs,
            weights=weights,
            trainable=ctx.trains(layer),
            source=_source(layer),
            output=output,
        )

    return _with_activation(ctx, layer, build, call.out_shape)


def _conv_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras kernel (kh, kw, in, out) -> IR weight (out, in, kh, kw).

    Done as two cache-friendly transposes: a direct 4-D transpose is ~3x slower on
    ResNet-sized kernels, and export time is dominated by moving weights.
    """
    kh, kw, cin, cout = kernel.shape
    per_tap = np.ascontiguousarray(kernel.reshape(kh * kw, cin, cout).transpose(0, 2, 1))
    return np.ascontiguousarray(per_tap.reshape(kh * kw, cout * cin).T).reshape(cout, cin, kh, kw)


def _conv_attrs(layer, where: str) -> dict:
    _channels_last(layer)
    if layer.padding not in ("valid", "same"):
        raise UnsupportedError(f"{where}: padding={layer.padding!r} is not supported")
    return {
        "strides": tuple(layer.strides),
        "dilations": tuple(layer.dilation_rate),
        "padding": layer.padding,
    }


def _conv_node(ctx: Context, layer, x: Tensor, groups: int, weight: np.ndarray, out_shape):
    """One Keras convolution (plain or depthwise) as an IR conv2d, activation fused after."""
    attrs = {**_conv_attrs(layer, f"layer {layer.name!r}"), "groups": groups}
    weights = {"weight": weight}
    if layer.use_bias:
        weights["bias"] = _numpy(layer.bias)

    def build(output):
        return ctx.add(
            "conv2d",
            layer.name,
            [x],
            attrs=attrs,
            weights=weights,
            trainable=ctx.trains(layer),
            source=_source(layer),
            output=output,
        )

    return _with_activation(ctx, layer, build, out_shape)


@converts("Conv2D")
def _conv2d(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    return _conv_node(
        ctx, layer, x, int(layer.groups), _conv_weight(_numpy(layer.kernel)), call.out_shape
    )


def _depthwise_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras depthwise kernel (kh, kw, C, M) -> grouped conv weight (C*M, 1, kh, kw);
    output channel c*M + m reads input channel c, as Keras orders them."""
    kh, kw, channels, multiplier = kernel.shape
    return np.ascontiguousarray(
        kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)
    )


@converts("DepthwiseConv2D")
def _depthwise(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    return _conv_node(
        ctx, layer, x, x.shape[0], _depthwise_weight(_numpy(layer.kernel)), call.out_shape
    )


@converts("SeparableConv2D")
def _separable(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    attrs = {**_conv_attrs(layer, f"layer {layer.name!r}"), "groups": x.shape[0]}
    depthwise = _depthwise_weight(_numpy(layer.depthwise_kernel))
    trains = ctx.trains(layer)
    mid = ctx.add(
        "conv2d",
        f"{layer.name}_depthwise",
        [x],
        attrs=attrs,
        weights={"weight": depthwise},
        trainable=trains,
        source=_source(layer),
    )
    mid_shape = (depthwise.shape[0], *call.out_shape[1:])
    pointwise = {"weight": _conv_weight(_numpy(layer.pointwise_kernel))}
    if layer.use_bias:
        pointwise["bias"] = _numpy(layer.bias)

    def build(output):
        return ctx.add(
            "conv2d",
            layer.name,
            [Tensor(mid, mid_shape)],
            weights=pointwise,
            attrs={"strides": (1, 1), "padding": "valid"},
            trainable=trains,
            source=_source(layer),
            output=output,
        )

    return _with_activation(ctx, layer, build, call.out_shape)


@converts("BatchNormalization")
def _batchnorm(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    rank = len(x.shape)
    axis = layer.axis if layer.axis >= 0 else layer.axis + rank + 1
    if axis != rank:
        raise UnsupportedError(
            f"layer {layer.name!r}: batch normalization over axis {layer.axis} "
            "is not supported; normalize the channel (last) axis"
        )
    if rank == 2:
        raise UnsupportedError(
            f"layer {layer.name!r}: batch normalization of sequences is not supported"
        )
    channels = x.shape[0]
    weights = {
        "gamma": _numpy(layer.gamma) if layer.scale else np.ones(channels, np.float32),
        "beta": _numpy(layer.beta) if layer.center else np.zeros(channels, np.float32),
        "mean": _numpy(layer.moving_mean),
        "variance": _numpy(layer.moving_variance),
    }
    return ctx.add(
        "batchnorm",
        layer.name,
        [x],
        attrs={"eps": float(layer.epsilon)},
        weights=weights,
        trainable=ctx.trains(layer),
        source=_source(layer),
    )
