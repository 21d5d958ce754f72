"""Pooling geometry the torch and ONNX frontends share."""

from __future__ import annotations

from ...errors import UnsupportedError


def ceil_mode_padding(size: int, kernel: int, stride: int, pad: int) -> int:
    """Extra end padding that makes floor-mode pooling produce the ceil-mode size.

    torch and ONNX drop a last window that would start in the right padding; the extra rows are
    never the only content of a window, so a max pool ignores them.
    """
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return max(0, (out - 1) * stride + kernel - (size + 2 * pad))


def ceil_mode_pads(
    hw: tuple[int, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, int, int, int],
    include_pad: bool,
    where: str,
) -> tuple[int, int, int, int]:
    """Explicit (top, bottom, left, right) pads that give ceil-mode output sizes with Core ML's
    floor-mode pooling, from symmetric ``pads``.

    An average that counts the padding (``count_include_pad``) counts the source's padding
    but not the ceil-mode overhang, which explicit Core ML padding cannot express: refused.
    """
    top, bottom, left, right = pads
    if top != bottom or left != right:
        raise UnsupportedError(f"{where}: ceil_mode with asymmetric pads is not supported")
    extra_h = ceil_mode_padding(hw[0], kernel[0], strides[0], top)
    extra_w = ceil_mode_padding(hw[1], kernel[1], strides[1], left)
    if include_pad and (extra_h or extra_w):
        raise UnsupportedError(
            f"{where}: average pooling with ceil_mode and count_include_pad "
            "counts the padding but not the ceil-mode overhang, which Core "
            "ML's explicit padding cannot express; use count_include_pad="
            "False or ceil_mode=False"
        )
    return (top, bottom + extra_h, left, right + extra_w)
