"""Random layers (NeuralNetwork.proto, specification 4+): randomNormal, randomUniform and
randomBernoulli in their Like / Static / Dynamic forms, and categoricalDistribution.

Not faithful to a device, by necessity: Core ML's random generator is not public (no source
in apple/coremltools or anywhere else), so no runtime can reproduce a device's values. What
the proto does define is kept exactly: the output shape (Like: the input's; Static:
``outputShape``; Dynamic: the values of the rank-1 shape input), the distribution and its
parameters. The values come from a NumPy ``Generator`` (PCG64) seeded from the layer's
``seed``, made fresh for every prediction, so a seed reproduces the same values in *this*
runtime across predictions and runs (what MIL's random ops promise for a seed on device:
"a reproducible sequence of values across multiple invokes"), and never a device's. Seed -1 is
coremltools' builder default, documented there as "random": it draws fresh entropy.

Within a batch the draws run over the examples in order, so example 0 of a batch gets the
values a batch of one gets; a Static layer, like ``fillStatic``, is a batch of one that
broadcasting layers share across the batch.
"""

from __future__ import annotations

import numpy as np

from ..registry import WeightGetter, register_estimate, register_forward
from .common import Blobs, _fail, _per_example, _shape_of
from .tensor import _fill

#: coremltools' builder default for ``seed``: "-1 (random)" (``add_random_*``,
#: ``add_categorical_distribution`` in ``models/neural_network/builder.py``)
UNSEEDED = -1
#: CategoricalDistributionLayerParams: "eps: default value is 1e-10", "temperature: default
#: value is 1.0" (NeuralNetwork.proto); proto3 stores an unset float as 0, so 0 reads as these
CATEGORICAL_EPS = 1e-10
CATEGORICAL_TEMPERATURE = 1.0


def generator(seed: int) -> np.random.Generator:
    """A fresh generator for one prediction; any int64 seed but -1 is reproducible."""
    if int(seed) == UNSEEDED:
        return np.random.default_rng()
    return np.random.default_rng(int(seed) % (1 << 64))


def _dtype(x: np.ndarray | None) -> np.dtype:
    return x.dtype if x is not None and x.dtype.kind == "f" else np.dtype(np.float32)


def _draw(layer, params, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values of the layer's distribution, float64, of ``shape``."""
    kind = layer.WhichOneof("layer")
    if kind.startswith("randomNormal"):
        if params.stdDev < 0:
            raise _fail(layer, f"stdDev {params.stdDev} is negative")
        return rng.normal(params.mean, params.stdDev, shape)
    if kind.startswith("randomUniform"):
        if params.minVal > params.maxVal:  # Apple's validator refuses it too
            raise _fail(layer, f"minVal {params.minVal} is larger than maxVal {params.maxVal}")
        return rng.uniform(params.minVal, params.maxVal, shape)
    if not 0.0 <= params.prob <= 1.0:  # Apple's validator: "prob should be in range [0: 1]"
        raise _fail(layer, f"prob {params.prob} is outside [0, 1]")
    return (rng.random(shape) < params.prob).astype(np.float64)


def _random(layer, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``shape`` (batch axis included) filled from the layer's distribution and seed."""
    params = getattr(layer, layer.WhichOneof("layer"))
    out = _fill(layer, shape, 0.0, dtype)[0]  # refuses negative and oversized shapes
    out[...] = _draw(layer, params, generator(params.seed), shape)
    return out


LIKE = ("randomNormalLike", "randomUniformLike", "randomBernoulliLike")
STATIC = ("randomNormalStatic", "randomUniformStatic", "randomBernoulliStatic")
DYNAMIC = ("randomNormalDynamic", "randomUniformDynamic", "randomBernoulliDynamic")


@register_forward(*LIKE)
def random_like(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """The input's shape (its values are ignored)."""
    x = inputs[0]
    return [_random(layer, x.shape, _dtype(x))]


@register_forward(*STATIC)
def random_static(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``outputShape``, as a batch of one (like ``fillStatic``)."""
    shape = tuple(int(d) for d in getattr(layer, layer.WhichOneof("layer")).outputShape)
    if not shape:  # Apple's validator: "Target shape is required parameter"
        raise _fail(layer, "outputShape is empty; set the shape of the output")
    return [_random(layer, (1,) + shape, np.dtype(np.float32))]


@register_forward(*DYNAMIC)
def random_dynamic(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """The shape given by the values of the rank-1 input, for every example of the batch."""
    shape = _shape_of(layer, inputs[0], "shape")
    return [_random(layer, (len(inputs[0]),) + shape, _dtype(inputs[0]))]


@register_estimate(*DYNAMIC)
def random_dynamic_size(layer, inputs) -> int:
    values = np.asarray(inputs[0]).reshape(len(inputs[0]), -1)[0] if len(inputs[0]) else []
    size = 1
    for value in values:
        size *= max(int(value), 0)
    return size


def _probabilities(layer, x: np.ndarray) -> np.ndarray:
    """Per-row class probabilities over the last axis.

    The proto names ``isLogits``, ``eps`` and ``temperature`` without formulas. Read here as
    the standard ones: logits are divided by the temperature and soft-maxed; probabilities
    become logits ``log(p + eps)`` first (``eps`` keeps a zero probability finite), so at
    temperature 1 they are sampled as given (up to eps).
    """
    params = layer.categoricalDistribution
    temperature = float(params.temperature) or CATEGORICAL_TEMPERATURE
    eps = float(params.eps) or CATEGORICAL_EPS
    if temperature < 0:
        raise _fail(layer, f"temperature {temperature} is negative")
    if not params.isLogits and np.any(x < 0):
        raise _fail(layer, "isLogits is false but the input holds negative probabilities")
    logits = (x if params.isLogits else np.log(x + eps)) / temperature
    logits = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


@register_forward("categoricalDistribution")
def categorical_distribution(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``numSamples`` class indices (as floats) drawn per row of the last axis:
    ``[D_1, ..., D_R]`` becomes ``[D_1, ..., D_(R-1), numSamples]``."""
    params = layer.categoricalDistribution
    x = inputs[0].astype(np.float64)
    count = int(params.numSamples)
    if count < 1:
        raise _fail(layer, f"numSamples is {count}; it must be at least 1")
    if x.ndim < 2 or x.shape[-1] < 1:
        raise _fail(layer, f"needs at least one class on the last axis, got shape {x.shape[1:]}")
    probabilities = _probabilities(layer, x).reshape(-1, x.shape[-1])
    rng = generator(params.seed)
    out = _fill(layer, x.shape[:-1] + (count,), 0.0, _dtype(inputs[0]))[0]
    rows = out.reshape(-1, count)
    for row, p in zip(rows, probabilities):
        cumulative = np.cumsum(p)
        picks = np.searchsorted(cumulative, rng.random(count) * cumulative[-1], side="right")
        row[:] = np.minimum(picks, len(p) - 1)
    return [out]


@register_estimate("categoricalDistribution")
def categorical_size(layer, inputs) -> int:
    x = inputs[0]
    return (
        _per_example(x)
        // max(x.shape[-1], 1)
        * max(int(layer.categoricalDistribution.numSamples), 1)
    )
