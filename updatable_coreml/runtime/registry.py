"""The reference runtime's per-layer tables (forward op, backward op, size estimate) and
weight decoding. The layer families in ``layers/`` fill the tables; ``layers/__init__``
imports every family.

Conventions every op follows:

* A blob is a NumPy array whose first axis is the batch: a feature of shape ``(C, H, W)``
  travels as ``(B, C, H, W)``, a vector ``(C,)`` as ``(B, C)``. Classic (rank-5) layers view
  their input as ``(B, C, H, W)`` and keep its rank; sequences travel batch first,
  ``(B, Seq, C, H, W)``. ND layers see the Core ML tensor behind the batch axis: axes, shapes
  and permutations in the file describe the tensor without it, so ND ops shift them by one.
* A forward op is ``fn(layer, inputs, weight) -> list of outputs`` where ``layer`` is the
  ``NeuralNetworkLayer`` message, ``inputs`` the input blobs in ``layer.input`` order, and
  ``weight(field)`` returns the decoded, flat float array of the ``WeightParams`` named
  ``field`` in the layer's params message (the runtime's current value: updated weights
  after training).
* A backward op is ``fn(layer, x, y, gy, weight, want_input) -> (dx or None, {field: grad})``
  (see ``backward``); only layer types Core ML passes gradients through have one.
* A size estimate is ``fn(layer, inputs) -> values per example`` of the largest blob the
  layer would make, for layers whose output size comes from their parameters (see ``limits``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import RuntimeLayerError
from ..registry import Registry

WeightGetter = Callable[[str], np.ndarray]
ForwardFn = Callable[[object, Sequence[np.ndarray], WeightGetter], list]
BackwardFn = Callable[
    [object, np.ndarray, np.ndarray, np.ndarray, WeightGetter, bool], tuple[np.ndarray | None, dict]
]
EstimateFn = Callable[[object, Sequence[np.ndarray]], int]

#: layer type (the ``NeuralNetworkLayer`` oneof name) -> forward op
FORWARD = Registry("forward op")
register_forward = FORWARD.register
#: layer type -> backward op (looked up through ``backward.backward_op``, which applies Core
#: ML's rule of which layers gradients pass)
BACKWARD = Registry("backward op")
register_backward = BACKWARD.register
#: layer type -> size estimate
ESTIMATES = Registry("size estimate")
register_estimate = ESTIMATES.register
#: className of a ``custom`` layer -> a Python implementation of it, the hook through which
#: the runtime runs a model with custom layers (Core ML runs the app's own ``MLCustomLayer``
#: class there, code no file holds). See ``layers/custom``; remove one with
#: ``CUSTOM_LAYERS.pop(className)``.
CUSTOM_LAYERS = Registry("custom layer class")
register_custom_layer = CUSTOM_LAYERS.register


def forward_op(layer) -> ForwardFn:
    kind = layer.WhichOneof("layer")
    try:
        return FORWARD[kind]
    except KeyError:
        raise RuntimeLayerError(
            f"layer {layer.name!r}: the reference runtime cannot run layer type {kind!r}"
        ) from None


def decode_weights(params, where: str = "") -> np.ndarray:
    """Decode a ``WeightParams`` message to a flat float32 array.

    Handles fp32 (``floatValue``), fp16 (``float16Value``), raw fp32 bytes (``rawValue``) and
    linear or look-up-table quantized weights (``rawValue`` + ``quantization``).
    """
    if len(params.floatValue):
        return np.asarray(params.floatValue, dtype=np.float32)
    if len(params.float16Value):
        return np.frombuffer(params.float16Value, dtype="<f2").astype(np.float32)
    raw = params.rawValue
    if not len(raw):
        return np.zeros(0, dtype=np.float32)
    if not params.HasField("quantization"):
        if len(raw) % 4:
            raise RuntimeLayerError(f"{where}: raw weights are not a whole number of fp32 values")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    quant = params.quantization
    bits = int(quant.numberOfBits)
    if not 1 <= bits <= 8:
        raise RuntimeLayerError(f"{where}: unsupported quantization with {bits} bits")
    packed = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))  # MSB first within each byte
    count = packed.size // bits
    groups = packed[: count * bits].reshape(count, bits)
    codes = groups.dot(1 << np.arange(bits - 1, -1, -1)).astype(np.int64)
    kind = quant.WhichOneof("QuantizationType")
    if kind == "lookupTableQuantization":
        table = np.asarray(quant.lookupTableQuantization.floatValue, dtype=np.float32)
        return table[codes]
    if kind == "linearQuantization":
        scale = np.asarray(quant.linearQuantization.scale, dtype=np.float32)
        bias = np.asarray(quant.linearQuantization.bias, dtype=np.float32)
        if scale.size == 1:
            return codes.astype(np.float32) * scale[0] + bias[0]
        per_channel = codes.reshape(scale.size, -1).astype(np.float32)
        return (per_channel * scale[:, None] + bias[:, None]).reshape(-1)
    raise RuntimeLayerError(f"{where}: unknown weight quantization {kind!r}")
