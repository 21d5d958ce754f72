"""Object-detection layers (NeuralNetwork.proto, specification 4+): NonMaximumSuppression and
cropResize (forward, size estimate).

Choices the proto leaves open, taken here and named so a device comparison can revisit them
(Core ML's implementation is not public):

* NMS: boxes are visited in descending order of their best class score, equal scores in index
  order; a box whose score is below ``scoreThreshold`` is rejected (a score equal to it stays);
  a box is suppressed when its IoU with a kept box is strictly above ``iouThreshold`` ("over
  which boxes are suppressed"); a box of zero union area overlaps nothing. Survivors come out
  in the order they were kept (descending score), with per-class suppression too.
* cropResize: a box's sampling grid is the ``SamplingMode`` formula on the box's interval,
  ``[start, end]`` read as ``[0, X - 1]`` shifted by ``start`` (the reading under which
  coremltools maps TensorFlow's ``crop_and_resize`` to ``ALIGN_ENDPOINTS_MODE``, in
  ``frontend/tensorflow/ops.py``); a sample outside the image is 0 (coremltools refuses any
  other TensorFlow ``extrapolation_value`` before iOS 16, which the NeuralNetwork layer cannot
  express); an unset (0) ``spatialScale`` reads as 1 (coremltools always writes it, default 1).
"""

from __future__ import annotations

import math

import numpy as np

from ..._proto import NeuralNetwork_pb2 as nn_pb
from ..registry import WeightGetter, register_estimate, register_forward
from .common import Blobs, _fail, _values
from .resize import _sampling_grid

Sampling = nn_pb.SamplingMode
Boxes = nn_pb.BoxCoordinatesMode


# -- NonMaximumSuppression ----------------------------------------------------------------------


def _corners(boxes: np.ndarray) -> np.ndarray:
    """``(x_center, y_center, width, height)`` -> ``(x1, y1, x2, y2)``."""
    half = boxes[:, 2:] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def _area(corners: np.ndarray) -> np.ndarray:
    return np.abs((corners[..., 2] - corners[..., 0]) * (corners[..., 3] - corners[..., 1]))


def _iou_with(corners: np.ndarray, i: int, others: np.ndarray) -> np.ndarray:
    """IoU of box ``i`` with the boxes ``others`` (indices), 0 where the union is empty."""
    a, b = corners[i], corners[others]
    width = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = width * height
    union = _area(a) + _area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def suppress(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    score_threshold: float,
    max_boxes: int,
    per_class: bool,
) -> list[int]:
    """Indices of the boxes (``(N, 4)`` centre-size) that survive, in output order."""
    best = scores.max(axis=1)
    label = scores.argmax(axis=1)
    order = np.argsort(-best, kind="stable")
    if not len(order):
        return []
    candidates = order[best[order] >= score_threshold]
    if not len(candidates):  # the proto: then the box with the highest score, count 1
        return [int(order[0])]
    corners = _corners(boxes.astype(np.float64))
    alive = np.ones(len(boxes), dtype=bool)
    kept: list[int] = []
    for position, i in enumerate(candidates):
        if not alive[i]:
            continue
        kept.append(int(i))
        if len(kept) == max_boxes:
            break
        rest = candidates[position + 1 :]
        rest = rest[alive[rest]]
        if per_class:
            rest = rest[label[rest] == label[i]]
        alive[rest[_iou_with(corners, i, rest) > iou_threshold]] = False
    return kept


def _override(layer, inputs: Blobs, index: int, default: float) -> float:
    """Inputs 3-5 of shape (1,) overwrite the layer's thresholds and maxBoxes when present."""
    if len(inputs) <= index:
        return float(default)
    return float(_values(layer, inputs[index], "NMS parameter")[0])


