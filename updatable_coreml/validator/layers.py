"""Per-layer-type counts and rank rules of Core ML's NeuralNetwork validator.

Read from Apple's ``mlmodel/src/Validation/NeuralNetwork/NeuralNetworkLayerValidator.cpp``
(``validateInputCount`` / ``validateOutputCount`` / ``validateRankCount`` in each layer's
validator; the layer-to-validator switch in ``NeuralNetworkValidator.cpp``). The table is the
9.0 release; 4.0 to 8.x have the same numbers, 3.0 lacked the layers added for iOS 14 and had
stricter counts for ``tile`` (1 input), ``sliceDynamic`` (at most 6 inputs) and a minimum
rank of 3 for ``padding``.
"""

from __future__ import annotations

from collections.abc import Mapping

#: layer type -> (min inputs, max inputs, min outputs, max outputs); -1 = no upper bound.
#: Comparisons (greaterThan ... notEqual) take 1 or 2 inputs, logicalNot 1, logicalAnd/Or/Xor
#: 2 (``validateBooleanElementwiseLayer``); rangeDynamic takes none or 1 to 3.
LAYER_IO_COUNTS: Mapping[str, tuple[int, int, int, int]] = {
    "acos": (1, 1, 1, 1),
    "acosh": (1, 1, 1, 1),
    "activation": (1, 1, 1, 1),
    "add": (1, -1, 1, 1),
    "addBroadcastable": (2, 2, 1, 1),
    "argMax": (1, 1, 1, 1),
    "argMin": (1, 1, 1, 1),
    "argSort": (1, 1, 1, 1),
    "asin": (1, 1, 1, 1),
    "asinh": (1, 1, 1, 1),
    "atan": (1, 1, 1, 1),
    "atanh": (1, 1, 1, 1),
    "average": (1, -1, 1, 1),
    "batchedMatmul": (1, 2, 1, 1),
    "batchnorm": (1, 1, 1, 1),
    "biDirectionalLSTM": (1, 5, 5, 5),
    "bias": (1, 1, 1, 1),
    "branch": (1, 1, 0, 0),
    "broadcastToDynamic": (2, 2, 1, 1),
    "broadcastToLike": (2, 2, 1, 1),
    "broadcastToStatic": (1, 1, 1, 1),
    "categoricalDistribution": (1, 1, 1, 1),
    "ceil": (1, 1, 1, 1),
    "clampedReLU": (1, 1, 1, 1),
    "clip": (1, 1, 1, 1),
    "concat": (2, -1, 1, 1),
    "concatND": (2, -1, 1, 1),
    "constantPad": (1, 2, 1, 1),
    "convolution": (1, 2, 1, 1),
    "convolution3d": (1, 1, 1, 1),
    "copy": (1, 1, 1, 1),
    "cos": (1, 1, 1, 1),
    "cosh": (1, 1, 1, 1),
    "crop": (1, 2, 1, 1),
    "cropResize": (2, 2, 1, 1),
    "cumSum": (1, 2, 1, 1),
    "custom": (1, -1, 1, -1),
    "divideBroadcastable": (2, 2, 1, 1),
    "dot": (2, 2, 1, 1),
    "embedding": (1, 1, 1, 1),
    "embeddingND": (1, 1, 1, 1),
    "equal": (1, 2, 1, 1),
    "erf": (1, 1, 1, 1),
    "exp2": (1, 1, 1, 1),
    "expandDims": (1, 1, 1, 1),
    "fillDynamic": (1, 1, 1, 1),
    "fillLike": (1, 1, 1, 1),
    "fillStatic": (0, 0, 1, 1),
    "flatten": (1, 1, 1, 1),
    "flattenTo2D": (1, 1, 1, 1),
    "floor": (1, 1, 1, 1),
    "floorDivBroadcastable": (2, 2, 1, 1),
    "gather": (2, 2, 1, 1),
    "gatherAlongAxis": (2, 2, 1, 1),
    "gatherND": (2, 2, 1, 1),
    "gelu": (1, 1, 1, 1),
    "getShape": (1, 1, 1, 1),
    "globalPooling3d": (1, 1, 1, 1),
    "greaterEqual": (1, 2, 1, 1),
    "greaterThan": (1, 2, 1, 1),
    "gru": (1, 2, 2, 2),
    "innerProduct": (1, 1, 1, 1),
    "l2normalize": (1, 1, 1, 1),
    "layerNormalization": (1, 1, 1, 1),
    "lessEqual": (1, 2, 1, 1),
    "lessThan": (1, 2, 1, 1),
    "loadConstant": (0, 0, 1, 1),
    "loadConstantND": (0, 0, 1, 1),
    "logicalAnd": (2, 2, 1, 1),
    "logicalNot": (1, 1, 1, 1),
    "logicalOr": (2, 2, 1, 1),
    "logicalXor": (2, 2, 1, 1),
    "loop": (0, 1, 0, 0),
    "loopBreak": (0, 0, 0, 0),
    "loopContinue": (0, 0, 0, 0),
    "lowerTriangular": (1, 1, 1, 1),
    "lrn": (1, 1, 1, 1),
    "matrixBandPart": (1, 1, 1, 1),
    "max": (1, -1, 1, 1),
    "maxBroadcastable": (2, 2, 1, 1),
    "min": (1, -1, 1, 1),
    "minBroadcastable": (2, 2, 1, 1),
    "modBroadcastable": (2, 2, 1, 1),
    "multiply": (1, -1, 1, 1),
    "multiplyBroadcastable": (2, 2, 1, 1),
    "mvn": (1, 1, 1, 1),
    "NonMaximumSuppression": (2, 5, 4, 4),
    "notEqual": (1, 2, 1, 1),
    "oneHot": (1, 2, 1, 1),
    "padding": (1, 1, 1, 1),
    "permute": (1, 1, 1, 1),
    "pooling": (1, 1, 1, 1),
    "pooling3d": (1, 1, 1, 1),
    "powBroadcastable": (2, 2, 1, 1),
    "randomBernoulliDynamic": (1, 1, 1, 1),
    "randomBernoulliLike": (1, 1, 1, 1),
    "randomBernoulliStatic": (0, 0, 1, 1),
    "randomNormalDynamic": (1, 1, 1, 1),
    "randomNormalLike": (1, 1, 1, 1),
    "randomNormalStatic": (0, 0, 1, 1),
    "randomUniformDynamic": (1, 1, 1, 1),
    "randomUniformLike": (1, 1, 1, 1),
    "randomUniformStatic": (0, 0, 1, 1),
    "rangeDynamic": (0, 3, 1, 1),
    "rangeStatic": (0, 0, 1, 1),
    "rankPreservingReshape": (1, 1, 1, 1),
    "reduce": (1, 1, 1, 1),
    "reduceL1": (1, 1, 1, 1),
    "reduceL2": (1, 1, 1, 1),
    "reduceLogSum": (1, 1, 1, 1),
    "reduceLogSumExp": (1, 1, 1, 1),
    "reduceMax": (1, 1, 1, 1),
    "reduceMean": (1, 1, 1, 1),
    "reduceMin": (1, 1, 1, 1),
    "reduceProd": (1, 1, 1, 1),
    "reduceSum": (1, 1, 1, 1),
    "reduceSumSquare": (1, 1, 1, 1),
    "reorganizeData": (1, 1, 1, 1),
    "reshape": (1, 1, 1, 1),
    "reshapeDynamic": (2, 2, 1, 1),
    "reshapeLike": (2, 2, 1, 1),
    "reshapeStatic": (1, 1, 1, 1),
    "resizeBilinear": (1, 1, 1, 1),
    "reverse": (1, 1, 1, 1),
    "reverseSeq": (2, 2, 1, 1),
    "round": (1, 1, 1, 1),
    "scale": (1, 1, 1, 1),
    "scatter": (3, 3, 1, 1),
    "scatterAlongAxis": (3, 3, 1, 1),
    "scatterND": (3, 3, 1, 1),
    "sequenceRepeat": (1, 1, 1, 1),
    "sign": (1, 1, 1, 1),
    "simpleRecurrent": (2, 2, 2, 2),
    "sin": (1, 1, 1, 1),
    "sinh": (1, 1, 1, 1),
    "slice": (1, 1, 1, 1),
    "sliceBySize": (2, 2, 1, 1),
    "sliceDynamic": (2, 7, 1, 1),
    "sliceStatic": (1, 1, 1, 1),
    "slidingWindows": (1, 1, 1, 1),
    "softmax": (1, 1, 1, 1),
    "softmaxND": (1, 1, 1, 1),
    "split": (1, 1, 2, -1),
    "splitND": (1, 1, 2, -1),
    "squeeze": (1, 1, 1, 1),
    "stack": (2, -1, 1, 1),
    "subtractBroadcastable": (2, 2, 1, 1),
    "tan": (1, 1, 1, 1),
    "tanh": (1, 1, 1, 1),
    "tile": (1, 2, 1, 1),
    "topK": (1, 2, 2, 2),
    "transpose": (1, 1, 1, 1),
    "unary": (1, 1, 1, 1),
    "uniDirectionalLSTM": (1, 3, 3, 3),
    "upperTriangular": (1, 1, 1, 1),
    "upsample": (1, 1, 1, 1),
    "whereBroadcastable": (3, 3, 1, 1),
    "whereNonZero": (1, 1, 1, 1),
}

