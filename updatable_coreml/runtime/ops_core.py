"""Forward ops of the layers an updatable model trains through, with Core ML's exact geometry.

Semantics follow the comments of Apple's ``NeuralNetwork.proto``: output sizes and padding of
``ValidPadding``/``SamePadding``/``ValidCompletePadding`` (``includeLastPixel``), deconvolution
cropping, flatten and reshape orders. Geometry helpers are public because ``backward.py`` must
walk exactly the same windows as the forward pass.

Blob layout: see ``registry``; a rank-1 feature ``(B, C)`` is treated as ``C`` channels of 1x1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce
from typing import Callable, Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .._proto import NeuralNetwork_pb2 as nn_pb
from .registry import WeightGetter, register_forward

Pads = tuple[tuple[int, int], tuple[int, int]]
Pair = tuple[int, int]

BOTTOM_RIGHT_HEAVY = nn_pb.SamePadding.BOTTOM_RIGHT_HEAVY
MAX, AVERAGE, L2 = (nn_pb.PoolingLayerParams.MAX, nn_pb.PoolingLayerParams.AVERAGE,
                    nn_pb.PoolingLayerParams.L2)
CHANNEL_LAST = nn_pb.FlattenLayerParams.CHANNEL_LAST


# -- layout helpers -------------------------------------------------------------------------


def to_nchw(x: np.ndarray) -> np.ndarray:
    """View a blob as ``(N, C, H, W)``: vectors become 1x1 maps, extra leading axes fold into N."""
    if x.ndim == 2:
        return x[:, :, None, None]
    if x.ndim == 3:
        raise ValueError(f"needs a rank-1 or rank>=3 input per example, got shape {x.shape[1:]}")
    return x.reshape((-1,) + x.shape[-3:])


def from_nchw(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Give ``y`` (computed on ``to_nchw(like)``) the rank of ``like`` back."""
    if like.ndim == 2 and y.shape[2:] == (1, 1):
        return y.reshape(y.shape[:2])
    if like.ndim <= 4:
        return y
    return y.reshape(like.shape[:-3] + y.shape[1:])


