"""Pooling, and the spatial mean (or the mean of tokens) that is global pooling."""

from __future__ import annotations

from typing import Any

from ....errors import UnsupportedError
from ....ir import Node
from ...common.pooling import ceil_mode_pads
from ...common.rules import require_spatial_axes
from .. import layout
from ..context import Translation, _pair, converter, example_shape, full_shape, where
from .conv1d import reduce_over_length


def _emit_window_pool(state: Translation, fx: Any, a: dict, kind: str, include_pad: bool) -> None:
    """One pooling layer over torch's kernel/stride/padding (ceil mode folded into the pads):
    max and average pooling differ only in ``kind`` and whether padding counts."""
    kernel = _pair(a["kernel_size"])
    strides = _pair(a["stride"]) if a["stride"] else kernel
    ph, pw = _pair(a["padding"])
    pads: tuple[int, int, int, int] = (ph, ph, pw, pw)
    if a["ceil_mode"]:
        pads = ceil_mode_pads(
            full_shape(a["self"])[2:], kernel, strides, pads, include_pad, where(fx)
        )
    state.emit(
        fx,
        "pool2d",
        [state.tensor(a["self"])],
        attrs={
            "kind": kind,
            "kernel": kernel,
            "strides": strides,
            "padding": pads,
            "global": False,
            "count_include_pad": include_pad,
        },
    )


@converter("max_pool2d", "max_pool2d_with_indices")
def _max_pool2d(state: Translation, fx: Any, a: dict) -> None:
    if _pair(a["dilation"]) != (1, 1):
        raise UnsupportedError(f"dilated max pooling in {where(fx)} is not supported")
    _emit_window_pool(state, fx, a, "max", include_pad=False)


@converter("avg_pool2d")
def _avg_pool2d(state: Translation, fx: Any, a: dict) -> None:
    if a["divisor_override"] is not None:
        raise UnsupportedError(f"avg pooling with divisor_override in {where(fx)} is not supported")
    _emit_window_pool(state, fx, a, "avg", include_pad=bool(a["count_include_pad"]))


def _global_avg_pool(state: Translation, fx: Any, source: Any, suffix: str = "") -> Node:
    return global_avg_pool(state, fx, state.tensor(source), example_shape(source), suffix)


def global_avg_pool(
    state: Translation, fx: Any, tensor: str, shape: tuple[int, ...], suffix: str = ""
) -> Node:
    """The mean over the positions of IR tensor ``tensor`` of shape (C, H, W), kept (C, 1, 1)."""
    return state.emit(
        fx,
        "pool2d",
        [tensor],
        suffix=suffix,
        attrs={
            "kind": "avg",
            "kernel": shape[1:],
            "strides": (1, 1),
            "padding": "valid",
            "global": True,
            "count_include_pad": False,
            "keepdims": True,
        },
    )  # torch keeps (N, C, 1, 1): a conv may follow


@converter("adaptive_avg_pool2d")
def _adaptive_avg_pool2d(state: Translation, fx: Any, a: dict) -> None:
    _, height, width = example_shape(a["self"])
    out_h, out_w = _pair(a["output_size"])
    if (out_h, out_w) == (1, 1):
        _global_avg_pool(state, fx, a["self"])
    elif (out_h, out_w) == (height, width):
        state.alias(fx, a["self"])
    elif height % out_h == 0 and width % out_w == 0:
        kernel = (height // out_h, width // out_w)
        state.emit(
            fx,
            "pool2d",
            [state.tensor(a["self"])],
            attrs={
                "kind": "avg",
                "kernel": kernel,
                "strides": kernel,
                "padding": "valid",
                "global": False,
                "count_include_pad": False,
            },
        )
    else:  # windows of different sizes: folded into the dense layer after it by the passes
        state.emit(
            fx, "adaptive_avg_pool2d", [state.tensor(a["self"])], attrs={"output": (out_h, out_w)}
        )


@converter("mean")
def _mean(state: Translation, fx: Any, a: dict) -> None:
    if a["self"].name in state.views:
        view = layout.channel_last(state, a["self"])
        dims = sorted(int(d) % 3 for d in a["dim"] or ())
        if view is None or view.index.ndim != 2 or dims != [1] or a["keepdim"]:
            raise UnsupportedError(
                f"mean over axes {list(a['dim'] or ())} of a rearranged activation in "
                f"{where(fx)}: only the mean of (N, S, C) tokens over the tokens "
                "(x.mean(dim=1)) is supported"
            )
        pooled = global_avg_pool(state, fx, view.tensor, view.base, suffix=".pool")
        state.emit(fx, "flatten", pooled.outputs)
        return
    if len(full_shape(a["self"])) == 3:  # a 1-D map (N, C, L): over its length
        reduce_over_length(state, fx, a, "avg")
        return
    require_spatial_axes(a["dim"] or (), len(full_shape(a["self"])), "mean", where(fx))
    if a["keepdim"]:
        _global_avg_pool(state, fx, a["self"])
        return
    pooled = _global_avg_pool(state, fx, a["self"], suffix=".pool")
    state.emit(fx, "flatten", pooled.outputs)
