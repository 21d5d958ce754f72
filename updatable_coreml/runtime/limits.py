"""Size limits of the reference runtime: a model file is untrusted input.

A few bytes of protobuf can declare a ``2**40``-element input, an upsampling factor of a
billion or a padding of ``2**62`` pixels. Before NumPy allocates anything for such a model,
the runtime refuses it with a clean error:

* ``load`` refuses a feature (input, output, training input) whose declared MultiArray
  shape or image size holds more than ``MAX_BLOB_ELEMENTS`` values per example, or has a
  negative dimension.
* before each layer runs, the layers whose output size comes from their parameters
  (convolution and pooling padding, transposed convolution, upsample, resizeBilinear,
  padding, sequenceRepeat, embedding, broadcasting elementwise ops, ...) are checked against
  ``MAX_BLOB_ELEMENTS`` per example with their family's size estimate
  (``registry.ESTIMATES``), and every layer's outputs are checked after it ran.
* a ``MemoryError`` inside a layer becomes a ``RuntimeLayerError`` naming the layer.

``MAX_BLOB_ELEMENTS`` (``2**26``, 256 MiB of float32 per example and blob) is far above
what an on-device model uses (a 224x224 RGB image is 150,528 values); raise it by setting
``updatable_coreml.runtime.limits.MAX_BLOB_ELEMENTS`` if a model really needs more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ModelFileError, RuntimeLayerError
from .layers.common import _per_example
from .registry import ESTIMATES

MAX_BLOB_ELEMENTS = 2**26


def _refuse_feature(where: str, name: str, what: str) -> None:
    raise ModelFileError(
        f"{where}feature {name!r} {what}; the reference runtime refuses blobs of "
        f"more than {MAX_BLOB_ELEMENTS:,} values per example (a damaged or "
        "hostile file?); fix the shape in the model"
    )


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


def _refuse_layer(layer, what: str) -> None:
    raise RuntimeLayerError(
        f"layer {layer.name!r} ({layer.WhichOneof('layer')}): {what}, more than "
        f"the reference runtime's limit of {MAX_BLOB_ELEMENTS:,} values per "
        "example (a damaged or hostile file?); check the layer's parameters"
    )


def check_layer_inputs(layer, inputs: Sequence[np.ndarray]) -> None:
    """Refuse a layer whose parameters would make an output beyond the limit (the layer
    family's size estimate, ``registry.ESTIMATES``)."""
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
