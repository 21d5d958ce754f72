"""Validate updatable models with the rules Core ML applies, plus known on-device pitfalls.

The rules follow Apple's open validator (``UpdatableNeuralNetworkValidator.cpp``,
``ParameterValidator.cpp``, ``PipelineValidator.cpp``, the k-NN validator); each finding
carries a stable code, the layer it concerns, and a one-sentence fix. Warnings cover
failures users reported on device that the validator does not catch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Iterable, Optional

from .spec_io import NEURAL_NETWORK_TYPES, Spec, SpecLike, load_spec, model_type

#: Every finding code: (severity, what it means, the fix). Docs are generated from this.
CODES: dict[str, tuple[str, str, str]] = {
    "NOT_UPDATABLE": ("error", "The model is not marked updatable.",
                      "Run 'updatable-coreml make-updatable' (or export with our exporters)."),
    "ML_PROGRAM": ("error", "ML Program models cannot be updated on device.",
                   "Convert with convert_to='neuralnetwork', or export with updatable-coreml."),
    "WRONG_MODEL_TYPE": ("error", "Only neural networks, k-NN classifiers and pipelines can be updatable.",
                         "Wrap the model in a pipeline whose last model is a neural network or k-NN."),
    "SPEC_VERSION": ("error", "Updatable models need specification version 4 (iOS 13) or later.",
                     "Set specificationVersion to at least 4."),
    "NO_UPDATABLE_LAYER": ("error", "The model is marked updatable but no layer is.",
                           "Mark at least one convolution or innerProduct layer updatable."),
    "LAYER_NOT_UPDATABLE_TYPE": ("error", "Only convolution, innerProduct and (experimental) "
                                          "uniDirectionalLSTM layers can be updatable.",
                                 "Unmark this layer, or train a convolution/innerProduct layer instead."),
    "WEIGHTS_NOT_MARKED": ("error", "An updatable layer's weights or bias are not marked updatable.",
                           "Set isUpdatable on both the weights and the bias of the layer."),
    "WEIGHTS_NOT_FP32": ("error", "An updatable layer has fp16 or quantized weights.",
                         "Store the weights of updatable layers as fp32 floatValue."),
    "NAME_COLLISION": ("error", "Two layers or loss layers share a name.",
                       "Give every layer and loss layer a unique name."),
    "NO_LOSS": ("error", "The update parameters have no loss layer.",
                "Add a categorical cross-entropy or MSE loss layer."),
    "MULTIPLE_LOSSES": ("error", "More than one loss layer.", "Keep exactly one loss layer."),
    "LOSS_TYPE": ("error", "Only categorical cross-entropy and MSE losses are supported.",
                  "Use categorical cross-entropy (after a softmax) or MSE."),
    "CCE_INPUT_NOT_SOFTMAX": ("error", "Categorical cross-entropy must read a softmax layer's output.",
                              "Append a classic softmax layer and point the loss input at its output."),
    "MSE_INPUT_NOT_IN_GRAPH": ("error", "The MSE loss input is not produced by a layer.",
                               "Point the loss input at a layer output."),
    "LOSS_TARGET_IN_GRAPH": ("error", "The loss target is produced inside the network.",
                             "Use a new name for the target; it must be fed as a training input."),
    "BACKPROP_BLOCKED": ("error", "A layer Core ML cannot backpropagate through sits between the loss "
                                  "and an updatable layer.",
                         "Freeze the layers before the blocking layer, or replace it with a "
                         "backpropagable one (convolution, innerProduct, pooling, flatten, "
                         "batchnorm, reshape, ReLU/sigmoid/tanh)."),
    "NO_OPTIMIZER": ("error", "No optimizer (SGD or Adam) is set.", "Set an SGD or Adam optimizer."),
    "OPTIMIZER_PARAM_MISSING": ("error", "A required optimizer parameter is missing.",
                                "Set learningRate and miniBatchSize (Adam also beta1, beta2, eps)."),
    "NO_EPOCHS": ("error", "The update parameters have no epochs.", "Set the epochs parameter."),
    "PARAM_INVALID": ("error", "A parameter's default lies outside its allowed values, or its allowed "
                               "values are invalid.",
                      "Make the default one of the allowed values; counts must be positive."),
    "TRAINING_INPUTS_MISSING": ("error", "Training inputs must describe a prediction input and the target.",
                                "Add the model inputs and the loss target to trainingInput."),
    "TRAINING_TARGET_MISSING": ("error", "The training inputs do not include the target.",
                                "Add the loss target (or, for a classifier, the predicted label) to trainingInput."),
    "TRAINING_TARGET_TYPE": ("error", "The classifier's training label is typed unlike its predicted label.",
                             "Give the training label the predicted feature's type (String or Int64)."),
    "PIPELINE_UPDATABLE_POSITION": ("error", "Only the last model of an updatable pipeline may be updatable, "
                                             "and it must be.",
                                    "Mark only the pipeline's last model updatable."),
    "PIPELINE_WIRING": ("error", "A pipeline model's input is not produced earlier, or types differ.",
                        "Wire each model input to a pipeline input or an earlier model output of the same type."),
    "KNN_INVALID": ("error", "The k-NN classifier is malformed.",
                    "Fix the k-NN parameters as the message says."),
    "BATCHNORM_ON_PATH": ("warning", "A batchnorm layer sits on the trainable path; Core ML has failed "
                                     "to take its gradient on device (coremltools #492).",
                          "Fold the batchnorm into the preceding layer or freeze the layers before it."),
    "INNER_PRODUCT_FEEDS_MSE": ("warning", "An updatable innerProduct feeds MSE directly; this has failed "
                                           "on device with 'needs at least 2 inputs for gradients' "
                                           "(coremltools #1983).",
                                "Put a backpropagable activation (e.g. sigmoid/tanh/ReLU) or another "
                                "layer between them, or verify on a device."),
    "EXPERIMENTAL_LSTM_UPDATE": ("warning", "An updatable uniDirectionalLSTM: only Apple's newest "
                                            "validator accepts it (older OS versions refuse the "
                                            "model), and no on-device run of it is public.",
                                 "Verify on a device with the oldest OS you support, or freeze the "
                                 "LSTM and train the layers after it."),
    "LSTM_BEFORE_UPDATABLE": ("warning", "An LSTM ahead of an updatable innerProduct has failed on device "
                                         "with a rank error (coremltools #2074).",
                              "Verify on a device, or put the LSTM in a frozen pipeline stage."),
    "GRAYSCALE_MSE": ("warning", "MSE training with a grayscale image input has failed to copy the image "
                                 "(coremltools #557).", "Use a MultiArray input or an RGB image."),
    "NO_SHUFFLE_SEED": ("warning", "Shuffle is on without a seed; Core ML then still uses a fixed seed.",
                        "Set a seed to make that explicit."),
}


@dataclass(frozen=True)
class Finding:
    code: str
    layer: Optional[str]
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


def validate(model: SpecLike) -> list[Finding]:
    """All findings for a model (path, bytes or spec); empty means valid with no warnings."""
    return _validate_spec(load_spec(model), top_level=True)


def _validate_spec(spec: Spec, top_level: bool) -> list[Finding]:
    kind = model_type(spec)
    if kind == "mlProgram":
        return [Finding("ML_PROGRAM", None, "This file is an ML Program; Core ML cannot update it.")]
    if kind in ("pipeline", "pipelineClassifier", "pipelineRegressor"):
        return _validate_pipeline(spec)
    if not spec.isUpdatable:
        if top_level:
            return [Finding("NOT_UPDATABLE", None, "isUpdatable is false.")]
        return []
    findings = []
    if spec.specificationVersion < 4:
        findings.append(Finding("SPEC_VERSION", None,
                                f"specificationVersion is {spec.specificationVersion}."))
    if kind in NEURAL_NETWORK_TYPES:
        findings += _validate_network(spec)
    elif kind == "kNearestNeighborsClassifier":
        findings += _validate_knn(spec)
    else:
        findings.append(Finding("WRONG_MODEL_TYPE", None, f"Model type {kind!r} cannot be updatable."))
    return findings


# -- neural networks ---------------------------------------------------------------------

#: Layers every Core ML version since iOS 13 updates (make-updatable offers only these).
UPDATABLE_LAYER_TYPES = ("convolution", "innerProduct")
#: Updatable only for the newest stored version of Apple's UpdatableNeuralNetworkValidator.cpp
#: (coremltools commit 1902a6d; the older 07cc246 refuses it). That version checks neither the
#: LSTM's weight flags nor quantization, and still does not list it in
#: isLayerSupportedForBackprop: it trains only as the first updatable layer on its path. We
#: accept it with an EXPERIMENTAL_LSTM_UPDATE warning and hold its weights to the same rules
#: as the others (marked updatable, fp32), as NeuralNetwork.proto asks of updatable layers.
EXPERIMENTAL_UPDATABLE_TYPES = ("uniDirectionalLSTM",)
#: Layers every Core ML version since iOS 13 backpropagates through. Apple's newest validator
#: also accepts concat, concatND, transpose, reshapeStatic and clampedReLU, but older devices
#: refuse them and our runtime has no gradient for them, so we keep the list that works on all.
BACKPROP_LAYER_TYPES = ("convolution", "innerProduct", "flatten", "pooling", "batchnorm", "reshape")
BACKPROP_ACTIVATIONS = ("ReLU", "sigmoid", "tanh")


def backpropagable(layer) -> bool:
    """Whether Core ML can backpropagate through ``layer`` (Apple's list, softmax excluded)."""
    kind = layer.WhichOneof("layer")
    if kind == "activation":
        return layer.activation.WhichOneof("NonlinearityType") in BACKPROP_ACTIVATIONS
    return kind in BACKPROP_LAYER_TYPES


def _weight_params(layer) -> list[tuple[str, object]]:
    kind = layer.WhichOneof("layer")
    body = getattr(layer, kind)
    if kind == "uniDirectionalLSTM":
        return [(field.name, value) for field, value in body.weightParams.ListFields()]
    params = [("weights", body.weights)]
    if body.hasBias:
        params.append(("bias", body.bias))
    return params


def _is_fp32(params) -> bool:
    return len(params.floatValue) > 0 and not params.HasField("quantization")


def _validate_layers(nn) -> list[Finding]:
    findings = []
    seen: set[str] = set()
    any_updatable = False
    for layer in nn.layers:
        if layer.name in seen:
            findings.append(Finding("NAME_COLLISION", layer.name, f"Layer name {layer.name!r} is used twice."))
        seen.add(layer.name)
        if not layer.isUpdatable:
            continue
        any_updatable = True
        kind = layer.WhichOneof("layer")
        if kind not in UPDATABLE_LAYER_TYPES + EXPERIMENTAL_UPDATABLE_TYPES:
            findings.append(Finding("LAYER_NOT_UPDATABLE_TYPE", layer.name,
                                    f"Layer {layer.name!r} of type {kind!r} is marked updatable."))
            continue
        params = _weight_params(layer)
        unmarked = [name for name, p in params if not p.isUpdatable]
        if unmarked:
            findings.append(Finding("WEIGHTS_NOT_MARKED", layer.name,
                                    f"Layer {layer.name!r}: {' and '.join(unmarked)} not marked updatable."))
        not_fp32 = [name for name, p in params if not _is_fp32(p)]
        if not_fp32:
            findings.append(Finding("WEIGHTS_NOT_FP32", layer.name,
                                    f"Layer {layer.name!r}: {' and '.join(not_fp32)} are not fp32 floatValue."))
    if not any_updatable:
        findings.append(Finding("NO_UPDATABLE_LAYER", None, "No layer has isUpdatable set."))
    for loss in nn.updateParams.lossLayers:
        if loss.name in seen:
            findings.append(Finding("NAME_COLLISION", loss.name,
                                    f"Loss layer name {loss.name!r} collides with another layer."))
        seen.add(loss.name)
    return findings


def _loss_io(loss) -> tuple[Optional[str], str, str]:
    kind = loss.WhichOneof("LossLayerType")
    if kind == "categoricalCrossEntropyLossLayer":
        return "cce", loss.categoricalCrossEntropyLossLayer.input, loss.categoricalCrossEntropyLossLayer.target
    if kind == "meanSquaredErrorLossLayer":
        return "mse", loss.meanSquaredErrorLossLayer.input, loss.meanSquaredErrorLossLayer.target
    return None, "", ""


def _producers(nn) -> dict[str, object]:
    """blob -> producing layer (the last writer, as Core ML's graph builder keeps it)."""
    producers: dict[str, object] = {}
    for layer in nn.layers:
        for blob in layer.output:
            producers[blob] = layer
    return producers


def _validate_loss(nn, producers) -> list[Finding]:
    losses = nn.updateParams.lossLayers
    if not losses:
        return [Finding("NO_LOSS", None, "updateParams has no loss layer.")]
    findings = []
    if len(losses) > 1:
        findings.append(Finding("MULTIPLE_LOSSES", None, f"{len(losses)} loss layers are set."))
    for loss in losses:
        kind, source, target = _loss_io(loss)
        if kind is None:
            findings.append(Finding("LOSS_TYPE", loss.name,
                                    f"Loss layer {loss.name!r} is {loss.WhichOneof('LossLayerType')!r}."))
            continue
        producer = producers.get(source)
        if kind == "cce" and (producer is None or producer.WhichOneof("layer") != "softmax"):
            what = "no layer" if producer is None else f"{producer.name!r} ({producer.WhichOneof('layer')})"
            findings.append(Finding("CCE_INPUT_NOT_SOFTMAX", loss.name,
                                    f"Loss input {source!r} comes from {what}, not a softmax layer."))
        if kind == "mse" and producer is None:
            findings.append(Finding("MSE_INPUT_NOT_IN_GRAPH", loss.name,
                                    f"Loss input {source!r} is not produced by any layer."))
        if target in producers:
            findings.append(Finding("LOSS_TARGET_IN_GRAPH", loss.name,
                                    f"Loss target {target!r} is produced by layer {producers[target].name!r}."))
    return findings


def _backprop_findings(nn, producers) -> list[Finding]:
    """Walk back from the loss like Core ML: an updatable layer reached after a layer that
    cannot backpropagate is an error naming that first blocking layer."""
    losses = nn.updateParams.lossLayers
    if not losses:
        return []
    kind, source, _ = _loss_io(losses[0])
    start = producers.get(source)
    if start is None:
        return []
    findings = []
    blocking: Optional[str] = None
    visited = {start.name}
    queue = deque([start])
    if not (kind == "cce" and start.WhichOneof("layer") == "softmax") and not backpropagable(start):
        blocking = start.name
    if start.isUpdatable and blocking and blocking != start.name:
        findings.append(_blocked(blocking, start.name))
    while queue:
        layer = queue.popleft()
        for blob in layer.input:
            parent = producers.get(blob)
            if parent is None or parent.name in visited:
                continue
            visited.add(parent.name)
            queue.append(parent)
            if parent.isUpdatable and blocking:
                findings.append(_blocked(blocking, parent.name))
                return findings
            if not backpropagable(parent):
                blocking = blocking or parent.name
    return findings


def _blocked(blocking: str, updatable: str) -> Finding:
    return Finding("BACKPROP_BLOCKED", blocking,
                   f"Layer {blocking!r} cannot be backpropagated through, but updatable layer "
                   f"{updatable!r} lies before it.")


def trainable_path(nn, producers: Optional[dict] = None) -> list:
    """Layers between the loss and the earliest updatable layer(s), loss side first."""
    producers = _producers(nn) if producers is None else producers
    losses = nn.updateParams.lossLayers
    if not losses:
        return []
    start = producers.get(_loss_io(losses[0])[1])
    if start is None:
        return []
    ancestors: dict[str, set[str]] = {}
    order = []
    for layer in nn.layers:
        above = set()
        for blob in layer.input:
            parent = producers.get(blob)
            if parent is not None:
                above |= ancestors.get(parent.name, set()) | {parent.name}
        ancestors[layer.name] = above
        order.append(layer)
    updatable = {layer.name for layer in nn.layers if layer.isUpdatable}
    wanted = ancestors.get(start.name, set()) | {start.name}
    return [layer for layer in reversed(order) if layer.name in wanted
            and (layer.name in updatable or ancestors[layer.name] & updatable)]


def _pitfall_findings(spec: Spec, nn, producers) -> list[Finding]:
    findings = []
    path = trainable_path(nn, producers)
    for layer in path:
        if layer.WhichOneof("layer") == "batchnorm":
            findings.append(Finding("BATCHNORM_ON_PATH", layer.name,
                                    f"Batchnorm {layer.name!r} lies between the loss and an updatable layer."))
    losses = nn.updateParams.lossLayers
    kind, source, _ = _loss_io(losses[0]) if losses else (None, "", "")
    producer = producers.get(source)
    if kind == "mse" and producer is not None and producer.WhichOneof("layer") == "innerProduct" \
            and producer.isUpdatable:
        findings.append(Finding("INNER_PRODUCT_FEEDS_MSE", producer.name,
                                f"Updatable innerProduct {producer.name!r} feeds the MSE loss directly."))
    if kind == "mse" and any(
            i.type.WhichOneof("Type") == "imageType" and i.type.imageType.colorSpace == i.type.imageType.GRAYSCALE
            for i in spec.description.input):
        findings.append(Finding("GRAYSCALE_MSE", None, "MSE loss with a grayscale image input."))
    for layer in nn.layers:
        if layer.isUpdatable and layer.WhichOneof("layer") in EXPERIMENTAL_UPDATABLE_TYPES:
            findings.append(Finding("EXPERIMENTAL_LSTM_UPDATE", layer.name,
                                    f"Layer {layer.name!r} is an updatable uniDirectionalLSTM."))
    first_updatable = next((i for i, layer in enumerate(nn.layers) if layer.isUpdatable), None)
    if first_updatable is not None and any(
            layer.WhichOneof("layer") == "uniDirectionalLSTM" for layer in nn.layers[:first_updatable]):
        findings.append(Finding("LSTM_BEFORE_UPDATABLE", nn.layers[first_updatable].name,
                                "An LSTM runs before the first updatable layer."))
    params = nn.updateParams
    if params.HasField("shuffle") and params.shuffle.defaultValue and not params.HasField("seed"):
        findings.append(Finding("NO_SHUFFLE_SEED", None, "Shuffle is on and no seed is set."))
    return findings


def _int_param_findings(name: str, param, positive: bool) -> list[Finding]:
    """Apple's Int64Parameter rules: positive default, default inside its set or range."""
    default = param.defaultValue
    problems = []
    if positive and default <= 0:
        problems.append(f"default {default} must be positive")
    kind = param.WhichOneof("AllowedValues")
    if kind == "set":
        values = list(param.set.values)
        if positive and any(v <= 0 for v in values):
            problems.append(f"allowed set {values} has non-positive values")
        if default not in values:
            problems.append(f"default {default} is not in the allowed set {values}")
    elif kind == "range":
        lo, hi = param.range.minValue, param.range.maxValue
        if positive and (lo <= 0 or hi <= 0):
            problems.append(f"allowed range {lo}..{hi} must be positive")
        if lo > hi:
            problems.append(f"allowed range {lo}..{hi} is empty")
        elif not lo <= default <= hi:
            problems.append(f"default {default} is outside the allowed range {lo}..{hi}")
    return [Finding("PARAM_INVALID", None, f"{name}: {p}.") for p in problems]


def _double_param_findings(name: str, param) -> list[Finding]:
    if param.WhichOneof("AllowedValues") == "range":
        lo, hi = param.range.minValue, param.range.maxValue
        if not lo <= param.defaultValue <= hi:
            return [Finding("PARAM_INVALID", None,
                            f"{name}: default {param.defaultValue:g} is outside the allowed range {lo:g}..{hi:g}.")]
    return []


OPTIMIZER_FIELDS = {
    "sgdOptimizer": ("learningRate", "miniBatchSize"),
    "adamOptimizer": ("learningRate", "miniBatchSize", "beta1", "beta2", "eps"),
}


def _validate_update_params(nn) -> list[Finding]:
    params = nn.updateParams
    which = params.optimizer.WhichOneof("OptimizerType")
    findings = []
    if which not in OPTIMIZER_FIELDS:
        findings.append(Finding("NO_OPTIMIZER", None, "updateParams.optimizer is not set."))
    else:
        optimizer = getattr(params.optimizer, which)
        for field in OPTIMIZER_FIELDS[which]:
            if not optimizer.HasField(field):
                findings.append(Finding("OPTIMIZER_PARAM_MISSING", None, f"{which} has no {field}."))
            elif field == "miniBatchSize":
                findings += _int_param_findings(field, optimizer.miniBatchSize, positive=True)
            else:
                findings += _double_param_findings(field, getattr(optimizer, field))
        if which == "sgdOptimizer" and optimizer.HasField("momentum"):
            findings += _double_param_findings("momentum", optimizer.momentum)
    if not params.HasField("epochs"):
        findings.append(Finding("NO_EPOCHS", None, "updateParams.epochs is not set."))
    else:
        findings += _int_param_findings("epochs", params.epochs, positive=True)
    if params.HasField("seed"):
        findings += _int_param_findings("seed", params.seed, positive=False)
    return findings


def _validate_training_inputs(spec: Spec, nn) -> list[Finding]:
    description = spec.description
    training = list(description.trainingInput)
    if len(training) <= 1:
        return [Finding("TRAINING_INPUTS_MISSING", None,
                        f"{len(training)} training input(s); expected the model inputs plus the target.")]
    exclusive = [t for t in training if not any(t == i for i in description.input)]
    if not exclusive:
        return [Finding("TRAINING_INPUTS_MISSING", None, "No training input besides the prediction inputs.")]
    if len(exclusive) == len(training):
        return [Finding("TRAINING_INPUTS_MISSING", None,
                        "The training inputs share no input with prediction.")]
    losses = nn.updateParams.lossLayers
    target = _loss_io(losses[0])[2] if losses else ""
    is_classifier = model_type(spec) == "neuralNetworkClassifier"
    label = description.predictedFeatureName
    label_output = next((o for o in description.output if o.name == label), None) if is_classifier else None
    for candidate in exclusive:
        if label_output is not None and candidate.name == label and candidate.type != label_output.type:
            return [Finding("TRAINING_TARGET_TYPE", None,
                            f"Training input {label!r} is {candidate.type.WhichOneof('Type')}, the "
                            f"predicted label is {label_output.type.WhichOneof('Type')}.")]
    if any(c.name in (target, label if label_output is not None else None) for c in exclusive):
        return []
    wanted = label if is_classifier else target
    return [Finding("TRAINING_TARGET_MISSING", None, f"Training inputs do not include {wanted!r}.")]


def _validate_network(spec: Spec) -> list[Finding]:
    nn = getattr(spec, model_type(spec))
    findings = _validate_layers(nn)
    producers = _producers(nn)
    findings += _validate_loss(nn, producers)
    findings += _validate_update_params(nn)
    if nn.updateParams.lossLayers:
        findings += _backprop_findings(nn, producers)
        findings += _validate_training_inputs(spec, nn)
        if is_valid(findings):
            findings += _pitfall_findings(spec, nn, producers)
    return findings


# -- k-NN and pipelines ------------------------------------------------------------------


def _validate_knn(spec: Spec) -> list[Finding]:
    knn = spec.kNearestNeighborsClassifier
    findings = [Finding("KNN_INVALID", None, f.message) for f in
                _int_param_findings("numberOfNeighbors", knn.numberOfNeighbors, positive=True)]
    if knn.WhichOneof("WeightingScheme") is None:
        findings.append(Finding("KNN_INVALID", None, "No weighting scheme is set."))
    labels = knn.WhichOneof("ClassLabels")
    default = knn.WhichOneof("DefaultClassLabel")
    count = len(getattr(knn, labels).vector) if labels else 0
    if default is None and count == 0:
        findings.append(Finding("KNN_INVALID", None, "Neither class labels nor a default label is set."))
    if default and labels and (default == "defaultStringLabel") != (labels == "stringClassLabels"):
        findings.append(Finding("KNN_INVALID", None, "Class labels and the default label differ in type."))
    index = knn.nearestNeighborsIndex
    if len(index.floatSamples) != count:
        findings.append(Finding("KNN_INVALID", None,
                                f"{len(index.floatSamples)} examples but {count} labels."))
    if any(len(s.vector) != index.numberOfDimensions for s in index.floatSamples):
        findings.append(Finding("KNN_INVALID", None,
                                f"An example's length differs from numberOfDimensions={index.numberOfDimensions}."))
    backend = index.WhichOneof("IndexType")
    if backend is None:
        findings.append(Finding("KNN_INVALID", None, "No index type (linear or kd-tree) is set."))
    elif backend == "singleKdTreeIndex" and index.singleKdTreeIndex.leafSize <= 0:
        findings.append(Finding("KNN_INVALID", None, "kd-tree leaf size must be positive."))
    if index.WhichOneof("DistanceFunction") is None:
        findings.append(Finding("KNN_INVALID", None, "No distance function is set."))
    return findings + _knn_label_findings(spec, _knn_label_type(knn))


def _knn_label_type(knn) -> str:
    """The feature type (``int64Type``/``stringType``) of a k-NN classifier's labels."""
    labels = knn.WhichOneof("ClassLabels")
    integer = labels == "int64ClassLabels" or (
        labels is None and knn.WhichOneof("DefaultClassLabel") == "defaultInt64Label")
    return "int64Type" if integer else "stringType"


def _knn_label_findings(spec: Spec, label_type: str) -> list[Finding]:
    """The predicted label, and the training label when given, are typed like the class labels."""
    description = spec.description
    name = description.predictedFeatureName
    output = next((o for o in description.output if o.name == name), None)
    if output is not None and output.type.WhichOneof("Type") != label_type:
        return [Finding("KNN_INVALID", None, f"The predicted label {name!r} is "
                        f"{output.type.WhichOneof('Type')}, the class labels are {label_type}.")]
    training = next((t for t in description.trainingInput if t.name == name), None)
    if training is not None and training.type.WhichOneof("Type") != label_type:
        return [Finding("TRAINING_TARGET_TYPE", None, f"Training input {name!r} is "
                        f"{training.type.WhichOneof('Type')}, the class labels are {label_type}.")]
    return []


def _validate_pipeline(spec: Spec) -> list[Finding]:
    kind = model_type(spec)
    pipeline = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
    models = list(pipeline.models)
    if not models:
        return [Finding("PIPELINE_WIRING", None, "The pipeline has no models.")]
    findings = []
    known = {i.name: i.type for i in spec.description.input}
    for position, model in enumerate(models):
        for needed in model.description.input:
            if needed.name not in known:
                findings.append(Finding("PIPELINE_WIRING", f"model {position}",
                                        f"Input {needed.name!r} is not produced before model {position}."))
            elif known[needed.name] != needed.type:
                findings.append(Finding("PIPELINE_WIRING", f"model {position}",
                                        f"Input {needed.name!r} of model {position} has another type than "
                                        "what feeds it."))
        known.update({o.name: o.type for o in model.description.output})
    for output in spec.description.output:
        if known.get(output.name) != output.type:
            findings.append(Finding("PIPELINE_WIRING", None, f"Pipeline output {output.name!r} is not "
                                    "produced by a model (or has another type than the model's)."))
    if spec.isUpdatable:
        early = [i for i, m in enumerate(models[:-1]) if m.isUpdatable]
        if early:
            findings.append(Finding("PIPELINE_UPDATABLE_POSITION", f"model {early[0]}",
                                    f"Model {early[0]} is updatable but is not the last model."))
        if not models[-1].isUpdatable:
            findings.append(Finding("PIPELINE_UPDATABLE_POSITION", f"model {len(models) - 1}",
                                    "The pipeline is updatable but its last model is not."))
        if spec.specificationVersion < 4:
            findings.append(Finding("SPEC_VERSION", None,
                                    f"specificationVersion is {spec.specificationVersion}."))
        findings += [_prefixed(f, len(models) - 1) for f in _validate_spec(models[-1], top_level=False)]
        if model_type(models[-1]) == "kNearestNeighborsClassifier":
            findings += _knn_label_findings(spec, _knn_label_type(models[-1].kNearestNeighborsClassifier))
    else:
        marked = [i for i, m in enumerate(models) if m.isUpdatable]
        if marked:
            findings.append(Finding("PIPELINE_UPDATABLE_POSITION", f"model {marked[0]}",
                                    f"Model {marked[0]} is updatable inside a pipeline not marked updatable."))
        else:
            findings.append(Finding("NOT_UPDATABLE", None, "The pipeline is not marked updatable."))
    for position, model in enumerate(models[:-1] if spec.isUpdatable else models):
        if model_type(model) in ("pipeline", "pipelineClassifier", "pipelineRegressor"):
            findings += [_prefixed(f, position) for f in _validate_pipeline(model)
                         if f.code != "NOT_UPDATABLE"]
    return findings


def _prefixed(finding: Finding, position: int) -> Finding:
    return Finding(finding.code, finding.layer or f"model {position}",
                   f"(pipeline model {position}) {finding.message}")
