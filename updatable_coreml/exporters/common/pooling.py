"""Pooling geometry the torch and ONNX frontends share."""

from __future__ import annotations


def ceil_mode_padding(size: int, kernel: int, stride: int, pad: int) -> int:
    """Extra end padding that makes floor-mode pooling produce the ceil-mode size.

    torch and ONNX drop a last window that would start in the right padding; the extra rows are
    never the only content of a window, so a max pool ignores them.
    """
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return max(0, (out - 1) * stride + kernel - (size + 2 * pad))
