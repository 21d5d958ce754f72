"""Size limits of the reference runtime: a model file is untrusted input.

A few bytes of protobuf can declare a ``2**40``-element input, an upsampling factor of a
billion or a padding of ``2**62`` pixels. Before NumPy allocates anything for such a model,
the runtime refuses it with a clean error:

* ``load`` refuses a feature (input, output, training input) whose declared MultiArray
  shape or image size holds more than ``MAX_BLOB_ELEMENTS`` values per example, or has a
  negative dimension.
* before each layer runs, the layers whose output size comes from their parameters
  (convolution and pooling padding, transposed convolution, upsample, resizeBilinear,
  padding, sequenceRepeat, embedding, broadcasting elementwise ops) are checked against
  ``MAX_BLOB_ELEMENTS`` per example, and every layer's outputs are checked after it ran.
* a ``MemoryError`` inside a layer becomes a ``RuntimeLayerError`` naming the layer.

``MAX_BLOB_ELEMENTS`` (``2**26``, 256 MiB of float32 per example and blob) is far above
what an on-device model uses (a 224x224 RGB image is 150,528 values); raise it by setting
``updatable_coreml.runtime.limits.MAX_BLOB_ELEMENTS`` if a model really needs more.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import ModelFileError, RuntimeLayerError

MAX_BLOB_ELEMENTS = 2 ** 26


def _refuse_feature(where: str, name: str, what: str) -> None:
    raise ModelFileError(f"{where}feature {name!r} {what}; the reference runtime refuses blobs of "
                         f"more than {MAX_BLOB_ELEMENTS:,} values per example (a damaged or "
                         "hostile file?); fix the shape in the model")


def _check_shape(where: str, name: str, shape: Sequence[int]) -> None:
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        _refuse_feature(where, name, f"declares a negative dimension {dims}")
    if math.prod(dims) > MAX_BLOB_ELEMENTS:
        _refuse_feature(where, name, f"declares shape {dims} ({math.prod(dims):,} values)")


def check_description(description, where: str = "") -> None:
    """Refuse features whose declared size is negative or beyond ``MAX_BLOB_ELEMENTS``."""
    for feature in (*description.input, *description.output, *description.trainingInput):
        kind = feature.type.WhichOneof("Type")
        if kind == "multiArrayType":
            array = feature.type.multiArrayType
            _check_shape(where, feature.name, array.shape)
            for shape in array.enumeratedShapes.shapes:
                _check_shape(where, feature.name, shape.shape)
        elif kind == "imageType":
            image = feature.type.imageType
            sizes = [(image.height, image.width)]
            sizes += [(s.height, s.width) for s in image.enumeratedSizes.sizes]
            for height, width in sizes:
                _check_shape(where, feature.name, (3, height, width))


# -- layers ------------------------------------------------------------------------------


def _per_example(blob: np.ndarray) -> int:
    return blob.size // blob.shape[0] if blob.ndim and blob.shape[0] else blob.size


def _spatial(blob: np.ndarray) -> tuple[int, int]:
    """H, W of a blob seen as ``(..., C, H, W)`` (1, 1 for vectors)."""
    return (blob.shape[-2], blob.shape[-1]) if blob.ndim >= 4 else (1, 1)


def _border_sum(amounts) -> tuple[int, int]:
    edges = [int(e.startEdgeSize) + int(e.endEdgeSize) for e in amounts.borderAmounts]
    edges += [0] * (2 - len(edges))
    return edges[0], edges[1]


def _positive(values, default: int = 1) -> list[int]:
    return [max(int(v), 1) for v in values] or [default, default]


def _convolution(layer, inputs) -> int:
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
    windows = math.prod(max((n + p - k) // s + 1, 1) for n, p, k, s in
                        zip((height, width), (pad_h, pad_w), span, stride))
    channels_in = _per_example(x) // max(height * width, 1)
    return max(padded, windows * max(channels, channels_in * math.prod(kernel)))


def _pooling(layer, inputs) -> int:
    params = layer.pooling
    x = inputs[0]
    height, width = _spatial(x)
    pads = (0, 0)
    if params.HasField("valid"):
        pads = _border_sum(params.valid.paddingAmounts)
    elif params.HasField("includeLastPixel"):
        pads = tuple(2 * int(p) for p in (list(params.includeLastPixel.paddingAmounts) + [0, 0])[:2])
    return _per_example(x) // max(height * width, 1) * (height + pads[0]) * (width + pads[1])


def _padding(layer, inputs) -> int:
    x = inputs[0]
    height, width = _spatial(x) if x.ndim >= 4 else (x.shape[-1] if x.ndim == 3 else 1, 1)
    pad_h, pad_w = _border_sum(layer.padding.paddingAmounts)
    return _per_example(x) // max(height * width, 1) * (height + pad_h) * (width + pad_w)


def _upsample(layer, inputs) -> int:
    params = layer.upsample
    factors = ([math.ceil(float(f)) for f in params.fractionalScalingFactor]
               or [int(f) for f in params.scalingFactor] or [1, 1])
    return _per_example(inputs[0]) * math.prod(max(f, 1) for f in factors)


def _resize(layer, inputs) -> int:
    x = inputs[0]
    height, width = _spatial(x)
    target = [max(int(d), 1) for d in layer.resizeBilinear.targetSize] or [1, 1]
    return _per_example(x) // max(height * width, 1) * math.prod(target)


def _repeat(layer, inputs) -> int:
    return _per_example(inputs[0]) * max(int(layer.sequenceRepeat.nRepetitions), 1)


def _embedding(layer, inputs) -> int:
    return _per_example(inputs[0]) * max(int(layer.embedding.outputChannels), 1)


def _embedding_nd(layer, inputs) -> int:
    return _per_example(inputs[0]) * max(int(layer.embeddingND.embeddingSize), 1)


def _broadcast(layer, inputs) -> int:
    try:
        shape = np.broadcast_shapes(*(x.shape[1:] for x in inputs))
    except ValueError:
        return 0  # the op reports the mismatch itself
    return math.prod(shape)


ESTIMATES = {
    "convolution": _convolution, "pooling": _pooling, "padding": _padding,
    "upsample": _upsample, "resizeBilinear": _resize, "sequenceRepeat": _repeat,
    "embedding": _embedding, "embeddingND": _embedding_nd,
    **{kind: _broadcast for kind in (
        "add", "multiply", "average", "max", "min", "addBroadcastable", "subtractBroadcastable",
        "multiplyBroadcastable", "divideBroadcastable", "maxBroadcastable", "minBroadcastable",
        "powBroadcastable")},
}


def _refuse_layer(layer, what: str) -> None:
    raise RuntimeLayerError(f"layer {layer.name!r} ({layer.WhichOneof('layer')}): {what}, more than "
                            f"the reference runtime's limit of {MAX_BLOB_ELEMENTS:,} values per "
                            "example (a damaged or hostile file?); check the layer's parameters")


def check_layer_inputs(layer, inputs: Sequence[np.ndarray]) -> None:
    """Refuse a layer whose parameters would make an output beyond the limit."""
    estimate = ESTIMATES.get(layer.WhichOneof("layer"))
    if estimate is None or not inputs:
        return
    size = estimate(layer, inputs)
    if size > MAX_BLOB_ELEMENTS:
        _refuse_layer(layer, f"its parameters would make a blob of {size:,} values per example")


def check_layer_outputs(layer, outputs: Sequence[np.ndarray]) -> None:
    for blob in outputs:
        size = _per_example(np.asarray(blob)) if isinstance(blob, np.ndarray) else 0
        if size > MAX_BLOB_ELEMENTS:
            _refuse_layer(layer, f"it made a blob of {size:,} values per example")
