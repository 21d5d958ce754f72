"""Core ML's rules for an updatable neural network
(``mlmodel/src/Validation/NeuralNetwork/UpdatableNeuralNetworkValidator.cpp``; checked on every
release tag 3.0 to 9.0: quantized updatable weights are refused from 4.0 on, an updatable
``uniDirectionalLSTM`` is accepted from 5.0b1 on).

Apple stops at its first error; we report every error we find, so the verdict is Apple's and
the list is longer. Deliberate refusals beyond Apple's (docs/limits.md): fp16 weights on an
updatable layer, and an updatable LSTM's weights held to the same rules as the others.
"""

from __future__ import annotations

from typing import Any

from ..coreml_rules import CCE_INPUT_LAYER_TYPE, OPTIMIZER_REQUIRED_FIELDS, is_updatable_type
from ..spec_io import Spec, model_type
from .features import equivalent, types_equal
from .findings import Finding
from .graph import LayerGraph, blocking_layer, layer_type, loss_io
from .params import double_param_findings, int_param_findings


def weight_params(layer) -> list[tuple[str, Any]]:
    """(name, WeightParams) of an updatable-type layer: weights and bias, or an LSTM's."""
    kind = layer_type(layer) or ""
    body = getattr(layer, kind)
    if kind == "uniDirectionalLSTM":
        return [(field.name, value) for field, value in body.weightParams.ListFields()]
    params = [("weights", body.weights)]
    if body.hasBias:
        params.append(("bias", body.bias))
    return params


def is_fp32(params) -> bool:
    return len(params.floatValue) > 0 and not params.HasField("quantization")


def layer_findings(nn) -> list[Finding]:
    """Updatable layer types, their weight flags and storage, unique layer/loss names."""
    findings = []
    seen: set[str] = set()
    any_updatable = False
    for layer in nn.layers:
        if layer.name in seen:
            findings.append(
                Finding("NAME_COLLISION", layer.name, f"Layer name {layer.name!r} is used twice.")
            )
        seen.add(layer.name)
        if not layer.isUpdatable:
            continue
        any_updatable = True
        kind = layer_type(layer)
        if not is_updatable_type(kind or ""):
            findings.append(
                Finding(
                    "LAYER_NOT_UPDATABLE_TYPE",
                    layer.name,
                    f"Layer {layer.name!r} of type {kind!r} is marked updatable.",
                )
            )
            continue
        params = weight_params(layer)
        unmarked = [name for name, p in params if not p.isUpdatable]
        if unmarked:
            findings.append(
                Finding(
                    "WEIGHTS_NOT_MARKED",
                    layer.name,
                    f"Layer {layer.name!r}: {' and '.join(unmarked)} not marked updatable.",
                )
            )
        not_fp32 = [name for name, p in params if not is_fp32(p)]
        if not_fp32:
            findings.append(
                Finding(
                    "WEIGHTS_NOT_FP32",
                    layer.name,
                    f"Layer {layer.name!r}: {' and '.join(not_fp32)} are not fp32 floatValue.",
                )
            )
    if not any_updatable:
        findings.append(Finding("NO_UPDATABLE_LAYER", None, "No layer has isUpdatable set."))
    for loss in nn.updateParams.lossLayers:
        if loss.name in seen:
            findings.append(
                Finding(
                    "NAME_COLLISION",
                    loss.name,
                    f"Loss layer name {loss.name!r} collides with another layer.",
                )
            )
        seen.add(loss.name)
    return findings


def loss_findings(nn, graph: LayerGraph) -> list[Finding]:
    """One loss; CCE reads the first output of a classic softmax (the loss's parent in
    Apple's graph); MSE reads a layer output; the target is not produced in the graph."""
    losses = nn.updateParams.lossLayers
    if not losses:
        return [Finding("NO_LOSS", None, "updateParams has no loss layer.")]
    findings = []
    if len(losses) > 1:
        findings.append(Finding("MULTIPLE_LOSSES", None, f"{len(losses)} loss layers are set."))
    for loss in losses:
        kind, source, target = loss_io(loss)
        if kind is None:
            findings.append(
                Finding(
                    "LOSS_TYPE",
                    loss.name,
                    f"Loss layer {loss.name!r} is {loss.WhichOneof('LossLayerType')!r}.",
                )
            )
            continue
        producer = graph.last_writer.get(source)
        if kind == "cce":
            layer = producer.layer if producer is not None else None
            if (
                layer is None
                or layer_type(layer) != CCE_INPUT_LAYER_TYPE
                or layer.output[0] != source
            ):
                what = (
                    "no layer"
                    if layer is None
                    else f"{layer.name!r} ({layer_type(layer)})"
                    if layer_type(layer) != CCE_INPUT_LAYER_TYPE
                    else f"softmax {layer.name!r} but not its first output"
                )
                findings.append(
                    Finding(
                        "CCE_INPUT_NOT_SOFTMAX",
                        loss.name,
                        f"Loss input {source!r} comes from {what}.",
                    )
                )
        if kind == "mse" and producer is None:
            findings.append(
                Finding(
                    "MSE_INPUT_NOT_IN_GRAPH",
                    loss.name,
                    f"Loss input {source!r} is not produced by any layer.",
                )
            )
        if target in graph.last_writer:
            findings.append(
                Finding(
                    "LOSS_TARGET_IN_GRAPH",
                    loss.name,
                    f"Loss target {target!r} is produced by layer "
                    f"{graph.last_writer[target].name!r}.",
                )
            )
    return findings


