"""Finding codes: severity, meaning and fix of everything the validator reports.

The docs (``docs/validator-findings.md``, ``docs/failure-modes.md``) are generated from
``CODES``. Severities: ``error`` = Core ML refuses the file (or we refuse it on purpose, as
docs/limits.md lists); ``warning`` = failures reported on devices that Core ML's validator
does not catch; ``info`` = something to know that is not a failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

#: Every finding code: (severity, what it means, the fix).
CODES: dict[str, tuple[str, str, str]] = {
    "NOT_UPDATABLE": (
        "error",
        "The model is not marked updatable.",
        "Run 'updatable-coreml make-updatable' (or export with our exporters).",
    ),
    "ML_PROGRAM": (
        "error",
        "ML Program models cannot be updated on device.",
        "Convert with convert_to='neuralnetwork', or export with updatable-coreml.",
    ),
    "WRONG_MODEL_TYPE": (
        "error",
        "Only neural networks, k-NN classifiers and pipelines can be updatable.",
        "Wrap the model in a pipeline whose last model is a neural network or k-NN.",
    ),
    "SPEC_VERSION": (
        "error",
        "Updatable models need specification version 4 (iOS 13) or later.",
        "Set specificationVersion to at least 4.",
    ),
    "NO_UPDATABLE_LAYER": (
        "error",
        "The model is marked updatable but no layer is.",
        "Mark at least one convolution or innerProduct layer updatable.",
    ),
    "LAYER_NOT_UPDATABLE_TYPE": (
        "error",
        "Only convolution, innerProduct and uniDirectionalLSTM layers can be updatable.",
        "Unmark this layer, or train a convolution/innerProduct layer instead.",
    ),
    "WEIGHTS_NOT_MARKED": (
        "error",
        "An updatable layer's weights or bias are not marked updatable.",
        "Set isUpdatable on both the weights and the bias of the layer.",
    ),
    "WEIGHTS_NOT_FP32": (
        "error",
        "An updatable layer has fp16 or quantized weights (Core ML refuses "
        "quantized ones; fp16 is refused on purpose, see docs/limits.md).",
        "Store the weights of updatable layers as fp32 floatValue.",
    ),
    "NAME_COLLISION": (
        "error",
        "Two layers or loss layers share a name.",
        "Give every layer and loss layer a unique name.",
    ),
    "NO_LOSS": (
        "error",
        "The update parameters have no loss layer.",
        "Add a categorical cross-entropy or MSE loss layer.",
    ),
    "MULTIPLE_LOSSES": ("error", "More than one loss layer.", "Keep exactly one loss layer."),
    "LOSS_TYPE": (
        "error",
        "Only categorical cross-entropy and MSE losses are supported.",
        "Use categorical cross-entropy (after a softmax) or MSE.",
    ),
    "CCE_INPUT_NOT_SOFTMAX": (
        "error",
        "Categorical cross-entropy must read the first output of a classic softmax layer.",
        "Append a classic softmax layer and point the loss input at its output.",
    ),
    "MSE_INPUT_NOT_IN_GRAPH": (
        "error",
        "The MSE loss input is not produced by a layer.",
        "Point the loss input at a layer output.",
    ),
    "LOSS_TARGET_IN_GRAPH": (
        "error",
        "The loss target is produced inside the network.",
        "Use a new name for the target; it must be fed as a training input.",
    ),
    "BACKPROP_BLOCKED": (
        "error",
        "A layer Core ML cannot backpropagate through sits between the loss "
        "and an updatable layer.",
        "Freeze the layers before the blocking layer, or replace it with one Core ML "
        "backpropagates through (convolution, innerProduct, uniDirectionalLSTM, "
        "pooling, flatten, batchnorm, ReLU/sigmoid/tanh activations).",
    ),
    "NO_OPTIMIZER": (
        "error",
        "No optimizer (SGD or Adam) is set.",
        "Set an SGD or Adam optimizer.",
    ),
    "OPTIMIZER_PARAM_MISSING": (
        "error",
        "A required optimizer parameter is missing.",
        "Set learningRate and miniBatchSize (Adam also beta1, beta2, eps).",
    ),
    "NO_EPOCHS": ("error", "The update parameters have no epochs.", "Set the epochs parameter."),
    "PARAM_INVALID": (
        "error",
        "A parameter's default lies outside its allowed values, or its allowed values are invalid.",
        "Make the default one of the allowed values; counts must be positive.",
    ),
    "TRAINING_INPUTS_MISSING": (
        "error",
        "Training inputs must describe a prediction input and the target.",
        "Add the model inputs and the loss target to trainingInput.",
    ),
    "TRAINING_TARGET_MISSING": (
        "error",
        "The training inputs do not include the target.",
        "Add the loss target (or, for a classifier, the predicted label) to trainingInput.",
    ),
    "TRAINING_TARGET_TYPE": (
        "error",
        "The classifier's training label is typed unlike its predicted label.",
        "Give the training label the predicted feature's type (String or Int64).",
    ),
    "PIPELINE_UPDATABLE_POSITION": (
        "error",
        "Only the last model of an updatable pipeline may be updatable, and it must be.",
        "Mark only the pipeline's last model updatable.",
    ),
    "PIPELINE_WIRING": (
        "error",
        "A pipeline model's input is not produced earlier, or types differ.",
        "Wire each model input to a pipeline input or an earlier model output of the same type.",
    ),
    "KNN_INVALID": (
        "error",
        "The k-NN classifier is malformed.",
        "Fix the k-NN parameters as the message says.",
    ),
    "MODEL_INTERFACE": (
        "error",
        "A feature description breaks Core ML's interface rules (name, type, "
        "shape, data type, image size or color space, optional inputs/outputs).",
        "Fix the model description as the message says.",
    ),
    "CLASSIFIER_INTERFACE": (
        "error",
        "A classifier needs class labels of one type and a "
        "predictedFeatureName naming an output of that type (String or Int64).",
        "Set the class labels and point predictedFeatureName at a label output of the same type.",
    ),
    "REGRESSOR_PREDICTED_FEATURE": (
        "error",
        "A regressor needs description.predictedFeatureName naming a "
        "Double or MultiArray output (Core ML: 'Specification is missing "
        "regressor predictedFeatureName.').",
        "Set description.predictedFeatureName to the regressor's output.",
    ),
    "SHAPE_MAPPING": (
        "error",
        "MultiArray inputs use the rank-5 shape mapping while the network needs N-d "
        "semantics (an iOS 13 layer, or a non-rank-5 image mapping).",
        "Set arrayInputShapeMapping to EXACT_ARRAY_MAPPING.",
    ),
    "NO_LAYERS": ("error", "The neural network has no layers.", "Add at least one layer."),
    "LAYER_IO_COUNT": (
        "error",
        "A layer has more or fewer inputs or outputs than its type takes (e.g. a "
        "concat needs at least 2 inputs).",
        "Give the layer the number of inputs and outputs its type takes (a one-input "
        "concat is a copy: drop it).",
    ),
    "LAYER_PARAMS": (
        "error",
        "A layer's parameters break Core ML's layer rules (weights of one kind and "
        "precision and of the right size, quantization parameters, batchnorm parameters "
        "per channel, a padding type, 3 LSTM activations).",
        "Fix the layer's parameters as the message says.",
    ),
    "LAYER_RANK": (
        "error",
        "A blob's known rank is outside what the layer reading or writing it takes, or "
        "two rank annotations of one blob differ.",
        "Reshape the blob to a rank the layer takes (see the message), or fix the annotation.",
    ),
    "BLOB_NOT_PRODUCED": (
        "error",
        "A layer reads a blob that no model input or earlier layer produces.",
        "Order the layers so each blob is produced before it is read, or fix the name.",
    ),
    "BLOB_PRODUCED_TWICE": (
        "error",
        "Two layers (or a model input and a layer) produce the same blob; only "
        "a copy layer may rewrite one.",
        "Give each layer output a new name (and rename what reads it).",
    ),
    "OUTPUT_NOT_PRODUCED": (
        "error",
        "A model output is not produced by any layer.",
        "Name a layer output after the model output, or fix the description.",
    ),
    "CLASSIC_SOFTMAX_RANK": (
        "warning",
        "A classic softmax reads a blob we infer to be rank 2 (or less); "
        "NeuralNetwork.proto requires rank 3 or more for it. Core ML's "
        "validator does not see the rank and lets it through "
        "(coremltools' own updatable torch classifiers do this).",
        "Make the blob rank 4 in front of the head (e.g. (1, C, 1, 1): an innerProduct "
        "reads a rank-3 blob as rows of its last axis), or let 'updatable-coreml "
        "make-updatable' rewrite it.",
    ),
    "KNN_TRAINING_LABEL_TYPE": (
        "warning",
        "The k-NN training label is typed unlike the class labels. "
        "Core ML's validator does not check k-NN training inputs; "
        "whether an update task accepts such a label is unknown.",
        "Give the training label the class labels' type (String or Int64).",
    ),
    "MOMENTUM_OUT_OF_RANGE": (
        "warning",
        "SGD momentum's default lies outside its allowed range or "
        "outside 0..1. Core ML's validator never checks momentum, so "
        "the file loads; what training does with it is unknown.",
        "Use a momentum in [0, 1) inside its allowed range.",
    ),
    "FP16_WEIGHTS": (
        "warning",
        "A frozen layer of an updatable network stores fp16 weights. Core ML's "
        "validator accepts it, but coremltools' builder refuses fp16 anywhere "
        "in an updatable network: such networks are optimized to a full fp16 "
        "format on device (builder.py make_updatable, coremltools PR #2858).",
        "Store the weights as fp32; to shrink a frozen backbone, quantize it (int8 or "
        "a lookup table), which Core ML accepts in frozen layers.",
    ),
    "BATCHNORM_ON_PATH": (
        "warning",
        "A batchnorm layer sits on the trainable path; Core ML has failed "
        "to take its gradient on device (coremltools #492).",
        "Fold the batchnorm into the preceding layer or freeze the layers before it.",
    ),
    "INNER_PRODUCT_FEEDS_MSE": (
        "warning",
        "A frozen innerProduct feeds the MSE loss directly while an "
        "updatable layer lies before it; Core ML failed to compile "
        "that with 'inner_product needs at least 2 inputs for "
        "gradients' (coremltools #1983). An updatable innerProduct "
        "feeding MSE trains on devices in public projects.",
        "Make the last innerProduct updatable too, or put a sigmoid/tanh/ReLU "
        "between it and the loss, or verify on a device.",
    ),
    "EXPERIMENTAL_LSTM_UPDATE": (
        "warning",
        "An updatable uniDirectionalLSTM: Core ML's validator "
        "accepts it only from the coremltools 5.0b1 validator on "
        "(3.x and 4.x refuse it, so older OS versions likely do), "
        "and no on-device run of it is public.",
        "Verify on a device with the oldest OS you support, or freeze the "
        "LSTM and train the layers after it.",
    ),
    "LSTM_BEFORE_UPDATABLE": (
        "warning",
        "An LSTM ahead of an updatable innerProduct has failed on device "
        "with a rank error (coremltools #2074).",
        "Verify on a device, or put the LSTM in a frozen pipeline stage.",
    ),
    "STACKED_UPDATABLE_CONV": (
        "warning",
        "Two updatable convolutions in a row failed with a BNNS error "
        "on iOS 13 (coremltools #490; Apple: fixed in the next OS), "
        "and this model's specification version lets it run on iOS 13.",
        "Set specificationVersion to 5 (iOS 14) or later, or train only one of "
        "the two convolutions.",
    ),
    "RANK_ABOVE_5": (
        "warning",
        "A blob of rank above 5 during training failed on device with "
        "'Invalid rank: 6' (coremltools #832).",
        "Keep every tensor at rank 5 or below (e.g. fold the batch or sequence axis).",
    ),
    "GRAYSCALE_MSE": (
        "warning",
        "MSE training with a grayscale image input has failed to copy the image "
        "(coremltools #557).",
        "Use a MultiArray input or an RGB image.",
    ),
    "NO_SHUFFLE_SEED": (
        "warning",
        "Shuffle is on without a seed; Core ML then still uses a fixed seed.",
        "Set a seed to make that explicit.",
    ),
    "MSE_LOSS_VALUE": (
        "info",
        "Core ML's reported MSE lossValue has differed from the true mean squared "
        "error, even negative (coremltools #2070); what its MSE computes is not "
        "public.",
        "Judge training by your own metric on held-out data, not by lossValue alone.",
    ),
}


@dataclass(frozen=True)
class Finding:
    code: str
    layer: str | None
    message: str

    @property
    def severity(self) -> str:
        return CODES[self.code][0]

    @property
    def fix(self) -> str:
        return CODES[self.code][2]

    def __str__(self) -> str:
        where = f" [{self.layer}]" if self.layer else ""
        return f"{self.severity.upper()} {self.code}{where}: {self.message} Fix: {self.fix}"

    def to_dict(self) -> dict:
        return {**asdict(self), "severity": self.severity, "fix": self.fix}


def is_valid(findings: Iterable[Finding]) -> bool:
    return not any(f.severity == "error" for f in findings)
