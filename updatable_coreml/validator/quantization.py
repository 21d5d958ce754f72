"""Core ML's rules for quantized weights, for any layer's quantized ``WeightParams``.

Ported (our own code) from Apple's ``QuantizationValidationUtils.cpp``
(``hasValidQuantizationParams``, ``hasSufficientBytesInQuantizedWeightParam``; byte-identical
in every release tag 3.0 to 9.0), as ``validateGeneralWeightParams`` in
``NeuralNetworkValidatorUtils.hpp`` applies them: 1 to 8 bits; a linear ``scale`` of one value
or one per output channel, its ``bias`` empty or as long as ``scale``; a lookup table of
exactly ``2**bits`` values; enough bytes for the layer's values. Apple checks them on the
weights of convolution, innerProduct, batchedMatmul, embedding and embeddingND (one scale per
output channel allowed) and on their biases (one scale only); ``convolution3D`` refuses
quantized weights outright. A file breaking them passes nothing on device ("... has invalid
quantization parameters for quantized weight"), so ``compress_frozen``'s output and files
users bring are checked alike.
"""

from __future__ import annotations

from .. import coreml_rules
from .findings import Finding
from .layer_params import weight_kind


def _general(params, units: int | None, channels: int, what: str) -> list[str]:
    """``validateGeneralWeightParams`` for a quantized WeightParams: ``units`` values
    (None: unknown here), ``channels`` the per-channel scale count allowed besides 1."""
    quant = params.quantization
    bits = int(quant.numberOfBits)
    if bits not in coreml_rules.QUANTIZATION_BITS:
        return [f"has {what} quantized to {bits} bits (Core ML allows 1 to 8)"]
    kind = quant.WhichOneof("QuantizationType")
    if kind == "linearQuantization":
        scales, biases = len(quant.linearQuantization.scale), len(quant.linearQuantization.bias)
        if scales not in (1, channels):
            allowed = "1" if channels == 1 else f"1 or {channels} (one per output channel)"
            return [f"has {scales} linear quantization scales for its {what} (allowed: {allowed})"]
        if biases not in (0, scales):
            return [f"has {biases} linear quantization biases for {scales} scales of its {what}"]
    elif kind == "lookupTableQuantization":
        entries = len(quant.lookupTableQuantization.floatValue)
        if entries != 1 << bits:
            return [f"has a {entries}-entry lookup table for its {bits}-bit {what}"]
    else:
        return [f"has quantized {what} without linear or lookup-table parameters"]
    stored = len(params.rawValue) or len(params.int8RawValue)
    if units is not None and stored < (units * bits + 7) // 8:
        return [f"has {stored} bytes for {units} {bits}-bit {what} values"]
    return []


def quantization_problems(layer) -> list[str]:
    """Why a layer's quantized weights or bias would be refused (empty when they are fine or
    not quantized)."""
    kind = layer.WhichOneof("layer")
    if kind == "convolution3D":
        body = layer.convolution3D
        found = [
            name for name in ("weights", "bias") if weight_kind(getattr(body, name)) == "quantized"
        ]
        return [f"has quantized {found[0]} (Core ML's convolution3D refuses them)"] if found else []
    if kind in coreml_rules.QUANTIZABLE_RECURRENT_LAYER_TYPES:
        return _recurrent(layer, getattr(layer, kind))
    if kind not in coreml_rules.QUANTIZABLE_WEIGHT_LAYER_TYPES:
        return []
    body = getattr(layer, kind)
    outputs = int(coreml_rules.weight_count(layer, "bias") or 0)
    problems = []
    if weight_kind(body.weights) == "quantized":
        problems += _general(
            body.weights, coreml_rules.weight_count(layer, "weights"), outputs, "weights"
        )
    if body.hasBias and weight_kind(body.bias) == "quantized":
        problems += _general(body.bias, outputs, 1, "bias")
    return problems


def _recurrent(layer, body) -> list[str]:
    """A recurrent layer's quantized matrices (one scale per output allowed) and vectors (one
    scale), as ``validateGRULayer`` and the LSTM validators check them."""
    holders: list[tuple[str, object]] = [("", body)]
    if layer.WhichOneof("layer") == "uniDirectionalLSTM":
        holders = [("weightParams.", body.weightParams)]
    elif layer.WhichOneof("layer") == "biDirectionalLSTM":
        holders = [(f"weightParams.{i}.", params) for i, params in enumerate(body.weightParams)]
    outputs = int(body.outputVectorSize)
    problems: list[str] = []
    for prefix, holder in holders:
        for descriptor, value in holder.ListFields():  # type: ignore[attr-defined]
            if descriptor.message_type is None or descriptor.message_type.name != "WeightParams":
                continue
            if weight_kind(value) != "quantized":
                continue
            field = prefix + descriptor.name
            channels = outputs if descriptor.name.lower().endswith("matrix") else 1
            problems += _general(
                value, coreml_rules.weight_count(layer, field), channels, descriptor.name
            )
    return problems


def quantization_findings(layer) -> list[Finding]:
    """``LAYER_PARAMS`` findings for ``quantization_problems`` (Apple stops at the first)."""
    kind = layer.WhichOneof("layer")
    return [
        Finding("LAYER_PARAMS", layer.name, f"Layer {layer.name!r} ({kind}) {problem}.")
        for problem in quantization_problems(layer)[:1]
    ]
