"""Core ML features in and out of the runtime: batching, images, classifier outputs.

A call gives either **one example** (every value shaped like its feature description: a
MultiArray of the declared shape, an image as an ``H x W x C`` array or a PIL image, a label
as ``str``/``int``) or **a batch** (the same with a leading batch axis; images may also be a
list of PIL images; labels a list or 1-D array). All inputs of one call must agree; results
come back in the same form.

Inside, every feature is batched: MultiArrays as ``(B, *shape)`` arrays, images as
``(B, C, H, W)`` float arrays already in the model's channel order (before the network's
preprocessing), labels as 1-D arrays, probability dictionaries as lists of dicts.

Image arrays are read in RGB order (like PIL) and reordered to BGR when the model asks for it.

Sequences: a MultiArray declared ``[C]`` or ``[C, H, W]`` may carry a sequence the way Core ML's
rank-5 input mapping reads it, one example being ``[Seq, 1, C]`` (or ``[Seq, 1, C, H, W]``:
Seq, Batch, then the declared shape) and a batch adding a leading axis. Inside, such a feature
becomes the blob ``(B, Seq, C, H, W)``; an output that is a sequence comes back the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._proto import FeatureTypes_pb2
from ..errors import ConfigError, InputShapeError

ColorSpace = FeatureTypes_pb2.ImageFeatureType
GRAY_SPACES = (ColorSpace.GRAYSCALE, ColorSpace.GRAYSCALE_FLOAT16)


def feature_kind(description) -> str:
    return description.type.WhichOneof("Type") or ""


def _is_pil(value: Any) -> bool:
    return (
        hasattr(value, "convert") and hasattr(value, "size") and not isinstance(value, np.ndarray)
    )


def _image_is_batched(image_type, value: Any) -> bool:
    if _is_pil(value):
        return False
    if isinstance(value, (list, tuple)):
        return True
    array = np.asarray(value)
    if image_type.colorSpace in GRAY_SPACES:
        if array.ndim == 3:  # (H, W, 1) is one image; (B, H, W) a batch
            return not (array.shape[2] == 1 and array.shape[0] == image_type.height)
        return array.ndim == 4
    return array.ndim == 4


def declared_rank(array_type) -> int:
    """Rank of one example of a MultiArray feature: its default shape's, else its flexible
    shapes' (a description may give only a shape range or enumerated shapes)."""
    if len(array_type.shape):
        return len(array_type.shape)
    flex = array_type.WhichOneof("ShapeFlexibility")
    if flex == "shapeRange":
        return len(array_type.shapeRange.sizeRanges)
    if flex == "enumeratedShapes" and array_type.enumeratedShapes.shapes:
        return len(array_type.enumeratedShapes.shapes[0].shape)
    return 0


def shape_allowed(array_type, shape: tuple[int, ...]) -> bool:
    """Whether Core ML accepts a MultiArray of ``shape`` for this feature.

    Core ML checks the array against the feature description (``MLFeatureDescription``): the
    declared shape when the feature is not flexible, else one of ``enumeratedShapes`` or a
    shape within ``shapeRange`` (same rank; an upper bound of -1 is unbounded), the forms
    Apple's interface validator (``InterfaceValidators.cpp``) checks the defaults against. A
    feature that declares no shape at all (possible between pipeline stages) takes any shape.
    """
    shape = tuple(int(d) for d in shape)
    flex = array_type.WhichOneof("ShapeFlexibility")
    if flex == "enumeratedShapes":
        shapes = {tuple(int(d) for d in s.shape) for s in array_type.enumeratedShapes.shapes}
        return shape in shapes or shape == tuple(array_type.shape)
    if flex == "shapeRange":
        ranges = array_type.shapeRange.sizeRanges
        return len(ranges) == len(shape) and all(
            r.lowerBound <= d and (r.upperBound < 0 or d <= r.upperBound)
            for r, d in zip(ranges, shape)
        )
    declared = tuple(int(d) for d in array_type.shape)
    return not declared or shape == declared


def allowed_text(array_type) -> str:
    """The shapes a MultiArray feature allows, for messages."""
    flex = array_type.WhichOneof("ShapeFlexibility")
    if flex == "enumeratedShapes":
        return "one of " + ", ".join(
            str(tuple(int(d) for d in s.shape)) for s in array_type.enumeratedShapes.shapes
        )
    if flex == "shapeRange":
        parts = [
            f"{r.lowerBound}"
            if r.lowerBound == r.upperBound
            else f"{r.lowerBound}..{r.upperBound if r.upperBound >= 0 else ''}"
            for r in array_type.shapeRange.sizeRanges
        ]
        return "(" + ", ".join(parts) + ")"
    return str(tuple(int(d) for d in array_type.shape))


