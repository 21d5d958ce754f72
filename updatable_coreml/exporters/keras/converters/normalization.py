"""Normalization over the channel axis and the per-channel scales around it: Keras
LayerNormalization, and the LayerScale of ``keras.applications`` ConvNeXt."""

from __future__ import annotations

from ....errors import UnsupportedError
from ..context import Context, LayerCall, _numpy, _source, converts


@converts("LayerNormalization")
def _layer_normalization(ctx: Context, layer, call: LayerCall):
    """Over the last Keras axis, the channels of an (H, W, C) image or a (C,) vector: the
    channel layer norm of ``ops/normalization``. Any other axis set is refused."""
    (x,) = call.inputs
    where = f"layer {layer.name!r}"
    rank = len(x.shape) + 1  # Keras rank, with the batch axis
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if sorted(int(a) % rank for a in axes) != [rank - 1] or len(x.shape) == 2:
        raise UnsupportedError(
            f"{where}: layer normalization over axis {layer.axis} of a {x.shape} "
            "(channel-first) tensor; only the last axis (the channels) of images and "
            "vectors is supported"
        )
    if getattr(layer, "rms_scaling", False):
        raise UnsupportedError(
            f"{where}: rms_scaling=True has no Core ML equivalent here; use "
            "rms_scaling=False (Keras deprecates it)"
        )
    weights = {}
    if layer.scale:
        weights["gamma"] = _numpy(layer.gamma)
    if layer.center:
        weights["beta"] = _numpy(layer.beta)
    return ctx.add(
        "channel_layer_norm",
        layer.name,
        [x],
        attrs={"eps": float(layer.epsilon)},
        weights=weights,
        trainable=ctx.trains(layer),
        source=_source(layer),
    )


@converts("LayerScale")
def _layer_scale(ctx: Context, layer, call: LayerCall):
    """``x * gamma`` with one gamma per channel (``keras.applications`` ConvNeXt's
    LayerScale): a per-channel scale. Another class of this name is refused."""
    (x,) = call.inputs
    where = f"layer {layer.name!r}"
    if type(layer).__module__ != "keras.src.applications.convnext":
        raise UnsupportedError(f"{where}: only ConvNeXt's LayerScale is supported")
    gamma = _numpy(layer.gamma).reshape(-1)
    if gamma.size != x.shape[0]:
        raise UnsupportedError(
            f"{where}: {gamma.size} scales for {x.shape[0]} channels; LayerScale must "
            "scale the channel (last) axis"
        )
    return ctx.add(
        "scale",
        layer.name,
        [x],
        weights={"scale": gamma},
        trainable=ctx.trains(layer),
        source=_source(layer),
    )
