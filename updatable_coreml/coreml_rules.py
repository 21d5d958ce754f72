"""Core ML's rules for updatable NeuralNetwork models, in one table.

Everything here is a fact about Apple's software, each with its source, so that the passes,
the validator, the runtime, surgery, inspection and the docs generator read the same list.
The runtime may import this module (it is Apple's facts, not exporter code); nothing in it
imports anything of ours.

Sources (apple/coremltools, checked on every release tag 3.0 to 9.0, see
``../shared/COREML_EVIDENCE.md`` of the project brief and docs/limits.md):

* ``mlmodel/src/Validation/NeuralNetwork/NeuralNetworkValidatorGraph.hpp``,
  ``isLayerSupportedForBackprop``: the layer types gradients pass through. Identical in every
  release; ``uniDirectionalLSTM`` was added in 5.0b1. Classic ``reshape``, ``concat``,
  ``concatND``, ``transpose``, ``reshapeStatic`` and ``clampedReLU`` were listed only in
  unreleased 2020 commits (fc6905ac, a093be36, 04235894; removed in aa55ea90): never shipped.
* ``mlmodel/src/Validation/UpdatableNeuralNetworkValidator.cpp``: updatable layer types,
  loss and optimizer rules, training inputs compared by name and type only.
* ``mlmodel/src/Validation/PipelineValidator.cpp``: only a pipeline's last model may be
  updatable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: First specification version that can hold an updatable model (iOS 13 / macOS 10.15).
MIN_UPDATABLE_SPEC_VERSION = 4

#: Layer types Core ML can update on device -> first coremltools release whose validator
#: accepts it as updatable.
UPDATABLE_LAYER_TYPES: Mapping[str, str] = {
    "convolution": "3.0",
    "innerProduct": "3.0",
    "uniDirectionalLSTM": "5.0b1",
}

#: Layer types gradients pass through (isLayerSupportedForBackprop) -> first release.
#: ``activation`` only for the kinds in BACKPROP_ACTIVATIONS.
BACKPROP_LAYER_TYPES: Mapping[str, str] = {
    "convolution": "3.0",
    "innerProduct": "3.0",
    "uniDirectionalLSTM": "5.0b1",
    "flatten": "3.0",
    "pooling": "3.0",
    "batchnorm": "3.0",
    "activation": "3.0",
}

#: Activation kinds (``ActivationParams`` oneof names) gradients pass through.
BACKPROP_ACTIVATIONS: tuple[str, ...] = ("ReLU", "sigmoid", "tanh")

#: The one layer type allowed on the trainable path only as the categorical cross-entropy
#: input: the loss must read the first output of a classic ``softmax`` layer.
CCE_INPUT_LAYER_TYPE = "softmax"

#: Loss layers (``LossLayer`` oneof names); exactly one per network.
LOSS_TYPES: tuple[str, ...] = ("categoricalCrossEntropyLossLayer", "meanSquaredErrorLossLayer")

#: Optimizers (``Optimizer`` oneof names) -> required fields. SGD's ``momentum`` is optional.
OPTIMIZER_REQUIRED_FIELDS: Mapping[str, tuple[str, ...]] = {
    "sgdOptimizer": ("learningRate", "miniBatchSize"),
    "adamOptimizer": ("learningRate", "miniBatchSize", "beta1", "beta2", "eps"),
}
OPTIMIZER_OPTIONAL_FIELDS: Mapping[str, tuple[str, ...]] = {
    "sgdOptimizer": ("momentum",),
    "adamOptimizer": (),
}

#: Activations a recurrent layer (``simpleRecurrent``, ``gru``, ``uniDirectionalLSTM``,
#: ``biDirectionalLSTM``) supports -> the parameters it must have (None: no restriction).
#: NeuralNetwork.proto, the comment above ``SimpleRecurrentLayerParams`` and on each recurrent
#: layer's activations, every release 3.0 to 9.0: "Hard Sigmoid ... currently only supported
#: for alpha = 0.2, beta = 0.5", scaled tanh only for alpha = 1.7159, beta = 2/3. Apple's
#: validator (``validateRecurrentActivationParams``) checks the kinds, not the parameters, so
#: other parameters pass it; what a device then computes is unknown.
RECURRENT_ACTIVATIONS: Mapping[str, Mapping[str, float] | None] = {
    "linear": None,
    "sigmoid": None,
    "tanh": None,
    "ReLU": None,
    "scaledTanh": {"alpha": 1.7159, "beta": 2 / 3},
    "sigmoidHard": {"alpha": 0.2, "beta": 0.5},
}

#: Model types that can be updatable themselves.
UPDATABLE_MODEL_TYPES: tuple[str, ...] = (
    "neuralNetwork",
    "neuralNetworkClassifier",
    "neuralNetworkRegressor",
    "kNearestNeighborsClassifier",
)
#: Pipeline model types: updatable when their last model is (and only it).
PIPELINE_MODEL_TYPES: tuple[str, ...] = ("pipeline", "pipelineClassifier", "pipelineRegressor")


def is_backpropagable(layer_type: str, activation: str | None = None) -> bool:
    """Whether Core ML passes gradients through a layer of ``layer_type`` (for an
    ``activation`` layer, of that activation kind). Softmax is not: it is allowed only as
    the cross-entropy input, which callers check apart."""
    if layer_type == "activation":
        return activation in BACKPROP_ACTIVATIONS
    return layer_type in BACKPROP_LAYER_TYPES


def is_updatable_type(layer_type: str) -> bool:
    """Whether Core ML can mark a layer of ``layer_type`` updatable."""
    return layer_type in UPDATABLE_LAYER_TYPES


# -- quantized weights ---------------------------------------------------------------------
# NeuralNetwork.proto ``WeightParams``/``QuantizationParams``: ``rawValue`` holds N-bit
# unsigned codes (1 <= N <= 8, ``numberOfBits``); linear quantization is
# ``W = code * scale + bias`` with ``scale`` of 1 or C values (C the output channels; for
# recurrent layers the output vector size) and ``bias`` empty or as long as ``scale``; a
# lookup table holds exactly 2**N floats. Apple's validator checks this in
# ``QuantizationValidationUtils.cpp`` (``hasValidQuantizationParams``,
# ``hasSufficientBytesInQuantizedWeightParam``), byte-identical in every release tag 3.0 to
# 9.0. Quantized weights are refused on an updatable layer (``UpdatableNeuralNetworkValidator
# .cpp`` ``validateWeightParamsUpdatable``, from 4.0 on) and accepted on a frozen one in an
# updatable network (Apple's test
# ``testValidUpdatableModelQuantizedWeightsAndBiasForNonUpdatableLayer``, 4.0 to 9.0).

#: Bits a quantized WeightParams may use.
QUANTIZATION_BITS = range(1, 9)

#: Layer types whose ``weights`` Apple's layer validators accept quantized (they pass a
#: quantized WeightParams to ``validateGeneralWeightParams`` with the output channels as the
#: per-channel count), the ones worth compressing: ``NeuralNetworkLayerValidator.cpp``
#: ``validateConvolutionLayer``, ``validateInnerProductWeightsBias`` (innerProduct,
#: batchedMatmul), ``validateEmbeddingLayer``, ``validateEmbeddingNDLayer``. ``convolution3D``
#: refuses quantized weights ("Quantized weights are not supported").
QUANTIZABLE_WEIGHT_LAYER_TYPES: tuple[str, ...] = (
    "convolution",
    "innerProduct",
    "batchedMatmul",
    "embedding",
    "embeddingND",
)

#: Recurrent layer types whose weight matrices, recursion matrices and vectors Apple's
#: validators accept quantized, with ``outputVectorSize`` as the per-channel count of the
#: matrices (``validateSimpleRecurrentLayer``, ``validateGRULayer``,
#: ``validateUniDirectionalLSTMLayer``, ``validateBiDirectionalLSTMLayer``).
QUANTIZABLE_RECURRENT_LAYER_TYPES: tuple[str, ...] = (
    "simpleRecurrent",
    "gru",
    "uniDirectionalLSTM",
    "biDirectionalLSTM",
)


def weight_count(layer, field: str) -> int | None:
    """How many values a layer's ``weights`` or ``bias`` hold (NeuralNetwork.proto's shapes,
    as Apple's layer validators compute them), for the layer types above; None otherwise. A
    convolution's ``kernelSize`` defaults to ``[3, 3]`` and ``nGroups`` 0 means 1. For a
    recurrent layer ``field`` is the runtime's dotted path (``weightParams.1.
    inputGateWeightMatrix``): a weight matrix holds output x input values, a recursion matrix
    output x output, a bias or peephole vector one per output."""
    kind = layer.WhichOneof("layer") if layer is not None else None
    if kind in QUANTIZABLE_RECURRENT_LAYER_TYPES:
        body = getattr(layer, kind)
        outputs, name = int(body.outputVectorSize), field.rsplit(".", 1)[-1].lower()
        if name.endswith("weightmatrix"):
            return outputs * int(body.inputVectorSize)
        if name.endswith("recursionmatrix"):
            return outputs * outputs
        return outputs if name.endswith("vector") else None
    if kind not in QUANTIZABLE_WEIGHT_LAYER_TYPES or field not in ("weights", "bias"):
        return None
    body = getattr(layer, kind)
    outputs, inputs = {
        "convolution": lambda: (body.outputChannels, body.kernelChannels),
        "innerProduct": lambda: (body.outputChannels, body.inputChannels),
        "batchedMatmul": lambda: (
            body.weightMatrixSecondDimension,
            body.weightMatrixFirstDimension,
        ),
        "embedding": lambda: (body.outputChannels, body.inputDim),
        "embeddingND": lambda: (body.embeddingSize, body.vocabSize),
    }[kind]()
    if field == "bias":
        return int(outputs)
    if kind != "convolution":
        return int(outputs) * int(inputs)
    kernel = math.prod(int(k) for k in (list(body.kernelSize) or [3, 3]))
    if body.isDeconvolution:
        return int(inputs) * (int(outputs) // max(int(body.nGroups), 1)) * kernel
    return int(outputs) * int(inputs) * kernel


def quantization_channel_axis(layer) -> int:
    """The axis of a layer's stored ``weights`` along which per-channel linear ``scale`` and
    ``bias`` run: the output channels. They lead the stored array for every layer type above
    except a deconvolution, stored ``[kernelChannels, outputChannels / nGroups, kH, kW]``
    (NeuralNetwork.proto ``ConvolutionLayerParams``; coremltools' ``quantization_utils``
    quantizes it on axis 1)."""
    if layer.WhichOneof("layer") == "convolution" and layer.convolution.isDeconvolution:
        return 1
    return 0