def _sequence_form(array_type, shape: tuple[int, ...], batched: bool) -> bool:
    """Whether an array of ``shape`` is Core ML's ``[Seq, 1, *declared]`` (per example).

    NeuralNetwork.proto (``RANK5_ARRAY_MAPPING``): a rank 1 or rank 3 MultiArray input maps
    to the rank-5 tensor ``[Seq, Batch, C, H, W]``, and "at runtime, the first two dimensions
    (Seq or Batch) can be presented as well".
    """
    lead = 3 if batched else 2
    rank = declared_rank(array_type)
    return (
        rank in (1, 3)
        and len(shape) == rank + lead
        and shape[lead - 1] == 1
        and shape_allowed(array_type, tuple(shape[lead:]))
    )


def is_batched(description, value: Any) -> bool:
    kind = feature_kind(description)
    if kind == "imageType":
        return _image_is_batched(description.type.imageType, value)
    if kind == "multiArrayType":
        array_type = description.type.multiArrayType
        if _sequence_form(array_type, np.shape(value), batched=False):
            return False
        return np.ndim(value) > max(declared_rank(array_type), 1)
    return np.ndim(value) >= 1 and not isinstance(value, (str, bytes, dict))


def to_channel_first(x: Any) -> np.ndarray:
    """Channel-last data (``..., H, W, C``: Keras, TensorFlow, PIL, most image loaders) in the
    channel-first layout ``..., C, H, W`` every exported model takes.

    Works on one example ``(H, W, C)`` and on a batch ``(N, H, W, C)``. The runtime never
    guesses a layout: an array in the wrong one is refused with a pointer to this function.
    """
    array = np.asarray(x)
    if array.ndim < 3:
        raise ConfigError(
            f"to_channel_first needs an (H, W, C) example or an (N, H, W, C) "
            f"batch, got shape {array.shape}"
        )
    return np.ascontiguousarray(np.moveaxis(array, -1, -3))


def check_multiarray_shape(description, example_shape: tuple[int, ...]) -> None:
    """Refuse one example's MultiArray shape when Core ML would (InputShapeError)."""
    array_type = description.type.multiArrayType
    shape = tuple(int(d) for d in example_shape)
    if shape_allowed(array_type, shape) or _sequence_form(array_type, shape, batched=False):
        return
    if shape == () and math.prod(array_type.shape) == 1 and len(array_type.shape):
        return  # one number for a one-value array (a target label or value): nothing to reorder
    message = (
        f"input {description.name!r}: the model expects a MultiArray of shape "
        f"{allowed_text(array_type)} per example, got {shape}; Core ML refuses it"
    )
    if len(shape) >= 3 and shape_allowed(array_type, shape[:-3] + (shape[-1],) + shape[-3:-1]):
        message += (
            ". The array is in channel-last (H, W, C) layout; the exported model is "
            "channel-first (C, H, W): convert it with "
            "updatable_coreml.runtime.to_channel_first(x) (simulate: --layout nhwc)"
        )
    else:
        message += ". Resize or reshape the data yourself; the runtime never reshapes it"
    raise InputShapeError(message)


def _image_array(image_type, value: Any, name: str) -> np.ndarray:
    """One image as ``(C, H, W)`` float64 in the model's channel order."""
    gray = image_type.colorSpace in GRAY_SPACES
    if _is_pil(value):
        value = value.convert("L" if gray else "RGB")
    array = np.asarray(value, dtype=np.float64)
    if gray and array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if gray != (array.ndim == 2) or (not gray and (array.ndim != 3 or array.shape[2] != 3)):
        want = "H x W grayscale" if gray else "H x W x 3 (RGB)"
        raise ConfigError(
            f"image input {name!r}: expected an {want} image, got shape {array.shape}"
        )
    flexible = image_type.WhichOneof("SizeFlexibility") is not None
    if not flexible and array.shape[:2] != (image_type.height, image_type.width):
        raise ConfigError(
            f"image input {name!r} is {array.shape[1]}x{array.shape[0]} (WxH), the model expects "
            f"{image_type.width}x{image_type.height}: resize it first"
        )
    if gray:
        return array[None]
    if image_type.colorSpace == ColorSpace.BGR:
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _batch_value(description, value: Any, batched: bool) -> Any:
    kind = feature_kind(description)
    name = description.name
    if kind == "imageType":
        images = list(value) if batched else [value]
        if not images:
            raise ConfigError(f"image input {name!r}: the batch is empty")
        arrays = [_image_array(description.type.imageType, image, name) for image in images]
        return np.stack(arrays)
    if kind == "multiArrayType":
        array = np.asarray(value)
        if array.dtype == object or not np.issubdtype(array.dtype, np.number):
            raise ConfigError(f"input {name!r} must be numeric, got {array.dtype}")
        array = array if batched else array[None]
        if array.ndim == 0:
            raise InputShapeError(
                f"input {name!r}: a batch needs a leading batch axis, got a scalar"
            )
        check_multiarray_shape(description, array.shape[1:])
        return array
    if kind in ("int64Type", "stringType", "doubleType"):
        return np.asarray(value) if batched else np.asarray([value])
    return value if batched else [value]