def backprop_findings(graph: LayerGraph) -> list[Finding]:
    found = blocking_layer(graph)
    if found is None:
        return []
    blocking, updatable = found
    return [
        Finding(
            "BACKPROP_BLOCKED",
            blocking,
            f"Layer {blocking!r} cannot be backpropagated through, but updatable layer "
            f"{updatable!r} lies before it.",
        )
    ]


def update_param_findings(nn) -> list[Finding]:
    """Optimizer fields, epochs and seed as Apple checks them. SGD momentum is not checked
    by Apple (any release); we warn when it is outside its range or outside 0..1."""
    params = nn.updateParams
    which = params.optimizer.WhichOneof("OptimizerType")
    findings = []
    if which not in OPTIMIZER_REQUIRED_FIELDS:
        findings.append(Finding("NO_OPTIMIZER", None, "updateParams.optimizer is not set."))
    else:
        optimizer = getattr(params.optimizer, which)
        for field in OPTIMIZER_REQUIRED_FIELDS[which]:
            if not optimizer.HasField(field):
                findings.append(
                    Finding("OPTIMIZER_PARAM_MISSING", None, f"{which} has no {field}.")
                )
            elif field == "miniBatchSize":
                findings += int_param_findings(field, optimizer.miniBatchSize, positive=True)
            else:
                findings += double_param_findings(field, getattr(optimizer, field))
        if which == "sgdOptimizer" and optimizer.HasField("momentum"):
            momentum = optimizer.momentum
            outside = [f.message for f in double_param_findings("momentum", momentum)]
            if not 0.0 <= momentum.defaultValue < 1.0:
                outside.append(f"momentum: default {momentum.defaultValue:g} is outside 0..1.")
            findings += [Finding("MOMENTUM_OUT_OF_RANGE", None, message) for message in outside]
    if not params.HasField("epochs"):
        findings.append(Finding("NO_EPOCHS", None, "updateParams.epochs is not set."))
    else:
        findings += int_param_findings("epochs", params.epochs, positive=True)
    if params.HasField("seed"):
        findings += int_param_findings("seed", params.seed, positive=False)
    return findings


def training_input_findings(spec: Spec, nn) -> list[Finding]:
    """Apple's ``validateTrainingInputs``: training inputs are matched to prediction inputs
    by name and type only (features.equivalent); at least one is a prediction input and one
    is not; the loss target (or, for a classifier, the predicted label typed like its
    output) is among the others."""
    description = spec.description
    training = list(description.trainingInput)
    if len(training) <= 1:
        return [
            Finding(
                "TRAINING_INPUTS_MISSING",
                None,
                f"{len(training)} training input(s); expected the model inputs plus the target.",
            )
        ]
    exclusive = [t for t in training if not any(equivalent(t, i) for i in description.input)]
    if not exclusive:
        return [
            Finding(
                "TRAINING_INPUTS_MISSING", None, "No training input besides the prediction inputs."
            )
        ]
    if len(exclusive) == len(training):
        return [
            Finding(
                "TRAINING_INPUTS_MISSING",
                None,
                "The training inputs share no input with prediction.",
            )
        ]
    losses = nn.updateParams.lossLayers
    target = loss_io(losses[0])[2] if losses else ""
    is_classifier = model_type(spec) == "neuralNetworkClassifier"
    label = description.predictedFeatureName
    met = False
    for candidate in exclusive:
        if is_classifier and candidate.name == label:
            output = next((o for o in description.output if o.name == label), None)
            if output is not None:
                if not types_equal(candidate.type, output.type):
                    return [
                        Finding(
                            "TRAINING_TARGET_TYPE",
                            None,
                            f"Training input {label!r} is {candidate.type.WhichOneof('Type')}, the "
                            f"predicted label is {output.type.WhichOneof('Type')}.",
                        )
                    ]
                met = True
        met = met or candidate.name == target
    if met:
        return []
    wanted = label if is_classifier else target
    return [Finding("TRAINING_TARGET_MISSING", None, f"Training inputs do not include {wanted!r}.")]