@register_forward("NonMaximumSuppression")
def non_maximum_suppression(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Boxes ``(..., N, 4)`` and scores ``(..., N, C)`` -> the kept boxes ``(..., maxBoxes,
    4)`` and scores ``(..., maxBoxes, C)`` padded with 0, their indices ``(..., maxBoxes)``
    padded with -1, and their count ``(...)``; every leading axis is a batch."""
    params = layer.NonMaximumSuppression
    boxes, scores = inputs[0], inputs[1]
    if boxes.ndim < 2 or boxes.shape[-1] != 4:
        raise _fail(layer, f"boxes must be (B, N, 4), got {boxes.shape[1:]}")
    if scores.shape[:-1] != boxes.shape[:-1] or scores.shape[-1] < 1:
        raise _fail(layer, f"scores {scores.shape[1:]} do not match boxes {boxes.shape[1:]}")
    iou_threshold = _override(layer, inputs, 2, params.iouThreshold)
    score_threshold = _override(layer, inputs, 3, params.scoreThreshold)
    max_boxes = _override(layer, inputs, 4, params.maxBoxes)
    if not (max_boxes >= 1 and max_boxes.is_integer()):
        raise _fail(layer, f"maxBoxes {max_boxes} must be a positive whole number")
    count = int(max_boxes)
    lead, classes = boxes.shape[:-2], scores.shape[-1]
    dtype = boxes.dtype if boxes.dtype.kind == "f" else np.dtype(np.float32)
    out_boxes = np.zeros(lead + (count, 4), dtype=dtype)
    out_scores = np.zeros(lead + (count, classes), dtype=dtype)
    out_indices = np.full(lead + (count,), -1, dtype=dtype)
    out_count = np.zeros(lead, dtype=dtype)
    for at in np.ndindex(*lead):
        kept = suppress(
            boxes[at], scores[at], iou_threshold, score_threshold, count,
            params.perClassSuppression,
        )  # fmt: skip
        out_boxes[at][: len(kept)] = boxes[at][kept]
        out_scores[at][: len(kept)] = scores[at][kept]
        out_indices[at][: len(kept)] = kept
        out_count[at] = len(kept)
    return [out_boxes, out_scores, out_indices, out_count]


@register_estimate("NonMaximumSuppression")
def nms_size(layer, inputs) -> int:
    boxes, scores = inputs[0], inputs[1]
    count = float(layer.NonMaximumSuppression.maxBoxes)
    if len(inputs) > 4 and np.size(inputs[4]):
        count = float(np.asarray(inputs[4]).reshape(-1)[0])
    if not math.isfinite(count):
        return 0  # refused by the forward op
    per_set = max(int(count), 1) * (4 + (scores.shape[-1] if scores.ndim else 1))
    return math.prod(boxes.shape[1:-2]) * per_set


# -- cropResize ---------------------------------------------------------------------------------


def _box_intervals(box: np.ndarray, mode: int) -> tuple[float, float, float, float]:
    """``(h_start, h_end, w_start, w_end)`` of four coordinates in ``BoxCoordinatesMode``."""
    a, b, c, d = (float(v) for v in box)
    if mode == Boxes.CORNERS_HEIGHT_FIRST:
        return a, c, b, d
    if mode == Boxes.CORNERS_WIDTH_FIRST:
        return b, d, a, c
    if mode == Boxes.CENTER_SIZE_HEIGHT_FIRST:
        return a - c / 2, a + c / 2, b - d / 2, b + d / 2
    return b - d / 2, b + d / 2, a - c / 2, a + c / 2  # CENTER_SIZE_WIDTH_FIRST


def _box_grid(start: float, end: float, size_out: int, method: int) -> np.ndarray:
    """The ``SamplingMode`` grid on ``[start, end]``: the interval ``[0, X - 1]`` of the
    proto's formulas with ``X - 1 = end - start``, shifted by ``start``."""
    return start + _sampling_grid(end - start + 1, size_out, method)


def _sample(view: np.ndarray, grid: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis`` at ``grid``; 0 outside ``[0, size - 1]``."""
    size = view.shape[axis]
    lo = np.clip(np.floor(grid), 0, size - 1).astype(np.int64)
    hi = np.minimum(lo + 1, size - 1)
    frac = np.clip(grid - lo, 0, 1)
    inside = ((grid >= 0) & (grid <= size - 1)).astype(np.float64)
    shape = [1] * view.ndim
    shape[axis] = grid.size
    low, high = np.take(view, lo, axis=axis), np.take(view, hi, axis=axis)
    mix = (low * (1 - frac.reshape(shape)) + high * frac.reshape(shape)) * inside.reshape(shape)
    return mix.astype(view.dtype, copy=False)


def _crop_resize(layer, images: np.ndarray, rois: np.ndarray) -> np.ndarray:
    """Core ML's tensors without our batch axis: images ``(Batch, C, H, W)``, RoIs ``(N,
    4)`` or ``(N, 5)`` -> ``(N, Batch, C, h, w)`` or ``(N, 1, C, h, w)``."""
    params = layer.cropResize
    target = [int(d) for d in params.targetSize] or [1, 1]
    if len(target) != 2 or min(target) < 1:  # Apple's validator: size 2 if given
        raise _fail(layer, f"targetSize must be two positive sizes, got {target}")
    method = params.mode.samplingMethod
    if method not in Sampling.Method.values():
        raise _fail(layer, f"unknown sampling method {method}")
    box_mode = params.boxIndicesMode.boxMode
    if box_mode not in Boxes.Coordinates.values():
        raise _fail(layer, f"unknown box coordinates mode {box_mode}")
    batch, _, height, width = images.shape
    scale = float(params.spatialScale) or 1.0
    crops = []
    for roi in rois:
        chosen = images
        if len(roi) == 5:
            index = float(roi[0])
            if not (index.is_integer() and 0 <= index < batch):
                raise _fail(layer, f"RoI batch index {roi[0]} is not in [0, {batch - 1}]")
            chosen = images[int(index) : int(index) + 1]
        h0, h1, w0, w1 = _box_intervals(roi[-4:], box_mode)
        if params.normalizedCoordinates:
            h0, h1, w0, w1 = (
                h0 * (height - 1),
                h1 * (height - 1),
                w0 * (width - 1),
                w1 * (width - 1),
            )
        h0, h1, w0, w1 = h0 * scale, h1 * scale, w0 * scale, w1 * scale
        rows = _sample(chosen, _box_grid(h0, h1, target[0], method), axis=-2)
        crops.append(_sample(rows, _box_grid(w0, w1, target[1], method), axis=-1))
    return np.stack(crops) if crops else np.zeros((0, batch, images.shape[1]) + tuple(target))


@register_forward("cropResize")
def crop_resize(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Crops of the boxes in input 2 from the image map of input 1, bilinearly resized.

    Core ML's tensors are ``[1, Batch, C, H, W]`` and ``[N, 1, 4 or 5, 1, 1]``. In an ND model
    (exact shape mapping) each blob carries them behind our batch axis (ranks 6 and 6); in a
    rank-5-mapped model our batch axis is Core ML's Batch, the image blob is ``(Batch, C, H,
    W)`` and the RoIs travel on the sequence axis, ``(1, N, 4 or 5, 1, 1)``; the output
    ``[N, Batch, C, h, w]`` then travels as ``(Batch, N, C, h, w)``.
    """
    x, rois = inputs[0], inputs[1]
    if rois.ndim == 6:  # ND: one crop per example of our batch
        if x.ndim != 6 or x.shape[1] != 1:
            raise _fail(layer, f"the image input must be [1, Batch, C, H, W], got {x.shape[1:]}")
        if rois.shape[2:] not in ((1, 4, 1, 1), (1, 5, 1, 1)):
            raise _fail(layer, f"the RoI input must be [N, 1, 4 or 5, 1, 1], got {rois.shape[1:]}")
        if len(rois) not in (1, len(x)):
            raise _fail(layer, f"inputs have different batch sizes {len(x)} and {len(rois)}")
        return [
            np.stack(
                [
                    _crop_resize(layer, x[e, 0], rois[e % len(rois)].reshape(rois.shape[1], -1))
                    for e in range(len(x))
                ]
            )
        ]
    if rois.ndim != 5 or rois.shape[2:] not in ((4, 1, 1), (5, 1, 1)):
        raise _fail(layer, f"the RoI input must be [N, 1, 4 or 5, 1, 1], got {rois.shape}")
    images = x if x.ndim == 4 else x.reshape((-1,) + x.shape[-3:])
    if x.ndim not in (4, 5) or len(images) != len(x):
        raise _fail(layer, f"the image input must be (Batch, C, H, W), got {x.shape}")
    boxes = _values(layer, rois, "RoI").reshape(rois.shape[1], -1)
    return [_crop_resize(layer, images, boxes).swapaxes(0, 1)]


@register_estimate("cropResize")
def crop_resize_size(layer, inputs) -> int:
    x, rois = inputs[0], inputs[1]
    target = [max(int(d), 1) for d in layer.cropResize.targetSize] or [1, 1]
    channels = x.shape[-3] if x.ndim >= 3 else 1
    batch = x.shape[-4] if rois.ndim == 6 and x.ndim >= 4 else 1
    count = rois.shape[1] if rois.ndim >= 2 else 1
    return count * batch * channels * math.prod(target)
