"""3-D (volumetric) layers of NeuralNetwork.proto: convolution3d and pooling3d, on tensors
``[N, C, D, H, W]`` (extra leading blob axes fold into N). Padding per the proto: CUSTOM
amounts, VALID (none; a partial last window is dropped), SAME (output ``ceil(in / stride)``,
an odd total padding puts the extra zero at the back/bottom/right)."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..._proto import NeuralNetwork_pb2 as nn_pb
from ..registry import WeightGetter, register_forward
from .common import Blobs, _fail

Conv3D = nn_pb.Convolution3DLayerParams
Pool3D = nn_pb.Pooling3DLayerParams
Triple = tuple[int, int, int]


def _pads(
    layer, params, kind: int, sizes: Triple, kernel: Triple, stride: Triple, dilation: Triple
) -> list[tuple[int, int]]:
    if kind == 0:  # CUSTOM
        front = (params.customPaddingFront, params.customPaddingTop, params.customPaddingLeft)
        back = (params.customPaddingBack, params.customPaddingBottom, params.customPaddingRight)
        if min(front + back) < 0:
            raise _fail(layer, "custom padding must not be negative")
        return [(int(f), int(b)) for f, b in zip(front, back, strict=True)]
    if kind == 1:  # VALID
        return [(0, 0)] * 3
    pads = []
    for n, k, s, d in zip(sizes, kernel, stride, dilation, strict=True):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _windows(x: np.ndarray, kernel: Triple, stride: Triple, dilation: Triple) -> np.ndarray:
    """``(N, C, oD, oH, oW, kd, kh, kw)`` view of the padded ``x`` (N, C, D, H, W)."""
    span = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))
    if any(n < s for n, s in zip(x.shape[2:], span, strict=True)):
        raise ValueError(f"the kernel span {span} exceeds the padded input {x.shape[2:]}")
    view = sliding_window_view(x, span, axis=(2, 3, 4))
    (sd, sh, sw), (dd, dh, dw) = stride, dilation
    return view[:, :, ::sd, ::sh, ::sw, ::dd, ::dh, ::dw]


def _volumes(layer, x: np.ndarray, channels: int | None = None) -> np.ndarray:
    if x.ndim < 5 or (channels is not None and x.shape[-4] != channels):
        raise _fail(
            layer,
            f"needs a [N, C, D, H, W] input{f' with C={channels}' if channels else ''}"
            f", got shape {x.shape[1:]}",
        )
    return x.reshape((-1,) + x.shape[-4:])


def _triples(*values) -> list[Triple]:
    return [(max(int(a), 1), max(int(b), 1), max(int(c), 1)) for a, b, c in values]


@register_forward("convolution3d")
def convolution_3d(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Grouped, strided, dilated 3-D convolution (cross-correlation, like torch's conv3d)."""
    p = layer.convolution3d
    if p.isDeconvolution:
        raise _fail(layer, "a 3-D transposed convolution is not supported by the reference runtime")
    x = inputs[0]
    cin, cout, groups = int(p.inputChannels), int(p.outputChannels), max(int(p.nGroups), 1)
    v = _volumes(layer, x, cin)
    kernel, stride, dilation = _triples(
        (p.kernelDepth, p.kernelHeight, p.kernelWidth),
        (p.strideDepth, p.strideHeight, p.strideWidth),
        (p.dilationDepth, p.dilationHeight, p.dilationWidth),
    )
    w = weight("weights")
    if cin % groups or cout % groups or w.size != cout * (cin // groups) * math.prod(kernel):
        raise _fail(
            layer,
            f"{w.size} weights do not fit {cout} x {cin // groups} x {kernel} in {groups} groups",
        )
    w = w.reshape((cout, cin // groups) + kernel)
    pads = _pads(layer, p, p.paddingType, v.shape[2:], kernel, stride, dilation)
    cols = _windows(np.pad(v, [(0, 0), (0, 0)] + pads), kernel, stride, dilation)
    gin, gout = cin // groups, cout // groups
    parts = [
        np.tensordot(
            cols[:, g * gin : (g + 1) * gin],
            w[g * gout : (g + 1) * gout],
            axes=([1, 5, 6, 7], [1, 2, 3, 4]),
        )
        for g in range(groups)
    ]
    y = np.concatenate(parts, axis=-1).transpose(0, 4, 1, 2, 3)
    if p.hasBias:
        y = y + weight("bias").reshape(-1, 1, 1, 1)
    return [np.ascontiguousarray(y).reshape(x.shape[:-4] + y.shape[1:])]


@register_forward("pooling3d")
def pooling_3d(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Max or average 3-D pooling; padded zeros count in an average unless
    ``countExcludePadding`` (and never win a max)."""
    p = layer.pooling3d
    x = inputs[0]
    v = _volumes(layer, x)
    kernel, stride = _triples(
        (p.kernelDepth, p.kernelHeight, p.kernelWidth),
        (p.strideDepth, p.strideHeight, p.strideWidth),
    )
    pads = _pads(layer, p, p.paddingType, v.shape[2:], kernel, stride, (1, 1, 1))
    width = [(0, 0), (0, 0)] + pads
    if p.type == Pool3D.MAX:
        cols = _windows(np.pad(v, width, constant_values=-np.inf), kernel, stride, (1, 1, 1))
        y = cols.max(axis=(5, 6, 7))
    else:
        y = _windows(np.pad(v, width), kernel, stride, (1, 1, 1)).sum(axis=(5, 6, 7))
        if p.countExcludePadding:
            ones = np.pad(np.ones((1, 1) + v.shape[2:], dtype=v.dtype), width)
            y = y / _windows(ones, kernel, stride, (1, 1, 1)).sum(axis=(5, 6, 7))
        else:
            y = y / math.prod(kernel)
    return [y.reshape(x.shape[:-4] + y.shape[1:])]
