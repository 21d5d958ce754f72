"""Small pieces every frontend shares: unique naming and pooling geometry."""

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


def unique_name(taken: set[str], name: str) -> str:
    """``name``, or ``name_1``, ``name_2``... if taken; the result is added to ``taken``.

    Core ML needs unique layer and blob names, while sources reuse them (shared Keras layers,
    repeated functional calls in torch, unnamed ONNX nodes).
    """
    candidate, index = name, 1
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    taken.add(candidate)
    return candidate
