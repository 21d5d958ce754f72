"""Resampling: upsample and resizeBilinear (forward, size estimate)."""

from __future__ import annotations

import math

import numpy as np

from ..._proto import NeuralNetwork_pb2 as nn_pb
from ..registry import WeightGetter, register_estimate, register_forward
from .common import Blobs, _classic, _fail, _per_example, _restore, _spatial

Upsample = nn_pb.UpsampleLayerParams


Sampling = nn_pb.SamplingMode


def _interpolate(view: np.ndarray, grid: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``view`` along ``axis`` at fractional positions ``grid``."""
    lo = np.floor(grid).astype(np.int64)
    hi = np.minimum(lo + 1, view.shape[axis] - 1)
    frac = (grid - lo).astype(view.dtype)
    shape = [1] * view.ndim
    shape[axis] = grid.size
    frac = frac.reshape(shape)
    return np.take(view, lo, axis=axis) * (1 - frac) + np.take(view, hi, axis=axis) * frac


def _bilinear(view: np.ndarray, grid_h: np.ndarray, grid_w: np.ndarray) -> np.ndarray:
    return _interpolate(_interpolate(view, grid_h, -2), grid_w, -1)


def _upsample_grid(size_in: int, size_out: int, mode: int) -> np.ndarray:
    """Sample positions for bilinear upsample, per ``linearUpsampleMode`` (builder's formulas)."""
    i = np.arange(size_out, dtype=np.float64)
    if mode == Upsample.ALIGN_CORNERS_TRUE:
        grid = i * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    elif mode == Upsample.ALIGN_CORNERS_FALSE:
        spacing = size_in / size_out
        grid = i * spacing + 0.5 * spacing - 0.5
    else:  # DEFAULT
        grid = i * ((size_in - size_in / size_out) / (size_out - 1) if size_out > 1 else 0.0)
    return np.clip(grid, 0, size_in - 1)


@register_forward("upsample")
def upsample(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Nearest-neighbour or bilinear upsampling of H and W; fractional factors need bilinear."""
    params = layer.upsample
    x = inputs[0]
    view = _classic(x)
    height, width = view.shape[-2:]
    if params.fractionalScalingFactor:
        if params.mode != Upsample.BILINEAR:
            raise _fail(layer, "fractional scaling factors need BILINEAR mode")
        factors = [float(f) for f in params.fractionalScalingFactor]
    else:
        factors = [int(f) for f in params.scalingFactor] or [1, 1]
    if len(factors) != 2 or min(factors) <= 0:
        raise _fail(layer, f"scaling factors must be two positive numbers, got {factors}")
    if params.mode == Upsample.NN:
        out = view.repeat(int(factors[0]), axis=-2).repeat(int(factors[1]), axis=-1)
    elif params.mode == Upsample.BILINEAR:
        out_h, out_w = math.floor(height * factors[0]), math.floor(width * factors[1])
        mode = params.linearUpsampleMode
        out = _bilinear(
            view, _upsample_grid(height, out_h, mode), _upsample_grid(width, out_w, mode)
        )
    else:
        raise _fail(layer, f"unknown interpolation mode {params.mode}")
    return [_restore(out, x.ndim)]


def _sampling_grid(size_in: float, size_out: int, method: int) -> np.ndarray:
    """Sample positions of the spec's ``SamplingMode`` methods on ``[0, size_in - 1]``
    (``size_in`` is fractional for a cropResize box)."""
    if method == Sampling.STRICT_ALIGN_ENDPOINTS_MODE or (
        method == Sampling.ALIGN_ENDPOINTS_MODE and size_out > 1
    ):
        return np.linspace(0, size_in - 1, size_out)
    if method == Sampling.ALIGN_ENDPOINTS_MODE:
        return np.full(1, (size_in - 1) / 2)
    grid: np.ndarray
    if method == Sampling.UPSAMPLE_MODE:
        grid = np.linspace(0, size_in - size_in / size_out, size_out)
    else:  # ROI_ALIGN_MODE
        spacing = max(1, size_in - 1) / size_out
        grid = 0.5 * spacing + spacing * np.arange(size_out)
    return np.minimum(grid, size_in - 1)


@register_forward("resizeBilinear")
def resize_bilinear(layer, inputs: Blobs, weight: WeightGetter) -> list:
    params = layer.resizeBilinear
    x = inputs[0]
    view = _classic(x)
    out_h, out_w = [int(d) for d in params.targetSize] or [1, 1]
    method = params.mode.samplingMethod
    if method not in Sampling.Method.values():
        raise _fail(layer, f"unknown sampling method {method}")
    height, width = view.shape[-2:]
    grid_h, grid_w = _sampling_grid(height, out_h, method), _sampling_grid(width, out_w, method)
    out = _bilinear(view, grid_h, grid_w)
    return [_restore(out, x.ndim)]


@register_estimate("upsample")
def upsample_size(layer, inputs) -> int:
    params = layer.upsample
    factors = (
        [math.ceil(float(f)) for f in params.fractionalScalingFactor]
        or [int(f) for f in params.scalingFactor]
        or [1, 1]
    )
    return _per_example(inputs[0]) * math.prod(max(f, 1) for f in factors)


@register_estimate("resizeBilinear")
def resize_size(layer, inputs) -> int:
    x = inputs[0]
    height, width = _spatial(x)
    target = [max(int(d), 1) for d in layer.resizeBilinear.targetSize] or [1, 1]
    return _per_example(x) // max(height * width, 1) * math.prod(target)
