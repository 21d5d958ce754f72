"""Pooling (max, average, L2; windowed and global): forward, backward, size estimate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..._proto import NeuralNetwork_pb2 as nn_pb
from ..registry import register_backward, register_estimate, register_forward
from .common import _border_sum, _per_example, _spatial, from_nchw, to_nchw
from .windows import Pads, Pair, Windows, _border, _pair, _same_split, pad2d

MAX, AVERAGE, L2 = (
    nn_pb.PoolingLayerParams.MAX,
    nn_pb.PoolingLayerParams.AVERAGE,
    nn_pb.PoolingLayerParams.L2,
)


@dataclass(frozen=True)
class PoolWindows(Windows):
    """Pooling windows plus the padding AVERAGE counts in its divisor (``counted``): the
    declared padding, not the extra cells ``includeLastPixel`` adds past it."""

    counted: Pads = ((0, 0), (0, 0))


def pool_windows(params, in_hw: Pair) -> PoolWindows:
    if params.globalPooling:
        return PoolWindows(tuple(in_hw), (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1))
    kernel = _pair(params.kernelSize, (3, 3), "kernelSize")
    stride = _pair(params.stride, (1, 1), "stride")
    kind = params.WhichOneof("PoolingPaddingType")
    if kind == "includeLastPixel":
        amounts = _pair(params.includeLastPixel.paddingAmounts, (0, 0), "paddingAmounts")
        out = [-(-(n + 2 * a - k) // s) + 1 for n, a, k, s in zip(in_hw, amounts, kernel, stride)]
        if any(amounts):
            out = [
                o - 1 if (o - 1) * s >= n + a else o
                for o, s, n, a in zip(out, stride, in_hw, amounts)
            ]
        counted = tuple((a, a) for a in amounts)
        pads = tuple(
            (a, max(a, (o - 1) * s + k - n - a))
            for a, o, s, k, n in zip(amounts, out, stride, kernel, in_hw)
        )
    elif kind == "same":
        out = [-(-n // s) for n, s in zip(in_hw, stride)]
        pads = counted = tuple(
            _same_split((o - 1) * s + k - n, params.same.asymmetryMode)
            for o, s, k, n in zip(out, stride, kernel, in_hw)
        )
    else:
        pads = counted = _border(params.valid)
        out = [(n + sum(p) - k) // s + 1 for n, p, k, s in zip(in_hw, pads, kernel, stride)]
    if min(out) < 1:
        raise ValueError(f"pooling kernel {kernel} does not fit the {tuple(in_hw)} input")
    return PoolWindows(kernel, stride, (1, 1), pads, tuple(out), counted)


def pool_divisor(win: PoolWindows, in_hw: Pair, exclude_padding: bool) -> np.ndarray:
    """How many cells each AVERAGE window divides by: real cells, plus declared padding
    unless ``avgPoolExcludePadding`` (cells past the declared padding never count)."""
    (top, _), (left, _) = win.pads
    mask = np.zeros(win.padded_hw(in_hw))
    (ct, cb), (cl, cr) = ((0, 0), (0, 0)) if exclude_padding else win.counted
    mask[top - ct : top + in_hw[0] + cb, left - cl : left + in_hw[1] + cr] = 1
    total = sum(mask[rows, columns] for _, _, rows, columns in win.tap_slices())
    return np.maximum(total, 1)


def separable_max(xp: np.ndarray, win: Windows) -> np.ndarray:
    """Window maxima of the padded ``xp``: the maximum over rows, then over columns, which is
    the same maximum (max is exact and order-free) in (kh - 1) + (kw - 1) passes, not
    kh * kw - 1, the first over whole contiguous rows."""
    (kh, kw), (sh, sw), (oh, ow) = win.kernel, win.stride, win.out
    rows = [slice(i, i + (oh - 1) * sh + 1, sh) for i in range(kh)]
    columns = [slice(j, j + (ow - 1) * sw + 1, sw) for j in range(kw)]
    tall = _running_max([xp[:, :, cut] for cut in rows])
    return _running_max([tall[:, :, :, cut] for cut in columns])


def _running_max(parts: list[np.ndarray]) -> np.ndarray:
    """Elementwise maximum of ``parts`` into one new array (no copy of the first part)."""
    if len(parts) == 1:
        return parts[0].copy()
    out = np.maximum(parts[0], parts[1])
    for part in parts[2:]:
        np.maximum(out, part, out=out)
    return out


def pool(x4: np.ndarray, params, win: PoolWindows) -> np.ndarray:
    kind = params.type
    if params.globalPooling:
        if kind == MAX:
            return x4.max(axis=(2, 3), keepdims=True)
        if kind == AVERAGE:
            return x4.mean(axis=(2, 3), keepdims=True)
        return np.sqrt(np.square(x4).sum(axis=(2, 3), keepdims=True))
    xp = pad2d(x4, win.pads, -np.inf if kind == MAX else 0.0)
    if kind == MAX:
        return separable_max(xp, win)
    taps = (xp[:, :, rows, columns] for _, _, rows, columns in win.tap_slices())
    if kind == AVERAGE:
        divisor = pool_divisor(win, x4.shape[2:], params.avgPoolExcludePadding)
        return sum(taps) / divisor.astype(x4.dtype)
    return np.sqrt(sum(np.square(t) for t in taps))


@register_forward("pooling")
def pooling(layer, inputs, weight):
    x4 = to_nchw(inputs[0])
    y = pool(x4, layer.pooling, pool_windows(layer.pooling, x4.shape[2:]))
    return [from_nchw(np.ascontiguousarray(y, dtype=x4.dtype), inputs[0])]


@register_backward("pooling")
def pooling_backward(layer, x, y, gy, weight, want_input):
    if not want_input:
        return None, {}
    params = layer.pooling
    x4, y4, g4 = to_nchw(x), to_nchw(y), to_nchw(gy)
    win = pool_windows(params, x4.shape[2:])
    dx = (
        _global_pool_backward(params.type, x4, y4, g4)
        if params.globalPooling
        else _window_pool_backward(params, win, x4, y4, g4)
    )
    return dx.reshape(x.shape), {}


def _global_pool_backward(kind, x4, y4, g4) -> np.ndarray:
    if kind == AVERAGE:
        return np.broadcast_to(g4 / (x4.shape[2] * x4.shape[3]), x4.shape).copy()
    if kind == L2:
        return g4 * x4 / np.where(y4 > 0, y4, 1)
    flat = x4.reshape(x4.shape[0], x4.shape[1], -1)
    dx = np.zeros_like(flat)
    np.put_along_axis(dx, flat.argmax(axis=2)[..., None], g4.reshape(dx.shape[:2] + (1,)), 2)
    return dx.reshape(x4.shape)


def _window_pool_backward(params, win, x4, y4, g4) -> np.ndarray:
    """Route each window's gradient back through the taps it read (MAX: to the first maximum
    in row-major window order, as torch does)."""
    hw = x4.shape[2:]
    dxp = np.zeros(x4.shape[:2] + win.padded_hw(hw), dtype=x4.dtype)
    if params.type == MAX:
        xp = pad2d(x4, win.pads, -np.inf)
        taken = np.zeros(y4.shape, dtype=bool)
        for _, _, rows, columns in win.tap_slices():
            hit = (xp[:, :, rows, columns] == y4) & ~taken
            dxp[:, :, rows, columns] += g4 * hit
            taken |= hit
    elif params.type == AVERAGE:
        share = g4 / pool_divisor(win, hw, params.avgPoolExcludePadding).astype(x4.dtype)
        for _, _, rows, columns in win.tap_slices():
            dxp[:, :, rows, columns] += share
    else:
        xp = pad2d(x4, win.pads)
        ratio = g4 / np.where(y4 > 0, y4, 1)
        for _, _, rows, columns in win.tap_slices():
            dxp[:, :, rows, columns] += ratio * xp[:, :, rows, columns]
    return win.unpad(dxp, hw)


@register_estimate("pooling")
def pooling_size(layer, inputs) -> int:
    params = layer.pooling
    x = inputs[0]
    height, width = _spatial(x)
    pads: tuple[int, ...] = (0, 0)
    if params.HasField("valid"):
        pads = _border_sum(params.valid.paddingAmounts)
    elif params.HasField("includeLastPixel"):
        pads = tuple(
            2 * int(p) for p in (list(params.includeLastPixel.paddingAmounts) + [0, 0])[:2]
        )
    return _per_example(x) // max(height * width, 1) * (height + pads[0]) * (width + pads[1])


@register_forward("globalPooling3d")
def global_pooling_3d(layer, inputs, weight):
    """Max or average over depth, height and width of a ``[N, C, D, H, W]`` tensor; they
    become 1 (NeuralNetwork.proto ``GlobalPooling3DLayerParams``)."""
    x = inputs[0]
    if x.ndim < 4:
        raise ValueError(f"needs a [..., C, D, H, W] input, got shape {x.shape[1:]}")
    axes = (-3, -2, -1)
    kind = layer.globalPooling3d.type
    if kind == nn_pb.GlobalPooling3DLayerParams.MAX:
        return [x.max(axis=axes, keepdims=True)]
    return [x.mean(axis=axes, keepdims=True)]
