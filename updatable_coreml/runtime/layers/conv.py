"""Convolution and transposed convolution: forward, backward, size estimate.

Geometry per ``NeuralNetwork.proto`` (``ConvolutionLayerParams``): kernel, stride, dilation,
groups, valid/same padding, deconvolution output shape and cropping.
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import WeightGetter, register_backward, register_estimate, register_forward
from .common import _border_sum, _per_example, _positive, _spatial, from_nchw, to_nchw
from .windows import Pair, Windows, _border, _pair, _same_split, pad2d


def conv_windows(params, in_hw: Pair) -> Windows:
    """Geometry of a (non-transposed) convolution on an ``in_hw`` input."""
    kernel = _pair(params.kernelSize, (3, 3), "kernelSize")
    stride = _pair(params.stride, (1, 1), "stride")
    dilation = _pair(params.dilationFactor, (1, 1), "dilationFactor")
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    if params.WhichOneof("ConvolutionPaddingType") == "same":
        out = tuple(-(-n // s) for n, s in zip(in_hw, stride))
        pads = tuple(
            _same_split((o - 1) * s + k - n, params.same.asymmetryMode)
            for o, s, k, n in zip(out, stride, span, in_hw)
        )
    else:
        pads = _border(params.valid)
        out = tuple((n + sum(p) - k) // s + 1 for n, p, k, s in zip(in_hw, pads, span, stride))
    if min(out) < 1:
        raise ValueError(f"kernel {kernel} (dilation {dilation}) does not fit the {in_hw} input")
    return Windows(kernel, stride, dilation, pads, out)


def conv_groups(params) -> int:
    return int(params.nGroups) or 1


def conv_weights(params, weight: WeightGetter, in_channels: int) -> np.ndarray:
    groups = conv_groups(params)
    kh, kw = _pair(params.kernelSize, (3, 3), "kernelSize")
    out_channels = int(params.outputChannels)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"{in_channels} input / {out_channels} output channels are not "
            f"divisible into {groups} groups"
        )
    shape = (
        (in_channels, out_channels // groups, kh, kw)
        if params.isDeconvolution
        else (out_channels, in_channels // groups, kh, kw)
    )
    w = weight("weights")
    if w.size != math.prod(shape):
        raise ValueError(
            f"weights hold {w.size} values, expected {shape} for a {in_channels}-channel input"
        )
    return w.reshape(shape)


#: Bytes of unfolded input (im2col) built at a time: a bound on memory for large batches.
#: Blocks are kept large on purpose: every BLAS call synchronizes BLAS's threads, and on busy
#: cores each synchronization waits for a scheduler slice (2 MB blocks made a two-thread run of
#: ``benchmarks/bench_runtime.py``'s backbone 4x slower than one block per 64 examples under
#: load). Cache locality comes from the update task's prefix blocks (``PREFIX_CHUNK``).
UNFOLD_BUDGET = 1 << 25


def unfold(xp: np.ndarray, win: Windows) -> np.ndarray:
    """The padded ``(b, C, H, W)`` input as ``(C, kh, kw, b, out_h, out_w)`` (im2col), one
    copy per kernel tap: ~20% faster than copying the 6-axis window view at once."""
    count, channels = xp.shape[:2]
    cols = np.empty((channels, *win.kernel, count, *win.out), dtype=xp.dtype)
    for i, j, rows, columns in win.tap_slices():
        cols[:, i, j] = xp[:, :, rows, columns].transpose(1, 0, 2, 3)
    return cols


def convolve(
    x: np.ndarray, w: np.ndarray, win: Windows, groups: int, bias: np.ndarray | None = None
) -> np.ndarray:
    """Grouped, strided, dilated 2-D convolution of ``(N, C, H, W)``, plus ``bias`` (C_out).

    A block of ``b`` examples is unfolded into ``(groups, C/groups * kh * kw, b * out_h *
    out_w)`` and multiplied by the ``(groups, C_out/groups, C/groups * kh * kw)`` kernel: one
    large matrix product per group and block (few BLAS calls, which matters when BLAS threads
    share busy cores). Moving the product into ``(N, C_out, out_h, out_w)`` adds the bias in
    the same pass.
    """
    count, channels = x.shape[:2]
    (kh, kw), (oh, ow) = win.kernel, win.out
    depth, pixels = channels // groups * kh * kw, oh * ow
    kernel = w.reshape(groups, w.shape[0] // groups, depth)
    dtype = np.result_type(x, w) if bias is None else np.result_type(x, w, bias)
    y = np.empty((count, w.shape[0], pixels), dtype=dtype)
    xp = pad2d(x, win.pads)
    step = max(1, UNFOLD_BUDGET // max(channels * kh * kw * pixels * y.itemsize, 1))
    for start in range(0, count, step):
        stop = min(start + step, count)
        cols = unfold(xp[start:stop], win)
        product = np.matmul(kernel, cols.reshape(groups, depth, (stop - start) * pixels))
        moved = product.reshape(w.shape[0], stop - start, pixels).transpose(1, 0, 2)
        if bias is None:
            y[start:stop] = moved
        else:
            np.add(moved, bias.reshape(-1, 1), out=y[start:stop])
    return y.reshape(count, w.shape[0], oh, ow)


def deconv_windows(params, in_hw: Pair) -> tuple[Windows, tuple[Pair, Pair]]:
    """Geometry of a transposed convolution: its full-output windows and the (start, size)
    crop per axis (``outputShape`` wins over the padding type, as the spec says)."""
    kernel = _pair(params.kernelSize, (3, 3), "kernelSize")
    stride = _pair(params.stride, (1, 1), "stride")
    full = [(n - 1) * s + k for n, s, k in zip(in_hw, stride, kernel)]
    same = params.WhichOneof("ConvolutionPaddingType") == "same"
    if len(params.outputShape):
        sizes = _pair(params.outputShape, (0, 0), "outputShape")
        starts = (
            [_same_split(f - o, params.same.asymmetryMode)[0] for f, o in zip(full, sizes)]
            if same
            else [p[0] for p in _border(params.valid)]
        )
    elif same:
        sizes = tuple(n * s for n, s in zip(in_hw, stride))
        starts = [_same_split(f - o, params.same.asymmetryMode)[0] for f, o in zip(full, sizes)]
    else:
        pads = _border(params.valid)
        starts = [p[0] for p in pads]
        sizes = tuple(f - sum(p) for f, p in zip(full, pads))
    if min(sizes) < 1:
        raise ValueError(f"deconvolution output size {tuple(sizes)} is empty")
    win = Windows(kernel, stride, (1, 1), ((0, 0), (0, 0)), tuple(in_hw))
    return win, ((starts[0], sizes[0]), (starts[1], sizes[1]))


def crop_or_extend(y: np.ndarray, crop: tuple[Pair, Pair]) -> np.ndarray:
    """Take ``crop`` = ((start, size), (start, size)) of the spatial axes, zero-filling
    past the end (an ``outputShape`` larger than the full transposed output)."""
    (top, height), (left, width) = crop
    out = np.zeros(y.shape[:2] + (height, width), dtype=y.dtype)
    part = y[:, :, top : top + height, left : left + width]
    out[:, :, : part.shape[2], : part.shape[3]] = part
    return out


def deconvolve(x: np.ndarray, w: np.ndarray, params) -> np.ndarray:
    """Transposed convolution: scatter every input pixel times the kernel, then crop."""
    groups = conv_groups(params)
    win, crop = deconv_windows(params, x.shape[2:])
    cin = x.shape[1] // groups
    full = (
        (x.shape[2] - 1) * win.stride[0] + win.kernel[0],
        (x.shape[3] - 1) * win.stride[1] + win.kernel[1],
    )
    parts = [
        win.scatter(
            np.tensordot(
                x[:, g * cin : (g + 1) * cin], w[g * cin : (g + 1) * cin], axes=([1], [0])
            ).transpose(0, 3, 4, 5, 1, 2),
            full,
        )
        for g in range(groups)
    ]
    return crop_or_extend(parts[0] if groups == 1 else np.concatenate(parts, axis=1), crop)


@register_forward("convolution")
def convolution(layer, inputs, weight):
    params = layer.convolution
    x = to_nchw(inputs[0])
    w = conv_weights(params, weight, x.shape[1])
    bias = weight("bias") if params.hasBias else None
    if not params.isDeconvolution:
        win = conv_windows(params, x.shape[2:])
        if bias is not None and bias.size not in (1, w.shape[0]):
            raise ValueError(f"bias holds {bias.size} values for {w.shape[0]} output channels")
        y = convolve(x, w, win, conv_groups(params), bias)
    else:
        y = deconvolve(x, w, params)
        if bias is not None:
            y = y + bias.reshape(-1, 1, 1)
    return [from_nchw(np.ascontiguousarray(y), inputs[0])]


@register_backward("convolution")
def conv_backward(layer, x, y, gy, weight, want_input):
    params = layer.convolution
    x4, g4 = to_nchw(x), to_nchw(gy)
    w = conv_weights(params, weight, x4.shape[1])
    if params.isDeconvolution:
        return _deconv_backward(layer, x, x4, g4, w, want_input)
    win = conv_windows(params, x4.shape[2:])
    groups = conv_groups(params)
    count, pixels = x4.shape[0], win.out[0] * win.out[1]
    depth = x4.shape[1] // groups * win.kernel[0] * win.kernel[1]
    # the output gradient as (groups, C_out/groups, N * out_h * out_w), like the product
    g = np.ascontiguousarray(g4.transpose(1, 0, 2, 3)).reshape(groups, -1, count * pixels)
    grads = {}
    if layer.isUpdatable:
        cols = unfold(pad2d(x4, win.pads), win).reshape(groups, depth, count * pixels)
        grads["weights"] = np.matmul(g, cols.transpose(0, 2, 1)).ravel()
        if params.hasBias:
            grads["bias"] = g4.sum(axis=(0, 2, 3))
    if not want_input:
        return None, grads
    kernel = w.reshape(groups, -1, depth)
    dcols = np.matmul(kernel.transpose(0, 2, 1), g).reshape(
        (x4.shape[1], *win.kernel, count, *win.out)
    )
    image = np.zeros((x4.shape[1], count, *win.padded_hw(x4.shape[2:])), dtype=dcols.dtype)
    for i, j, rows, columns in win.tap_slices():  # the adjoint of unfold
        image[:, :, rows, columns] += dcols[:, i, j]
    dx = win.unpad(image, x4.shape[2:]).transpose(1, 0, 2, 3)
    return dx.reshape(x.shape), grads


def _deconv_backward(layer, x, x4, g4, w, want_input):
    """A transposed convolution scatters ``x * w`` into a full map then crops it, so both
    gradients read the un-cropped output gradient through the same windows."""
    params = layer.convolution
    groups = conv_groups(params)
    win, crop = deconv_windows(params, x4.shape[2:])
    full = tuple((n - 1) * s + k for n, s, k in zip(x4.shape[2:], win.stride, win.kernel))
    (top, height), (left, width) = crop
    g_full = np.zeros(g4.shape[:2] + full, dtype=g4.dtype)
    part = g_full[:, :, top : top + height, left : left + width]
    part[...] = g4[:, :, : part.shape[2], : part.shape[3]]
    cols = win.view(g_full)  # (B, C_out, H_in, W_in, kh, kw)
    cin, cout = x4.shape[1] // groups, w.shape[1]
    grads = {}
    if layer.isUpdatable:
        parts = [
            np.tensordot(
                x4[:, g * cin : (g + 1) * cin],
                cols[:, g * cout : (g + 1) * cout],
                axes=([0, 2, 3], [0, 2, 3]),
            )
            for g in range(groups)
        ]
        grads["weights"] = np.concatenate(parts).ravel()
        if params.hasBias:
            grads["bias"] = g4.sum(axis=(0, 2, 3))
    if not want_input:
        return None, grads
    parts = [
        np.tensordot(
            cols[:, g * cout : (g + 1) * cout],
            w[g * cin : (g + 1) * cin],
            axes=([1, 4, 5], [1, 2, 3]),
        )
        for g in range(groups)
    ]
    dx = np.concatenate(parts, axis=3).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(dx).reshape(x.shape), grads


@register_estimate("convolution")
def convolution_size(layer, inputs) -> int:
    params = layer.convolution
    x = inputs[0]
    height, width = _spatial(x)
    channels = max(int(params.outputChannels), 1)
    kernel = _positive(params.kernelSize, 3)
    stride = _positive(params.stride)
    dilation = _positive(params.dilationFactor)
    if params.isDeconvolution:
        full = [(n - 1) * s + k for n, s, k in zip((height, width), stride, kernel)]
        shape = [int(d) for d in params.outputShape] or full
        return channels * max(math.prod(full), math.prod(shape)) * math.prod(kernel)
    pad_h, pad_w = _border_sum(params.valid.paddingAmounts) if params.HasField("valid") else (0, 0)
    padded = _per_example(x) // max(height * width, 1) * (height + pad_h) * (width + pad_w)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    windows = math.prod(
        max((n + p - k) // s + 1, 1)
        for n, p, k, s in zip((height, width), (pad_h, pad_w), span, stride)
    )
    channels_in = _per_example(x) // max(height * width, 1)
    return max(padded, windows * max(channels, channels_in * math.prod(kernel)))