def batch_features(
    descriptions, features: Mapping[str, Any], batched: bool | None = None
) -> tuple[dict, int, bool]:
    """Normalize ``features`` for ``descriptions`` to the batched form.

    ``batched`` says which form the caller used; None detects it from the shapes. Returns
    (batched features, batch size, whether the caller passed a batch).
    """
    if not isinstance(features, Mapping):
        raise ConfigError(
            f"features must be a dict of name -> value, got {type(features).__name__}"
        )
    missing = [d.name for d in descriptions if d.name not in features and not d.type.isOptional]
    if missing:
        raise ConfigError(
            f"missing input feature(s) {', '.join(map(repr, missing))}; the model "
            f"takes {', '.join(repr(d.name) for d in descriptions)}"
        )
    present = [d for d in descriptions if d.name in features]
    if batched is None:
        modes = {d.name: is_batched(d, features[d.name]) for d in present}
        if len(set(modes.values())) > 1:
            raise ConfigError(
                "give every input as one example or every input as a batch; got "
                + ", ".join(f"{n!r} {'batched' if b else 'single'}" for n, b in modes.items())
            )
        batched = bool(modes) and next(iter(modes.values()))
    out = {d.name: _batch_value(d, features[d.name], batched) for d in present}
    sizes = {name: len(value) for name, value in out.items()}
    if len(set(sizes.values())) > 1:
        raise ConfigError(f"inputs have different batch sizes: {sizes}")
    return out, next(iter(sizes.values()), 1), batched


def examples_batched(descriptions, examples: Mapping[str, Any]) -> bool:
    """Whether training examples given as one dict are a batch (any value batched) or one
    example (every value shaped like its description), so ``update`` takes one example the
    way ``predict`` does."""
    if not isinstance(examples, Mapping):
        raise ConfigError(
            f"examples must be a dict of name -> values or a list of such dicts, "
            f"got {type(examples).__name__}"
        )
    return any(is_batched(d, examples[d.name]) for d in descriptions if d.name in examples)


def unbatch(outputs: Mapping[str, Any]) -> dict:
    """The first (only) example of each batched output."""
    return {
        name: value[0].item() if isinstance(value, np.ndarray) and value.ndim == 1 else value[0]
        for name, value in outputs.items()
    }


# -- network edges ------------------------------------------------------------------------------


def preprocess_image(preprocessing, images: np.ndarray, color_space: int) -> np.ndarray:
    """Apply a NeuralNetworkPreprocessing (scaler or mean image) to ``(B, C, H, W)`` images."""
    kind = preprocessing.WhichOneof("preprocessor")
    if kind == "meanImage":
        mean = np.asarray(preprocessing.meanImage.meanImage, dtype=images.dtype)
        return images - mean.reshape(images.shape[1:])
    if kind != "scaler":
        return images
    scaler = preprocessing.scaler
    if color_space in GRAY_SPACES:
        bias = [scaler.grayBias]
    elif color_space == ColorSpace.BGR:
        bias = [scaler.blueBias, scaler.greenBias, scaler.redBias]
    else:
        bias = [scaler.redBias, scaler.greenBias, scaler.blueBias]
    return images * scaler.channelScale + np.asarray(bias, dtype=images.dtype).reshape(-1, 1, 1)


def _step_shape(declared: tuple[int, ...]) -> tuple[int, ...]:
    return declared + (1, 1) if len(declared) == 1 else declared


def multiarray_blob(description, values: np.ndarray, dtype) -> np.ndarray:
    """A batched MultiArray as a blob; sequences become ``(B, Seq, C, H, W)``.

    A feature the caller gave is already checked (``check_multiarray_shape``). Between the
    stages of a pipeline a blob may arrive flattened or with unit axes (a backbone's
    ``(C, 1, 1)`` read as ``(C,)``): only then, with equal sizes and a shape the description
    does not allow, is it viewed in the declared shape.
    """
    array_type = description.type.multiArrayType
    shape = tuple(array_type.shape)
    array = np.asarray(values, dtype=dtype)
    if _sequence_form(array_type, array.shape, batched=True):
        return array.reshape(array.shape[:2] + _step_shape(array.shape[3:]))
    if (
        shape
        and not shape_allowed(array_type, array.shape[1:])
        and array[0].size == int(np.prod(shape))
    ):
        return array.reshape((array.shape[0],) + shape)
    return array


def output_array(description, blob: np.ndarray) -> np.ndarray:
    """A blob as a batched MultiArray output of the declared shape when the sizes agree."""
    shape = (
        tuple(description.type.multiArrayType.shape)
        if feature_kind(description) == "multiArrayType"
        else ()
    )
    if shape and blob[0].size == int(np.prod(shape)):
        return blob.reshape((blob.shape[0],) + shape)
    if len(shape) in (1, 3) and blob.ndim == 5 and blob.shape[2:] == _step_shape(shape):
        return blob.reshape(blob.shape[:2] + (1,) + shape)
    return blob