def channel_shape(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Shape per-channel ``values`` (length C or 1) to broadcast over axis -3 of ``x``."""
    if values.size == 1:
        return values.reshape(())
    return values.reshape((-1,) + (1, 1) * (x.ndim >= 4))


def pad2d(x: np.ndarray, pads: Pads, value: float = 0.0) -> np.ndarray:
    if not any(pads[0] + pads[1]):
        return x
    return np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]), constant_values=value)


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
    return ((int(amounts[0].startEdgeSize), int(amounts[0].endEdgeSize)),
            (int(amounts[1].startEdgeSize), int(amounts[1].endEdgeSize)))


def _same_split(total: int, mode: int) -> tuple[int, int]:
    total = max(total, 0)
    before = total // 2 if mode == BOTTOM_RIGHT_HEAVY else total - total // 2
    return before, total - before


# -- windows shared by convolution, pooling and their gradients ------------------------------


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
                yield (i, j, slice(i * dh, i * dh + (oh - 1) * sh + 1, sh),
                       slice(j * dw, j * dw + (ow - 1) * sw + 1, sw))

    def view(self, xp: np.ndarray) -> np.ndarray:
        """``(N, C, out_h, out_w, kh, kw)`` view of the padded input ``xp`` (no copy)."""
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = self.kernel, self.stride, self.dilation, self.out
        span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
        win = sliding_window_view(xp, span, axis=(2, 3))
        return win[:, :, : (oh - 1) * sh + 1: sh, : (ow - 1) * sw + 1: sw, ::dh, ::dw]

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
        return image[:, :, top: top + in_hw[0], left: left + in_hw[1]]


# -- convolution ------------------------------------------------------------------------------


def conv_windows(params, in_hw: Pair) -> Windows:
    """Geometry of a (non-transposed) convolution on an ``in_hw`` input."""
    kernel = _pair(params.kernelSize, (3, 3), "kernelSize")
    stride = _pair(params.stride, (1, 1), "stride")
    dilation = _pair(params.dilationFactor, (1, 1), "dilationFactor")
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    if params.WhichOneof("ConvolutionPaddingType") == "same":
        out = tuple(-(-n // s) for n, s in zip(in_hw, stride))
        pads = tuple(_same_split((o - 1) * s + k - n, params.same.asymmetryMode)
                     for o, s, k, n in zip(out, stride, span, in_hw))
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
        raise ValueError(f"{in_channels} input / {out_channels} output channels are not "
                         f"divisible into {groups} groups")
    shape = ((in_channels, out_channels // groups, kh, kw) if params.isDeconvolution
             else (out_channels, in_channels // groups, kh, kw))
    w = weight("weights")
    if w.size != math.prod(shape):
        raise ValueError(f"weights hold {w.size} values, expected {shape} for a "
                         f"{in_channels}-channel input")
    return w.reshape(shape)


def convolve(x: np.ndarray, w: np.ndarray, win: Windows, groups: int) -> np.ndarray:
    """Grouped, strided, dilated 2-D convolution of ``(N, C, H, W)`` without the bias."""
    cols = win.view(pad2d(x, win.pads))
    cin, cout = x.shape[1] // groups, w.shape[0] // groups
    parts = [np.tensordot(w[g * cout:(g + 1) * cout], cols[:, g * cin:(g + 1) * cin],
                          axes=([1, 2, 3], [1, 4, 5])) for g in range(groups)]
    return (parts[0] if groups == 1 else np.concatenate(parts)).transpose(1, 0, 2, 3)


def deconv_windows(params, in_hw: Pair) -> tuple[Windows, tuple[Pair, Pair]]:
    """Geometry of a transposed convolution: its full-output windows and the (start, size)
    crop per axis (``outputShape`` wins over the padding type, as the spec says)."""
    kernel = _pair(params.kernelSize, (3, 3), "kernelSize")
    stride = _pair(params.stride, (1, 1), "stride")
    full = [(n - 1) * s + k for n, s, k in zip(in_hw, stride, kernel)]
    same = params.WhichOneof("ConvolutionPaddingType") == "same"
    if len(params.outputShape):
        sizes = _pair(params.outputShape, (0, 0), "outputShape")
        starts = ([_same_split(f - o, params.same.asymmetryMode)[0] for f, o in zip(full, sizes)]
                  if same else [p[0] for p in _border(params.valid)])
    elif same:
        sizes = [n * s for n, s in zip(in_hw, stride)]
        starts = [_same_split(f - o, params.same.asymmetryMode)[0] for f, o in zip(full, sizes)]
    else:
        pads = _border(params.valid)
        starts = [p[0] for p in pads]
        sizes = [f - sum(p) for f, p in zip(full, pads)]
    if min(sizes) < 1:
        raise ValueError(f"deconvolution output size {tuple(sizes)} is empty")
    win = Windows(kernel, stride, (1, 1), ((0, 0), (0, 0)), tuple(in_hw))
    return win, ((starts[0], sizes[0]), (starts[1], sizes[1]))


def crop_or_extend(y: np.ndarray, crop: tuple[Pair, Pair]) -> np.ndarray:
    """Take ``crop`` = ((start, size), (start, size)) of the spatial axes, zero-filling
    past the end (an ``outputShape`` larger than the full transposed output)."""
    (top, height), (left, width) = crop
    out = np.zeros(y.shape[:2] + (height, width), dtype=y.dtype)
    part = y[:, :, top: top + height, left: left + width]
    out[:, :, : part.shape[2], : part.shape[3]] = part
    return out


def deconvolve(x: np.ndarray, w: np.ndarray, params) -> np.ndarray:
    """Transposed convolution: scatter every input pixel times the kernel, then crop."""
    groups = conv_groups(params)
    win, crop = deconv_windows(params, x.shape[2:])
    cin = x.shape[1] // groups
    full = ((x.shape[2] - 1) * win.stride[0] + win.kernel[0],
            (x.shape[3] - 1) * win.stride[1] + win.kernel[1])
    parts = [win.scatter(np.tensordot(x[:, g * cin:(g + 1) * cin], w[g * cin:(g + 1) * cin],
                                      axes=([1], [0])).transpose(0, 3, 4, 5, 1, 2), full)
             for g in range(groups)]
    return crop_or_extend(parts[0] if groups == 1 else np.concatenate(parts, axis=1), crop)


@register_forward("convolution")
def convolution(layer, inputs, weight):
    params = layer.convolution
    x = to_nchw(inputs[0])
    w = conv_weights(params, weight, x.shape[1])
    if params.isDeconvolution:
        y = deconvolve(x, w, params)
    else:
        y = convolve(x, w, conv_windows(params, x.shape[2:]), conv_groups(params))
    if params.hasBias:
        y = y + weight("bias").reshape(-1, 1, 1)
    return [from_nchw(np.ascontiguousarray(y), inputs[0])]


# -- inner product ----------------------------------------------------------------------------


def ip_matrix(x: np.ndarray, in_channels: int) -> np.ndarray:
    """The ``(rows, C_in)`` matrix innerProduct multiplies (rank >= 4 flattens C, H, W)."""
    rows = x.reshape(-1, math.prod(x.shape[-3:])) if x.ndim >= 4 else x.reshape(-1, x.shape[-1])
    if rows.shape[1] != in_channels:
        raise ValueError(f"input has {rows.shape[1]} values per row, innerProduct expects "
                         f"inputChannels={in_channels}")
    return rows


def ip_output_shape(shape: tuple[int, ...], out_channels: int) -> tuple[int, ...]:
    return shape[:-3] + (out_channels, 1, 1) if len(shape) >= 4 else shape[:-1] + (out_channels,)


@register_forward("innerProduct")
def inner_product(layer, inputs, weight):
    params = layer.innerProduct
    x = inputs[0]
    w = weight("weights").reshape(int(params.outputChannels), int(params.inputChannels))
    y = ip_matrix(x, int(params.inputChannels)) @ w.T
    if params.hasBias:
        y += weight("bias")
    return [y.reshape(ip_output_shape(x.shape, int(params.outputChannels)))]


# -- batch norm -------------------------------------------------------------------------------


def batchnorm_stats_axes(params) -> tuple[int, ...] | None:
    """Axes of ``(N, C, H, W)`` the layer computes mean/variance over, or None (stored stats)."""
    if not params.computeMeanVar:
        return None
    return (2, 3) if params.instanceNormalization else (0, 2, 3)


def batchnorm_parts(params, x4: np.ndarray, weight: WeightGetter):
    """(mean, inverse std, gamma) shaped to broadcast over ``x4``."""
    eps = params.epsilon or 1e-5
    axes = batchnorm_stats_axes(params)
    if axes is None:
        mean = weight("mean").reshape(-1, 1, 1)
        var = weight("variance").reshape(-1, 1, 1)
    else:
        mean = x4.mean(axis=axes, keepdims=True)
        var = x4.var(axis=axes, keepdims=True)
    return mean, 1.0 / np.sqrt(var + eps), weight("gamma").reshape(-1, 1, 1)


@register_forward("batchnorm")
def batchnorm(layer, inputs, weight):
    params = layer.batchnorm
    x4 = to_nchw(inputs[0])
    mean, inv_std, gamma = batchnorm_parts(params, x4, weight)
    y = (x4 - mean) * (inv_std * gamma) + weight("beta").reshape(-1, 1, 1)
    return [from_nchw(y.astype(x4.dtype, copy=False), inputs[0])]


# -- activations ------------------------------------------------------------------------------

Activation = Callable[[object, np.ndarray, WeightGetter], np.ndarray]
ACTIVATIONS: dict[str, Activation] = {}


def _activation(name: str) -> Callable[[Activation], Activation]:
    def decorate(fn: Activation) -> Activation:
        ACTIVATIONS[name] = fn
        return fn
    return decorate


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function via tanh: no overflow warnings for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


_activation("linear")(lambda p, x, w: p.alpha * x + p.beta)
_activation("ReLU")(lambda p, x, w: np.maximum(x, 0))
_activation("leakyReLU")(lambda p, x, w: np.where(x >= 0, x, p.alpha * x))
_activation("thresholdedReLU")(lambda p, x, w: np.where(x >= p.alpha, x, 0))
_activation("tanh")(lambda p, x, w: np.tanh(x))
_activation("scaledTanh")(lambda p, x, w: p.alpha * np.tanh(p.beta * x))
_activation("sigmoid")(lambda p, x, w: sigmoid(x))
_activation("sigmoidHard")(lambda p, x, w: np.clip(p.alpha * x + p.beta, 0, 1))
_activation("ELU")(lambda p, x, w: np.where(x >= 0, x, p.alpha * np.expm1(np.minimum(x, 0))))
_activation("softsign")(lambda p, x, w: x / (1 + np.abs(x)))
_activation("softplus")(lambda p, x, w: np.logaddexp(0, x))


@_activation("PReLU")
def _prelu(p, x, weight):
    return np.where(x >= 0, x, channel_shape(weight("PReLU.alpha"), x) * x)


@_activation("parametricSoftplus")
def _parametric_softplus(p, x, weight):
    alpha = channel_shape(weight("parametricSoftplus.alpha"), x)
    beta = channel_shape(weight("parametricSoftplus.beta"), x)
    return alpha * np.logaddexp(0, beta * x)


@register_forward("activation")
def activation(layer, inputs, weight):
    params = layer.activation
    kind = params.WhichOneof("NonlinearityType")
    if kind not in ACTIVATIONS:
        raise ValueError(f"unknown activation {kind!r}")
    x = inputs[0]
    return [np.asarray(ACTIVATIONS[kind](getattr(params, kind), x, weight), dtype=x.dtype)]


# -- pooling ----------------------------------------------------------------------------------


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
            out = [o - 1 if (o - 1) * s >= n + a else o
                   for o, s, n, a in zip(out, stride, in_hw, amounts)]
        counted = tuple((a, a) for a in amounts)
        pads = tuple((a, max(a, (o - 1) * s + k - n - a))
                     for a, o, s, k, n in zip(amounts, out, stride, kernel, in_hw))
    elif kind == "same":
        out = [-(-n // s) for n, s in zip(in_hw, stride)]
        pads = counted = tuple(_same_split((o - 1) * s + k - n, params.same.asymmetryMode)
                               for o, s, k, n in zip(out, stride, kernel, in_hw))
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
    mask[top - ct: top + in_hw[0] + cb, left - cl: left + in_hw[1] + cr] = 1
    total = sum(mask[rows, columns] for _, _, rows, columns in win.tap_slices())
    return np.maximum(total, 1)


def pool(x4: np.ndarray, params, win: PoolWindows) -> np.ndarray:
    kind = params.type
    if params.globalPooling:
        if kind == MAX:
            return x4.max(axis=(2, 3), keepdims=True)
        if kind == AVERAGE:
            return x4.mean(axis=(2, 3), keepdims=True)
        return np.sqrt(np.square(x4).sum(axis=(2, 3), keepdims=True))
    xp = pad2d(x4, win.pads, -np.inf if kind == MAX else 0.0)
    taps = (xp[:, :, rows, columns] for _, _, rows, columns in win.tap_slices())
    if kind == MAX:
        return reduce(np.maximum, taps)
    if kind == AVERAGE:
        divisor = pool_divisor(win, x4.shape[2:], params.avgPoolExcludePadding)
        return sum(taps) / divisor.astype(x4.dtype)
    return np.sqrt(sum(np.square(t) for t in taps))


@register_forward("pooling")
def pooling(layer, inputs, weight):
    x4 = to_nchw(inputs[0])
    y = pool(x4, layer.pooling, pool_windows(layer.pooling, x4.shape[2:]))
    return [from_nchw(np.ascontiguousarray(y, dtype=x4.dtype), inputs[0])]


# -- softmax, flatten, reshape ----------------------------------------------------------------


def softmax_axis(x: np.ndarray) -> int:
    """Classic softmax normalizes axis -3 of each example, or the whole rank-1 vector."""
    if x.ndim == 2:
        return 1
    if x.ndim >= 4:
        return x.ndim - 3
    raise ValueError(f"softmax needs a rank-1 or rank>=3 input per example, got {x.shape[1:]}")


@register_forward("softmax")
def softmax(layer, inputs, weight):
    x = inputs[0]
    axis = softmax_axis(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [e / e.sum(axis=axis, keepdims=True)]


@register_forward("flatten")
def flatten(layer, inputs, weight):
    """``(..., C, H, W)`` -> ``(..., C*H*W, 1, 1)`` in C,H,W order or (CHANNEL_LAST) H,W,C."""
    x = inputs[0]
    if x.ndim < 4:
        return [x]
    if layer.flatten.mode == CHANNEL_LAST:
        x = np.moveaxis(x, -3, -1)
    return [x.reshape(x.shape[:-3] + (-1, 1, 1))]


@register_forward("reshape")
def reshape(layer, inputs, weight):
    """Rank-5 reshape on ``(B[, Seq], C, H, W)``; a 3-value target keeps Seq, 4 values set it.

    CHANNEL_LAST reads the input in H,W,C order and writes the target in H,W,C order.
    """
    params = layer.reshape
    x = inputs[0]
    x5 = x[:, None, :, None, None] if x.ndim == 2 else x[:, None] if x.ndim == 4 else x
    if x5.ndim != 5:
        raise ValueError(f"reshape needs a rank-1, 3 or 4 input per example, got {x.shape[1:]}")
    target = [int(v) for v in params.targetShape]
    if len(target) not in (3, 4):
        raise ValueError(f"targetShape must have 3 or 4 values, got {target}")
    seq, (c, h, w) = (x5.shape[1], target) if len(target) == 3 else (target[0], target[1:])
    channel_last = params.mode == nn_pb.ReshapeLayerParams.CHANNEL_LAST
    if channel_last:
        x5 = np.moveaxis(x5, 2, 4)
    flat = x5.reshape(x5.shape[0], -1)
    if flat.shape[1] != seq * c * h * w:
        raise ValueError(f"cannot reshape {x.shape[1:]} ({flat.shape[1]} values) to {target}")
    y = (np.moveaxis(flat.reshape(-1, seq, h, w, c), 4, 2) if channel_last
         else flat.reshape(-1, seq, c, h, w))
    return [y if x.ndim == 5 or seq != 1 else y[:, 0]]