#: layer type -> (min rank, max rank) of its first input and first output, checked only when
#: the network is read with N-d semantics and the rank is known (model inputs and outputs,
#: ``inputTensor``/``outputTensor`` annotations), as Apple does. Also: ``concat`` 3+ (5+ for
#: a sequence concat); an ``activation`` of kind PReLU or ParametricSoftplus 3+.
LAYER_RANKS: Mapping[str, tuple[int, int]] = {
    "batchnorm": (3, -1),
    "biDirectionalLSTM": (5, 5),
    "bias": (3, -1),
    "convolution": (4, -1),
    "convolution3d": (5, -1),
    "crop": (3, -1),
    "cropResize": (5, -1),
    "dot": (3, -1),
    "embedding": (4, -1),
    "embeddingND": (2, 5),
    "flatten": (3, -1),
    "globalPooling3d": (5, -1),
    "gru": (5, 5),
    "innerProduct": (1, 5),
    "l2normalize": (3, -1),
    "lrn": (3, -1),
    "mvn": (3, -1),
    "padding": (2, -1),
    "permute": (5, 5),
    "pooling": (4, -1),
    "pooling3d": (5, -1),
    "reorganizeData": (3, -1),
    "reshape": (5, 5),
    "resizeBilinear": (3, -1),
    "scale": (3, -1),
    "sequenceRepeat": (5, -1),
    "simpleRecurrent": (5, 5),
    "softmax": (3, -1),
    "split": (3, -1),
    "uniDirectionalLSTM": (5, 5),
    "upsample": (3, -1),
}

