"""Blob ranks we can infer under N-d semantics, for warnings Core ML's validator cannot give.

Apple's validator knows a blob's rank only from the model description and ``inputTensor`` /
``outputTensor`` annotations (general.io_ranks); coremltools rarely writes annotations, so a
classic softmax on a rank-2 blob passes it although ``NeuralNetwork.proto`` requires rank 3
or more for that layer. Here ranks flow through the layers whose output rank follows from
NeuralNetwork.proto; any other layer leaves its outputs unknown. Used only for warnings.
"""

from __future__ import annotations

from ..spec_io import Spec
from .general import io_ranks, nd_semantics

#: Layers whose first output has the rank of their first input.
SAME_RANK: frozenset[str] = frozenset(
    {
        "activation",
        "batchnorm",
        "softmax",
        "softmaxND",
        "innerProduct",
        "bias",
        "scale",
        "unary",
        "copy",
        "clip",
        "ceil",
        "floor",
        "round",
        "sign",
        "exp2",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "sinh",
        "cosh",
        "tanh",
        "asinh",
        "acosh",
        "atanh",
        "erf",
        "gelu",
        "clampedReLU",
        "l2normalize",
        "lrn",
        "mvn",
        "layerNormalization",
        "convolution",
        "pooling",
        "padding",
        "upsample",
        "resizeBilinear",
        "crop",
        "reorganizeData",
        "transpose",
        "reverse",
        "slice",
        "sliceStatic",
        "flatten",
        "rankPreservingReshape",
        "concat",
        "concatND",
        "cumSum",
        "fillLike",
        "randomNormalLike",
        "randomUniformLike",
        "randomBernoulliLike",
        "constantPad",
    }
)
#: Elementwise layers: the output rank is the largest input rank; batchedMatmul too (one
#: input: the input's rank; two: the larger rank, NeuralNetwork.proto BatchedMatMulLayerParams).
BROADCASTING: frozenset[str] = frozenset(
    {
        "batchedMatmul",
        "add",
        "multiply",
        "average",
        "max",
        "min",
        "addBroadcastable",
        "subtractBroadcastable",
        "multiplyBroadcastable",
        "divideBroadcastable",
        "maxBroadcastable",
        "minBroadcastable",
        "floorDivBroadcastable",
        "modBroadcastable",
        "powBroadcastable",
    }
)


def _output_rank(layer, kind: str, ranks: dict[str, int]) -> int | None:
    first = ranks.get(layer.input[0]) if layer.input else None
    if kind == "reshapeStatic":
        return len(layer.reshapeStatic.targetShape) or None
    if kind == "flattenTo2D":
        return 2
    if first is None:
        return None
    if kind in SAME_RANK:
        return first
    if kind in BROADCASTING:
        known = [ranks[blob] for blob in layer.input if blob in ranks]
        return max(known) if len(known) == len(layer.input) else None
    if kind == "expandDims":
        return first + len(layer.expandDims.axes)
    if kind == "squeeze":
        return None if layer.squeeze.squeezeAll else first - len(layer.squeeze.axes)
    if kind.startswith("reduce") and kind != "reduce":
        body = getattr(layer, kind)
        if body.keepDims:
            return first
        return None if body.reduceAll else first - len(body.axes)
    return None


def infer_ranks(spec: Spec, nn) -> dict[str, int]:
    """blob -> rank for the blobs whose rank follows from the description, the annotations
    and the layers above; empty under rank-5 (iOS 12) semantics."""
    if not nd_semantics(spec, nn):
        return {}
    ranks = {
        k: v for k, v in io_ranks(spec, nn).items() if k in {f.name for f in spec.description.input}
    }
    for layer in nn.layers:
        kind = layer.WhichOneof("layer") or ""
        for blob, tensor in zip(layer.input, layer.inputTensor, strict=False):
            ranks.setdefault(blob, tensor.rank)
        if layer.outputTensor:
            for blob, tensor in zip(layer.output, layer.outputTensor, strict=False):
                ranks[blob] = tensor.rank
            continue
        rank = _output_rank(layer, kind, ranks)
        if rank is not None and layer.output:
            ranks[layer.output[0]] = rank
    return ranks
