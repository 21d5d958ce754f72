"""Generic spec composition: pipelines of two models, chaining a backbone to a head, renaming
features and blobs.

These work on Core ML specs only, whoever made them (our backend, coremltools, a user's
file), so they sit below ``export`` and ``knn`` and import nothing of the export side.
Core ML's rule they keep: every blob of a NeuralNetwork is produced once, and a model input
counts as produced (Apple's validator: "Layer 'X' produces an output named 'Y' which is
also an output produced by the layer '__input'", issue 14).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._proto import Model_pb2
from .errors import ConfigError
from .spec_io import Spec, neural_network

#: The pipeline's model names for a frozen backbone and an updatable network head, as Xcode
#: shows them.
STAGE_NAMES = ("backbone", "head")


@dataclass
class Backbone:
    """A frozen first stage: its spec, how it was made (``frontend``/``coremltools``) and
    what the report should say about it."""

    spec: Spec
    path: str
    notes: list[str] = field(default_factory=list)


def pipeline_spec(extractor: Spec, knn: Spec, names: tuple[str, str]) -> Spec:
    """An updatable pipeline: frozen ``extractor`` then the updatable ``knn`` (or network
    head), named ``names``; the training inputs are the pipeline's inputs plus the last
    model's targets (its training inputs that are not prediction inputs: the label)."""
    spec = Model_pb2.Model()
    spec.specificationVersion = max(4, extractor.specificationVersion, knn.specificationVersion)
    spec.isUpdatable = True
    description = spec.description
    description.input.extend(extractor.description.input)
    description.output.extend(knn.description.output)
    description.predictedFeatureName = knn.description.predictedFeatureName
    description.predictedProbabilitiesName = knn.description.predictedProbabilitiesName
    description.trainingInput.extend(extractor.description.input)
    fed = {feature.name for feature in knn.description.input}
    description.trainingInput.extend(t for t in knn.description.trainingInput if t.name not in fed)
    if extractor.description.HasField("metadata"):
        description.metadata.CopyFrom(extractor.description.metadata)
    spec.pipeline.models.add().CopyFrom(extractor)
    spec.pipeline.models.add().CopyFrom(knn)
    spec.pipeline.names.extend(names)
    return spec


def chain(backbone: Spec, head: Spec) -> Spec:
    """The updatable pipeline backbone -> head. The blob between them gets one declared type:
    the backbone's when it declares a shape (its layers decide the rank), else the head's."""
    (output,) = backbone.description.output
    (feature,) = head.description.input
    if output.name != feature.name:
        raise ConfigError(
            f"the backbone outputs {output.name!r} but the head reads {feature.name!r}"
        )
    if output.type.multiArrayType.shape:
        interface = output.type
    else:
        interface = feature.type
        output.type.CopyFrom(interface)
    for described in (*head.description.input, *head.description.trainingInput):
        if described.name == feature.name:
            described.type.CopyFrom(interface)
    spec = pipeline_spec(backbone, head, names=STAGE_NAMES)
    spec.description.metadata.CopyFrom(head.description.metadata)
    return spec


def layer_names(spec: Spec) -> list[str]:
    """The layer names of a NeuralNetwork spec, in order."""
    return [layer.name for layer in neural_network(spec).layers]


def blob_names(spec: Spec) -> set[str]:
    """Every blob a NeuralNetwork spec's inputs and layers produce."""
    names = {feature.name for feature in spec.description.input}
    return names.union(*(layer.output for layer in neural_network(spec).layers))


def free_name(taken: set[str], name: str) -> str:
    """``name``, or ``name_1``, ``name_2``... if taken; the result is added to ``taken``.

    Core ML needs unique layer and blob names, while sources reuse them (shared Keras layers,
    repeated functional calls in torch, unnamed ONNX nodes, coremltools' own blob names).
    """
    candidate, index = name, 1
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    taken.add(candidate)
    return candidate


def rename_blob(spec: Spec, old: str, new: str) -> None:
    """Rename blob ``old`` to ``new`` everywhere in a NeuralNetwork spec: features
    (inputs, outputs, training inputs), layer inputs and outputs, preprocessing."""
    description = spec.description
    for feature in (*description.input, *description.output, *description.trainingInput):
        if feature.name == old:
            feature.name = new
    network = neural_network(spec)
    for layer in network.layers:
        layer.input[:] = [new if name == old else name for name in layer.input]
        layer.output[:] = [new if name == old else name for name in layer.output]
    for step in network.preprocessing:
        if step.featureName == old:
            step.featureName = new


def make_room(spec: Spec, name: str, keep: str) -> None:
    """Rename the internal blob called ``name`` (if any, other than feature ``keep``) to a
    free name, so that feature ``keep`` can take ``name`` without a blob made twice."""
    if name == keep or name not in blob_names(spec):
        return
    rename_blob(spec, name, free_name(blob_names(spec) | {name}, name))


def rename_input(spec: Spec, old: str, new: str) -> None:
    """Rename a NeuralNetwork input feature (description, layer inputs, preprocessing);
    refuses a name the network already uses."""
    if any(f.name == new for f in spec.description.input) or any(
        new in layer.output for layer in neural_network(spec).layers
    ):
        raise ConfigError(f"input_name {new!r} is already used in the feature extractor")
    for feature in spec.description.input:
        if feature.name == old:
            feature.name = new
    network = neural_network(spec)
    for layer in network.layers:
        layer.input[:] = [new if name == old else name for name in layer.input]
    for step in network.preprocessing:
        if step.featureName == old:
            step.featureName = new