#: Layer types of the iOS 12 set (``isIOS12NeuralNetworkLayer`` in ``mlmodel/src/Utils.cpp``):
#: a network made only of these (with the rank-5 shape mappings) runs with the old rank-5
#: semantics; any other layer switches Core ML to N-d semantics. A convolution with two
#: inputs, an int8-dynamic innerProduct, a non-default upsample and a PIXEL_SHUFFLE
#: reorganizeData are not of the iOS 12 set.
IOS12_LAYER_TYPES: frozenset[str] = frozenset(
    {
        "convolution",
        "innerProduct",
        "batchnorm",
        "activation",
        "pooling",
        "padding",
        "concat",
        "lrn",
        "softmax",
        "split",
        "add",
        "multiply",
        "unary",
        "upsample",
        "bias",
        "l2normalize",
        "reshape",
        "flatten",
        "permute",
        "reduce",
        "loadConstant",
        "scale",
        "simpleRecurrent",
        "gru",
        "uniDirectionalLSTM",
        "biDirectionalLSTM",
        "crop",
        "average",
        "max",
        "min",
        "dot",
        "mvn",
        "embedding",
        "sequenceRepeat",
        "reorganizeData",
        "slice",
        "custom",
        "resizeBilinear",
        "cropResize",
    }
)


def is_ios12_layer(layer) -> bool:
    kind = layer.WhichOneof("layer")
    if kind not in IOS12_LAYER_TYPES:
        return False
    if kind == "convolution":
        return len(layer.input) == 1
    if kind == "innerProduct":
        return not layer.innerProduct.int8DynamicQuantize
    if kind == "upsample":
        return layer.upsample.linearUpsampleMode == 0 and not layer.upsample.fractionalScalingFactor
    if kind == "reorganizeData":
        return layer.reorganizeData.mode != layer.reorganizeData.PIXEL_SHUFFLE
    return True


def rank_limits(layer) -> tuple[int, int] | None:
    """(min, max) rank of the layer's first input and output under N-d semantics, or None."""
    kind = layer.WhichOneof("layer")
    if kind == "concat":
        return (5, -1) if layer.concat.sequenceConcat else (3, -1)
    if kind == "activation":
        which = layer.activation.WhichOneof("NonlinearityType")
        return (3, -1) if which in ("PReLU", "parametricSoftplus") else None
    return LAYER_RANKS.get(kind or "")
