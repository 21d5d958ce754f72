"""Layer normalization over the channels: ``layer_norm`` over the last axis of a channel-last
view (ConvNeXt's ``LayerNorm2d`` and blocks) or of a (N, C) vector."""

from __future__ import annotations

from typing import Any

from ....errors import UnsupportedError
from .. import layout
from ..context import Translation, converter, full_shape, where


@converter("layer_norm")
def _layer_norm(state: Translation, fx: Any, a: dict) -> None:
    """The channel layer norm of ``ops/normalization``, when the normalized axis is the
    channel axis of the IR tensor; any other normalized shape is refused."""
    source = a["input"]
    view = layout.channel_last(state, source)
    shape = full_shape(source)
    normalized = [int(d) for d in a["normalized_shape"]]
    over_channels = normalized == [shape[-1]] and (view is not None or len(shape) == 2)
    if not over_channels:
        raise UnsupportedError(
            f"layer_norm over the last {len(normalized)} axes {normalized} of a "
            f"{list(shape)} tensor in {where(fx)}: only normalization over the channels is "
            "supported, of a (N, C) vector or of an image seen channel-last "
            "(x.permute(0, 2, 3, 1), as ConvNeXt's LayerNorm2d does)"
        )
    state.emit(
        fx,
        "channel_layer_norm",
        [view.tensor if view is not None else state.tensor(source)],
        attrs={"eps": float(a["eps"])},
        weights={"gamma": state.state(a["weight"]), "beta": state.state(a["bias"])},
    )
    if view is not None:
        layout.emitted_channel_last(state, fx, view.base, view.made_by)
