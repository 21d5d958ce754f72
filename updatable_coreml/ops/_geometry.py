"""Window arithmetic shared by convolution and pooling shape rules, writers and frontends."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..ir import Node


def conv_output_size(
    size: int, kernel: int, stride: int, dilation: int, pads: tuple[int, int]
) -> int:
    span = (kernel - 1) * dilation + 1
    return (size + pads[0] + pads[1] - span) // stride + 1


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow/Keras 'same' padding: output ceil(size/stride), the extra pixel at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def explicit_pads(
    attrs: Mapping[str, Any],
    hw: Sequence[int],
    kernel: Sequence[int],
    dilations: Sequence[int] = (1, 1),
) -> tuple[int, int, int, int]:
    """``attrs['padding']`` ('valid' | 'same' | (t, b, l, r)) as (t, b, l, r) for input ``hw``."""
    padding = attrs.get("padding", "valid")
    if padding == "valid":
        return (0, 0, 0, 0)
    strides = attrs.get("strides", (1, 1))
    if padding == "same":
        return (
            *same_pads(hw[0], kernel[0], strides[0], dilations[0]),
            *same_pads(hw[1], kernel[1], strides[1], dilations[1]),
        )
    top, bottom, left, right = (int(p) for p in padding)
    return (top, bottom, left, right)


def spatial_output(
    node: Node, shape: Sequence[int], kernel: Sequence[int], dilations: Sequence[int] = (1, 1)
) -> tuple[int, int]:
    """(H, W) after a window of ``kernel`` slides over a ``(C, H, W)`` input."""
    top, bottom, left, right = explicit_pads(node.attrs, shape[1:], kernel, dilations)
    strides = node.attrs.get("strides", (1, 1))
    return (
        conv_output_size(shape[1], kernel[0], strides[0], dilations[0], (top, bottom)),
        conv_output_size(shape[2], kernel[1], strides[1], dilations[1], (left, right)),
    )
