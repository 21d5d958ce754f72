"""The layer parameter checks of Core ML's validator that files in the wild trip over.

Ported (our own code) from Apple's ``NeuralNetworkLayerValidator.cpp`` (release 9.0; the same
checks exist from 3.0 on): a WeightParams holds one kind of values (``valueType`` in
``ValidatorUtils-inl.hpp``); innerProduct weights and bias match in precision and size;
batchnorm parameters are present, of one precision and one per channel; convolution and
pooling name a padding type; an LSTM lists 3 activations. Apple checks much more per layer
(convolution weight sizes, axes, ...); those are not ported (docs/limits.md).
"""

from __future__ import annotations

from .findings import Finding


def weight_kind(params) -> str:
    """Apple's ``valueType``: fp32, fp16, quantized, ``mixed`` (several value fields set) or
    ``empty``."""
    filled = [
        bool(len(params.floatValue)),
        bool(len(params.float16Value)),
        bool(len(params.rawValue)),
        bool(len(params.int8RawValue)),
    ]
    if sum(filled) > 1:
        return "mixed"
    if filled[0]:
        return "fp32"
    if filled[1]:
        return "fp16"
    if (filled[2] or filled[3]) and params.HasField("quantization"):
        return "quantized"
    return "empty"


def _count(params, kind: str) -> int:
    return len(params.floatValue) if kind == "fp32" else len(params.float16Value) // 2


def _inner_product(layer) -> list[str]:
    body = layer.innerProduct
    if body.int8DynamicQuantize:
        return []
    weights, bias = weight_kind(body.weights), weight_kind(body.bias) if body.hasBias else None
    if weights == "mixed" or bias == "mixed":
        return ["has weights or bias with several kinds of values"]
    if bias is not None and {weights, bias} == {"fp16", "fp32"}:
        return ["has weights and bias of different precisions (fp16 and fp32)"]
    problems = []
    expected = body.inputChannels * body.outputChannels
    if weights in ("fp32", "fp16") and _count(body.weights, weights) != expected:
        problems.append(
            f"has {_count(body.weights, weights)} weights for a {body.inputChannels} x "
            f"{body.outputChannels} matrix"
        )
    if bias in ("fp32", "fp16") and _count(body.bias, bias) != body.outputChannels:
        problems.append(
            f"has {_count(body.bias, bias)} bias values for {body.outputChannels} outputs"
        )
    return problems


def _batchnorm(layer) -> list[str]:
    body = layer.batchnorm
    kinds = {
        name: weight_kind(getattr(body, name)) for name in ("gamma", "beta", "mean", "variance")
    }
    if "mixed" in kinds.values() or {"fp16", "fp32"} <= set(kinds.values()):
        return ["mixes fp16 and fp32 parameters"]
    problems = []
    wanted = ("gamma", "beta") if body.computeMeanVar else ("gamma", "beta", "mean", "variance")
    for name in wanted:
        kind = kinds[name]
        if kind == "empty":
            problems.append(f"has no {name}")
        elif kind in ("fp32", "fp16") and _count(getattr(body, name), kind) != body.channels:
            problems.append(
                f"has {_count(getattr(body, name), kind)} {name} values for {body.channels} channels"
            )
    return problems


_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")


def _general(params, expected: int, what: str) -> list[str]:
    """``validateGeneralWeightParams``: present, of one kind, of ``expected`` values."""
    kind = weight_kind(params)
    if kind in ("empty", "mixed"):
        return [f"has {'no' if kind == 'empty' else 'several kinds of values for its'} {what}"]
    if kind in ("fp32", "fp16") and _count(params, kind) != expected:
        return [f"has {_count(params, kind)} values for its {what} (expected {expected})"]
    return []


def _uni_lstm(layer) -> list[str]:
    """``validateUniDirectionalLSTMLayer`` and ``validateLSTMWeightParams``."""
    body = layer.uniDirectionalLSTM
    if len(body.activations) != 3:
        return ["must list 3 activations"]
    h, x = body.outputVectorSize, body.inputVectorSize
    weights = body.weightParams
    wanted = [(f"{gate}WeightMatrix", h * x) for gate in _GATES]
    wanted += [(f"{gate}RecursionMatrix", h * h) for gate in _GATES]
    if body.params.hasBiasVectors:
        wanted += [(f"{gate}BiasVector", h) for gate in _GATES]
    if body.params.hasPeepholeVectors:
        wanted += [
            (f"{gate}PeepholeVector", h) for gate in ("inputGate", "forgetGate", "outputGate")
        ]
    kinds = {weight_kind(getattr(weights, name)) for name, _ in wanted}
    if {"fp16", "fp32"} <= kinds:
        return ["mixes fp16 and fp32 weights"]
    problems: list[str] = []
    for name, expected in wanted:
        problems += _general(getattr(weights, name), expected, name)
    return problems[:1]


def _lstm(layer) -> list[str]:
    kind = layer.WhichOneof("layer")
    if kind == "uniDirectionalLSTM":
        return _uni_lstm(layer)
    body = layer.biDirectionalLSTM
    if len(body.activationsForwardLSTM) != 3 or len(body.activationsBackwardLSTM) != 3:
        return ["must list 3 activations for each direction"]
    return []


def layer_param_findings(layer) -> list[Finding]:
    kind = layer.WhichOneof("layer")
    problems: list[str] = []
    if kind == "innerProduct":
        problems = _inner_product(layer)
    elif kind == "batchnorm":
        problems = _batchnorm(layer)
    elif kind == "convolution" and layer.convolution.WhichOneof("ConvolutionPaddingType") is None:
        problems = ["has no padding type (valid or same)"]
    elif kind == "pooling" and layer.pooling.WhichOneof("PoolingPaddingType") is None:
        problems = ["has no padding type (valid, same or includeLastPixel)"]
    elif kind in ("uniDirectionalLSTM", "biDirectionalLSTM"):
        problems = _lstm(layer)
    return [
        Finding("LAYER_PARAMS", layer.name, f"Layer {layer.name!r} ({kind}) {p}.") for p in problems
    ]
