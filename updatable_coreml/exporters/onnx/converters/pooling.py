"""Pooling, and the spatial reductions that are global pooling."""

from __future__ import annotations

from typing import Any

from ....errors import UnsupportedError
from ...common.pooling import ceil_mode_pads
from ...common.rules import (
    require_spatial_axes,
)
from ..context import (
    Converter,
    OnnxTranslation,
    _image_input,
    _unused,
    converts,
    explicit_pads,
    where,
)


def _pool(kind: str) -> Converter:
    def convert(state: OnnxTranslation, node: Any, a: dict) -> None:
        _unused(state, node, "indices")
        _, height, width = _image_input(state, node)
        kernel = tuple(int(k) for k in a["kernel_shape"])
        strides = tuple(int(s) for s in a.get("strides", (1, 1)))
        if tuple(a.get("dilations", (1, 1))) != (1, 1):
            raise UnsupportedError(f"{where(node)}: dilated pooling is not supported")
        pads = explicit_pads(node, a, (height, width), kernel, strides, (1, 1))
        include_pad = kind == "avg" and bool(a.get("count_include_pad", 0))
        if a.get("ceil_mode", 0):
            pads = ceil_mode_pads((height, width), kernel, strides, pads, include_pad, where(node))
        state.emit(
            node,
            "pool2d",
            [state.tensor(node.input[0], node)],
            attrs={
                "kind": kind,
                "kernel": kernel,
                "strides": strides,
                "padding": pads,
                "global": False,
                "count_include_pad": include_pad,
            },
        )

    return convert


converts("MaxPool")(_pool("max"))
converts("AveragePool")(_pool("avg"))


def _global_pool(kind: str) -> Converter:
    def convert(state: OnnxTranslation, node: Any, a: dict) -> None:
        _global(state, node, kind, keep_dims=True)

    return convert


def _global(state: OnnxTranslation, node: Any, kind: str, keep_dims: bool) -> None:
    """Global pooling; without ``keep_dims`` followed by a flatten to (batch, channels)."""
    _, height, width = _image_input(state, node)
    pooled = node.output[0] if keep_dims else f"{node.output[0]}_pooled"
    state.emit(
        node,
        "pool2d",
        [state.tensor(node.input[0], node)],
        output=pooled,
        suffix="" if keep_dims else "_pool",
        attrs={
            "kind": kind,
            "kernel": (height, width),
            "strides": (1, 1),
            "padding": "valid",
            "global": True,
            "count_include_pad": False,
        },
    )
    if not keep_dims:
        state.emit(node, "flatten", [pooled])


converts("GlobalAveragePool")(_global_pool("avg"))
converts("GlobalMaxPool")(_global_pool("max"))


def _reduce(kind: str) -> Converter:
    """ReduceMean/ReduceMax over the spatial axes of (N, C, H, W): global pooling."""

    def convert(state: OnnxTranslation, node: Any, a: dict) -> None:
        rank = len(state.full_shape(node.input[0], node))
        axes = a.get("axes")
        if axes is None:
            axes = state.constant(node, 1)
        axes = [int(v) for v in (axes if axes is not None else range(rank))]
        require_spatial_axes(axes, rank, node.op_type, where(node))
        _global(state, node, kind, keep_dims=bool(a.get("keepdims", 1)))

    return convert


converts("ReduceMean")(_reduce("avg"))
converts("ReduceMax")(_reduce("max"))
