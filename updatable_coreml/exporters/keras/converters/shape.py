"""Pooling and shape layers, and the layers that compute nothing on device (dropout)."""

from __future__ import annotations

from ....errors import UnsupportedError
from ..context import Context, LayerCall, _channels_last, _source, converts


def _pool(kind: str):
    def convert(ctx: Context, layer, call: LayerCall):
        (x,) = call.inputs
        _channels_last(layer)
        if layer.padding not in ("valid", "same"):
            raise UnsupportedError(f"layer {layer.name!r}: padding={layer.padding!r}")
        attrs = {
            "kind": kind,
            "kernel": tuple(layer.pool_size),
            "padding": layer.padding,
            "strides": tuple(layer.strides or layer.pool_size),
        }
        return ctx.add("pool2d", layer.name, [x], attrs=attrs, source=_source(layer))

    return convert


def _global_pool(kind: str):
    def convert(ctx: Context, layer, call: LayerCall):
        _channels_last(layer)
        (x,) = call.inputs
        return ctx.add(
            "pool2d",
            layer.name,
            [x],
            attrs={"kind": kind, "global": True, "keepdims": bool(layer.keepdims)},
            source=_source(layer),
        )

    return convert


converts("MaxPooling2D")(_pool("max"))
converts("AveragePooling2D")(_pool("avg"))
converts("GlobalMaxPooling2D")(_global_pool("max"))
converts("GlobalAveragePooling2D")(_global_pool("avg"))


@converts("Flatten")
def _flatten(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    _channels_last(layer)
    if len(x.shape) == 1:
        return ctx.add("identity", layer.name, [x], source=_source(layer))
    if len(x.shape) != 3:
        raise UnsupportedError(
            f"layer {layer.name!r}: flattening a sequence {x.shape} is not supported"
        )
    return ctx.add("flatten", layer.name, [x], attrs={"order": "hwc"}, source=_source(layer))


@converts("Reshape")
def _reshape(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    if call.out_shape == x.shape:
        return ctx.add("identity", layer.name, [x], source=_source(layer))
    if len(call.out_shape) == 1 and len(x.shape) == 3:
        return ctx.add("flatten", layer.name, [x], attrs={"order": "hwc"}, source=_source(layer))
    if len(call.out_shape) == 3 and len(x.shape) in (1, 3):
        return ctx.add(
            "reshape",
            layer.name,
            [x],
            attrs={"shape": call.out_shape, "order": "hwc"},
            source=_source(layer),
        )
    raise UnsupportedError(
        f"layer {layer.name!r}: reshape {x.shape} -> {call.out_shape} (channel-first) "
        "is not supported; reshape to a vector or to (H, W, C)"
    )


@converts("ZeroPadding2D")
def _zero_padding(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    _channels_last(layer)
    (top, bottom), (left, right) = layer.padding
    return ctx.add(
        "pad",
        layer.name,
        [x],
        attrs={"pads": (top, bottom, left, right), "value": 0.0},
        source=_source(layer),
    )


@converts("Cropping2D")
def _cropping(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    _channels_last(layer)
    (top, bottom), (left, right) = layer.cropping
    return ctx.add(
        "crop", layer.name, [x], attrs={"crops": (top, bottom, left, right)}, source=_source(layer)
    )


@converts(
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "StochasticDepth",
)
def _dropout(ctx: Context, layer, call: LayerCall):
    """Identities at inference that act only in training (``keras.applications`` ConvNeXt's
    StochasticDepth drops residual paths): Core ML has no dropout, the passes report them."""
    return ctx.add("dropout", layer.name, call.inputs, source=_source(layer))


@converts("Identity")
def _identity(ctx: Context, layer, call: LayerCall):
    return ctx.add("identity", layer.name, call.inputs, source=_source(layer))
