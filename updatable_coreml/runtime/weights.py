"""Reading a ``WeightParams`` message exactly as NeuralNetwork.proto defines its storage.

A WeightParams holds its values one of four ways: ``floatValue`` (fp32), ``float16Value``
(little-endian fp16 bytes), ``rawValue`` (fp32 bytes when there is no ``quantization``; else
N-bit unsigned codes, 1 <= N <= 8, packed most significant bit first), or ``int8RawValue``
(signed int8 codes, only with a layer's ``int8DynamicQuantize``). Codes become values by the
``quantization`` message: a lookup table (``table[code]``, 2**N floats) or linear
quantization (``code * scale + bias``, with one scale for the tensor or one per output
channel, and ``bias`` empty meaning 0). The rules are ``coreml_rules``' (Apple's
``QuantizationValidationUtils.cpp``); a message that breaks them is refused with the layer
named, never guessed around, because model files are untrusted.

Sub-byte codes pad the last byte with zeros, so the byte count alone does not say how many
values there are: the count comes from the layer (``coreml_rules.weight_count``) when known.
"""

from __future__ import annotations

import numpy as np

from .. import coreml_rules
from ..errors import RuntimeLayerError


def decode_weights(params, where: str = "", layer=None, field: str = "") -> np.ndarray:
    """A ``WeightParams`` message as a flat float32 array.

    ``layer`` and ``field`` (``"weights"``, ``"bias"``) say how quantized codes are laid out
    (the per-channel axis of a deconvolution, the value count of sub-byte codes); without
    them per-channel scales run along the first axis and every packed code is a value.
    """
    if len(params.floatValue):
        return np.asarray(params.floatValue, dtype=np.float32)
    if len(params.float16Value):
        if len(params.float16Value) % 2:
            raise RuntimeLayerError(f"{where}: fp16 weights with an odd number of bytes")
        return np.frombuffer(params.float16Value, dtype="<f2").astype(np.float32)
    if len(params.int8RawValue):
        return _linear(
            np.frombuffer(params.int8RawValue, dtype=np.int8).astype(np.float32),
            params,
            where,
            layer,
        )
    raw = params.rawValue
    if not len(raw):
        return np.zeros(0, dtype=np.float32)
    if not params.HasField("quantization"):
        if len(raw) % 4:
            raise RuntimeLayerError(f"{where}: raw weights are not a whole number of fp32 values")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    codes = unpack_codes(raw, params.quantization.numberOfBits, where)
    count = coreml_rules.weight_count(layer, field) if layer is not None else None
    if count is not None:
        if codes.size < count:
            raise RuntimeLayerError(
                f"{where}: {len(raw)} bytes hold {codes.size} codes, the layer needs {count}"
            )
        codes = codes[:count]
    kind = params.quantization.WhichOneof("QuantizationType")
    if kind == "lookupTableQuantization":
        table = np.asarray(params.quantization.lookupTableQuantization.floatValue, np.float32)
        bits = int(params.quantization.numberOfBits)
        if table.size != 1 << bits:
            raise RuntimeLayerError(
                f"{where}: a {bits}-bit lookup table needs {1 << bits} values, has {table.size}"
            )
        return table[codes]
    if kind == "linearQuantization":
        return _linear(codes.astype(np.float32), params, where, layer)
    raise RuntimeLayerError(f"{where}: quantized weights without a quantization kind")


def unpack_codes(raw: bytes, bits: int, where: str = "") -> np.ndarray:
    """The unsigned ``bits``-bit codes packed in ``raw``, most significant bit first (the
    order coremltools writes; 8-bit codes are plain bytes)."""
    bits = int(bits)
    if bits not in coreml_rules.QUANTIZATION_BITS:
        raise RuntimeLayerError(f"{where}: quantization with {bits} bits (Core ML allows 1 to 8)")
    data = np.frombuffer(raw, dtype=np.uint8)
    if bits == 8:
        return data.astype(np.int64)
    packed = np.unpackbits(data)
    count = packed.size // bits
    groups = packed[: count * bits].reshape(count, bits).astype(np.int64)
    return groups @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))


def _linear(codes: np.ndarray, params, where: str, layer) -> np.ndarray:
    """``code * scale + bias`` with one scale (and bias) or one per output channel."""
    linear = params.quantization.linearQuantization
    if params.quantization.WhichOneof("QuantizationType") != "linearQuantization":
        raise RuntimeLayerError(f"{where}: int8 weights need linear quantization parameters")
    scale = np.asarray(linear.scale, dtype=np.float32)
    bias = np.asarray(linear.bias, dtype=np.float32)
    if scale.size == 0 or bias.size not in (0, scale.size):
        raise RuntimeLayerError(
            f"{where}: linear quantization with {scale.size} scales and {bias.size} biases "
            "(Core ML needs 1 or one per output channel, and no bias or one per scale)"
        )
    if bias.size == 0:
        bias = np.zeros_like(scale)
    if scale.size == 1:
        return codes * scale[0] + bias[0]
    axis = coreml_rules.quantization_channel_axis(layer) if layer is not None else 0
    if codes.size % scale.size:
        raise RuntimeLayerError(
            f"{where}: {codes.size} quantized values do not split into {scale.size} channels"
        )
    outer = 1
    if axis == 1:
        # a deconvolution: [kernelChannels, outputChannels / nGroups, kH, kW]
        conv = layer.convolution
        if int(conv.nGroups) > 1:
            raise RuntimeLayerError(
                f"{where}: per-channel scales on a grouped deconvolution: one scale per "
                "output channel does not fit its [kernelChannels, outputChannels / nGroups, "
                "kH, kW] weights (Core ML's layout for this case is unknown)"
            )
        outer = int(conv.kernelChannels)
    if codes.size % (outer * scale.size):
        raise RuntimeLayerError(
            f"{where}: {codes.size} quantized values do not split into {outer} x {scale.size}"
        )
    shaped = codes.reshape(outer, scale.size, -1)
    return (shaped * scale[None, :, None] + bias[None, :, None]).reshape(-1)
