"""Constants stored in the file: loadConstant and loadConstantND."""

from __future__ import annotations

import math

from ..registry import WeightGetter, register_forward
from .common import Blobs, _fail


@register_forward("loadConstant")
def load_constant(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """A ``[C, H, W]`` constant as a batch of one, ``(1, C, H, W)``."""
    shape = tuple(int(d) for d in layer.loadConstant.shape)
    data = weight("data")
    if len(shape) != 3 or math.prod(shape) != data.size:
        raise _fail(layer, f"{data.size} values do not fit shape {shape} (must be [C, H, W])")
    return [data.reshape((1,) + shape)]


@register_forward("loadConstantND")
def load_constant_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """The constant as a batch of one, ``(1, *shape)``."""
    shape = tuple(int(d) for d in layer.loadConstantND.shape)
    data = weight("data")
    if math.prod(shape) != data.size:
        raise _fail(layer, f"{data.size} values do not fit shape {shape}")
    return [data.reshape((1,) + shape)]
