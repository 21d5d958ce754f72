"""Sliding-window geometry shared by convolution, pooling and their gradients.

Output sizes and padding follow the comments of Apple's ``NeuralNetwork.proto``
(``ValidPadding``, ``SamePadding``, ``ValidCompletePadding``); the backward ops walk exactly
the windows the forward ops read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..._proto import NeuralNetwork_pb2 as nn_pb

# (height, width) pairs; typed as variable-length tuples because comprehensions build them.
Pads = tuple[tuple[int, int], ...]


Pair = tuple[int, ...]


BOTTOM_RIGHT_HEAVY = nn_pb.SamePadding.BOTTOM_RIGHT_HEAVY


def pad2d(x: np.ndarray, pads: Pads, value: float = 0.0) -> np.ndarray:
    """``x`` (N, C, H, W) with ``pads`` ((top, bottom), (left, right)) cells of ``value``
    around H and W (a filled array and one copy: about twice as fast as ``np.pad``)."""
    if not any(pads[0] + pads[1]):
        return x
    (top, bottom), (left, right) = pads
    height, width = x.shape[2], x.shape[3]
    shape = x.shape[:2] + (top + height + bottom, left + width + right)
    out = np.zeros(shape, x.dtype) if value == 0 else np.full(shape, value, x.dtype)
    out[:, :, top : top + height, left : left + width] = x
    return out


def _pair(values: Sequence[int], default: Pair, what: str) -> Pair:
    if len(values) == 0:
        return default
    if len(values) != 2:
        raise ValueError(f"{what} must have 2 values [H, W], got {list(values)}")
    return int(values[0]), int(values[1])


def _border(valid) -> Pads:
    amounts = valid.paddingAmounts.borderAmounts
    if not amounts:
        return (0, 0), (0, 0)
    return (
        (int(amounts[0].startEdgeSize), int(amounts[0].endEdgeSize)),
        (int(amounts[1].startEdgeSize), int(amounts[1].endEdgeSize)),
    )


def _same_split(total: int, mode: int) -> tuple[int, int]:
    total = max(total, 0)
    before = total // 2 if mode == BOTTOM_RIGHT_HEAVY else total - total // 2
    return before, total - before


@dataclass(frozen=True)
class Windows:
    """Where a sliding kernel reads a padded input: ``out`` positions of ``kernel`` taps."""

    kernel: Pair
    stride: Pair
    dilation: Pair
    pads: Pads
    out: Pair

    def tap_slices(self) -> Iterator[tuple[int, int, slice, slice]]:
        """For each kernel tap (i, j): the strided slices of the padded input it reads."""
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = self.kernel, self.stride, self.dilation, self.out
        for i in range(kh):
            for j in range(kw):
                yield (
                    i,
                    j,
                    slice(i * dh, i * dh + (oh - 1) * sh + 1, sh),
                    slice(j * dw, j * dw + (ow - 1) * sw + 1, sw),
                )

    def view(self, xp: np.ndarray) -> np.ndarray:
        """``(N, C, out_h, out_w, kh, kw)`` view of the padded input ``xp`` (no copy)."""
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = self.kernel, self.stride, self.dilation, self.out
        span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
        win = sliding_window_view(xp, span, axis=(2, 3))
        return win[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, ::dh, ::dw]

    def scatter(self, cols: np.ndarray, padded_hw: Pair) -> np.ndarray:
        """Adjoint of ``view``: sum ``cols`` ``(N, C, kh, kw, out_h, out_w)`` into an image."""
        image = np.zeros(cols.shape[:2] + tuple(padded_hw), dtype=cols.dtype)
        for i, j, rows, columns in self.tap_slices():
            image[:, :, rows, columns] += cols[:, :, i, j]
        return image

    def padded_hw(self, in_hw: Pair) -> Pair:
        return (in_hw[0] + sum(self.pads[0]), in_hw[1] + sum(self.pads[1]))

    def unpad(self, image: np.ndarray, in_hw: Pair) -> np.ndarray:
        (top, _), (left, _) = self.pads
        return image[:, :, top : top + in_hw[0], left : left + in_hw[1]]
