"""Layers over time: Conv1D and the 1-D poolings, as Core ML ``convolution`` and ``pooling``
with the steps on the width axis.

Core ML's convolution and pooling slide over (H, W) and treat the sequence axis of its rank-5
blobs like a batch, so a convolution over time needs the steps on W: a ``(steps, channels)``
Keras tensor is held as ``(C, 1, steps)`` (``Tensor.width``) and a Conv1D is a convolution
with a (1, k) kernel, which Core ML can update (``coreml_rules.UPDATABLE_LAYER_TYPES``). A
model input read only by these layers is declared ``(C, 1, steps)`` (``trace._width_inputs``);
elsewhere a permute moves a sequence there, in the frozen part (Core ML passes no gradient
through a permute, ``coreml_rules.BACKPROP_LAYER_TYPES``).
"""

from __future__ import annotations

import numpy as np

from ....errors import UnsupportedError
from ..activations import _with_activation
from ..context import Context, LayerCall, Tensor, _channels_last, _numpy, _source, converts


def width_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A Keras-rank-2 output shape in the width layout: ``(steps, C)`` -> ``(C, 1, steps)``
    (``_convert`` already gives the width form when the layer's input had it)."""
    if len(shape) == 3:
        return shape
    steps, channels = shape
    return (channels, 1, steps)


def as_width(ctx: Context, x: Tensor, layer) -> Tensor:
    """``x`` in the ``(C, 1, steps)`` layout; a sequence is permuted there."""
    if x.width:
        return x
    if len(x.shape) != 2:
        raise UnsupportedError(
            f"layer {layer.name!r}: {type(layer).__name__} needs a sequence (steps, "
            f"channels), got the channel-first shape {x.shape}"
        )
    steps, channels = x.shape
    name = ctx.add("sequence_to_width", f"{layer.name}_over_time", [x], source=_source(layer))
    return Tensor(name, (channels, 1, steps), width=True)


def as_sequence(ctx: Context, x: Tensor, layer) -> Tensor:
    """``x`` as the IR's ``(Seq, C)`` sequence a recurrent layer reads; a tensor in the width
    layout (after a Conv1D) is permuted back, which only the frozen part can hold."""
    if not x.width:
        return x
    channels, _, steps = x.shape
    name = ctx.add("width_to_sequence", f"{layer.name}_steps", [x], source=_source(layer))
    return Tensor(name, (steps, channels))


def _conv1d_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras Conv1D kernel (k, in/groups, out) -> IR conv2d weight (out, in/groups, 1, k)."""
    return np.ascontiguousarray(kernel.transpose(2, 1, 0)[:, :, None, :])


def _over_time(layer, groups: int) -> dict:
    """Convolution attrs over the width axis. ``padding='causal'`` pads only the start,
    ``(k - 1) * dilation`` steps, as Keras does."""
    _channels_last(layer)
    (kernel,), (stride,), (dilation,) = layer.kernel_size, layer.strides, layer.dilation_rate
    padding = layer.padding
    if padding == "causal":
        padding = (0, 0, (kernel - 1) * dilation, 0)
    elif padding not in ("valid", "same"):
        raise UnsupportedError(f"layer {layer.name!r}: padding={layer.padding!r} is not supported")
    return {
        "strides": (1, int(stride)),
        "dilations": (1, int(dilation)),
        "padding": padding,
        "groups": groups,
    }


def _depthwise1d_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras depthwise kernel (k, C, M) -> grouped conv weight (C*M, 1, 1, k); output channel
    c*M + m reads input channel c, as Keras orders them."""
    steps, channels, multiplier = kernel.shape
    return np.ascontiguousarray(
        kernel.transpose(1, 2, 0).reshape(channels * multiplier, 1, 1, steps)
    )


def _conv_over_time(
    ctx: Context,
    layer,
    call: LayerCall,
    x: Tensor,
    attrs: dict,
    weight: np.ndarray,
) -> Tensor:
    """One convolution over time (updatable when the layer trains), activation fused after."""
    weights = {"weight": weight}
    if layer.use_bias:
        weights["bias"] = _numpy(layer.bias)
    out_shape = width_shape(call.out_shape)

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

    return Tensor(_with_activation(ctx, layer, build, out_shape), out_shape, width=True)


@converts("Conv1D")
def _conv1d(ctx: Context, layer, call: LayerCall) -> Tensor:
    """A convolution over time, updatable when the layer trains."""
    x = as_width(ctx, call.inputs[0], layer)
    attrs = _over_time(layer, int(layer.groups))
    return _conv_over_time(ctx, layer, call, x, attrs, _conv1d_weight(_numpy(layer.kernel)))


@converts("DepthwiseConv1D")
def _depthwise_conv1d(ctx: Context, layer, call: LayerCall) -> Tensor:
    """One filter per channel (times depth_multiplier): a grouped convolution over time."""
    x = as_width(ctx, call.inputs[0], layer)
    attrs = _over_time(layer, x.shape[0])
    weight = _depthwise1d_weight(_numpy(layer.kernel))
    return _conv_over_time(ctx, layer, call, x, attrs, weight)


@converts("SeparableConv1D")
def _separable_conv1d(ctx: Context, layer, call: LayerCall) -> Tensor:
    """A depthwise convolution over time (``<name>_depthwise``, no bias) then a pointwise
    one carrying the layer's name, bias and activation; both train when the layer does."""
    x = as_width(ctx, call.inputs[0], layer)
    depthwise = _depthwise1d_weight(_numpy(layer.depthwise_kernel))
    mid = ctx.add(
        "conv2d",
        f"{layer.name}_depthwise",
        [x],
        attrs=_over_time(layer, x.shape[0]),
        weights={"weight": depthwise},
        trainable=ctx.trains(layer),
        source=_source(layer),
    )
    mid_shape = (depthwise.shape[0], 1, width_shape(call.out_shape)[2])
    pointwise = _conv1d_weight(_numpy(layer.pointwise_kernel))
    attrs = {"strides": (1, 1), "padding": "valid", "groups": 1}
    return _conv_over_time(ctx, layer, call, Tensor(mid, mid_shape, width=True), attrs, pointwise)


def _pool1d(kind: str):
    def convert(ctx: Context, layer, call: LayerCall) -> Tensor:
        (x,) = call.inputs
        _channels_last(layer)
        if layer.padding not in ("valid", "same"):
            raise UnsupportedError(f"layer {layer.name!r}: padding={layer.padding!r}")
        x = as_width(ctx, x, layer)
        (size,) = layer.pool_size
        (stride,) = layer.strides or layer.pool_size
        attrs = {
            "kind": kind,
            "kernel": (1, int(size)),
            "padding": layer.padding,
            "strides": (1, int(stride)),
        }
        name = ctx.add("pool2d", layer.name, [x], attrs=attrs, source=_source(layer))
        return Tensor(name, width_shape(call.out_shape), width=True)

    return convert


def _global_pool1d(kind: str):
    def convert(ctx: Context, layer, call: LayerCall) -> Tensor:
        (x,) = call.inputs
        _channels_last(layer)
        if call.kwargs.get("mask") is not None:
            raise UnsupportedError(
                f"layer {layer.name!r}: a mask cannot be carried (Core ML has no masking); "
                "pool every step or export without the mask"
            )
        x = as_width(ctx, x, layer)
        keepdims = bool(layer.keepdims)
        name = ctx.add(
            "pool2d",
            layer.name,
            [x],
            attrs={"kind": kind, "global": True, "keepdims": keepdims},
            source=_source(layer),
        )
        channels = x.shape[0]
        return Tensor(name, (channels, 1, 1) if keepdims else (channels,), width=keepdims)

    return convert


converts("MaxPooling1D")(_pool1d("max"))
converts("AveragePooling1D")(_pool1d("avg"))
converts("GlobalMaxPooling1D")(_global_pool1d("max"))
converts("GlobalAveragePooling1D")(_global_pool1d("avg"))


@converts("ZeroPadding1D")
def _zero_padding1d(ctx: Context, layer, call: LayerCall) -> Tensor:
    """Zeros before and after the steps: Core ML padding of the width axis."""
    x = as_width(ctx, call.inputs[0], layer)
    left, right = layer.padding
    name = ctx.add(
        "pad",
        layer.name,
        [x],
        attrs={"pads": (0, 0, int(left), int(right)), "value": 0.0},
        source=_source(layer),
    )
    return Tensor(name, width_shape(call.out_shape), width=True)


@converts("Cropping1D")
def _cropping1d(ctx: Context, layer, call: LayerCall) -> Tensor:
    """Steps removed at the start and the end: Core ML crop of the width axis."""
    x = as_width(ctx, call.inputs[0], layer)
    start, end = layer.cropping
    name = ctx.add(
        "crop",
        layer.name,
        [x],
        attrs={"crops": (0, 0, int(start), int(end))},
        source=_source(layer),
    )
    return Tensor(name, width_shape(call.out_shape), width=True)
