"""Updatable k-NN pipelines: a frozen neural feature extractor + an updatable k-NN classifier.

For on-device personalization this is often the better choice than training a network: it
learns from a handful of examples per class, an update is instant (the examples are stored),
and it can learn labels the app never shipped with. Core ML runs it as a pipeline whose last
model, a ``KNearestNeighborsClassifier``, is the only updatable one; the training inputs are
the pipeline's input and the label.

The feature extractor comes from an existing NeuralNetwork ``.mlmodel`` (cut by spec surgery)
or from a Keras model / torch module, translated by our frontends and written frozen (no
backprop rules apply, so any layer they support may appear).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ._proto import FeatureTypes_pb2, Model_pb2
from .backend import LABEL_OUTPUT, Metadata
from .compose import pipeline_spec, rename_input
from .errors import ConfigError, UnsupportedError
from .export import ExportReport, frozen_spec, save_validated
from .spec_io import NEURAL_NETWORK_TYPES, Spec, load_spec, model_type, neural_network
from .training import IntParam

PathLike = Union[str, os.PathLike]
Label = Union[str, int]

WEIGHTINGS = {"inverse_distance": "inverseDistanceWeighting", "uniform": "uniformWeighting"}
INDEXES = ("linear", "kd_tree")
DEFAULT_LABELS: dict[str, Label] = {"string": "unknown", "int": -1}
EXTRACTOR_NAME, KNN_NAME = "feature_extractor", "knn"


# -- the feature extractor -----------------------------------------------------------------


def extractor_from_source(
    source: Any,
    *,
    feature_layer: Optional[str] = None,
    example_inputs: Any = None,
    image_input: Any = None,
) -> tuple[Spec, str, list[str]]:
    """A frozen NeuralNetwork spec computing the features, the source's name, and notes.

    ``source`` is a NeuralNetwork ``.mlmodel`` (path, bytes or spec), a Keras model, or a
    torch module / ``torch.export`` program (with ``example_inputs``).
    """
    framework = type(source).__module__.split(".")[0]
    if framework == "keras":
        from .exporters.keras import _keras, keras_to_graph

        graph, _ = keras_to_graph(source, image_input=image_input)
        name = f"keras=={_keras().__version__}"
    elif framework == "torch":
        import torch

        from .exporters.torch import torch_to_graph

        if example_inputs is None:
            raise ConfigError(
                "a torch feature extractor needs example_inputs (a batch-of-one tensor)"
            )
        graph = torch_to_graph(source, example_inputs, image_input=image_input).graph
        name = f"torch=={torch.__version__}"
    elif isinstance(source, (str, os.PathLike, bytes, Model_pb2.Model)):
        if str(source).endswith(".onnx") and not isinstance(source, (bytes, Model_pb2.Model)):
            raise UnsupportedError(
                f"{source}: ONNX feature extractors need the ONNX frontend, "
                "which is not available yet; export the network to .mlmodel first"
            )
        spec = frozen_network(load_spec(source))
        return cut_spec(spec, feature_layer) if feature_layer else spec, "Core ML model", []
    else:
        raise ConfigError(
            f"cannot use a {type(source).__name__} as a feature extractor: give a "
            "NeuralNetwork .mlmodel, a Keras model or a torch module"
        )
    from .passes import cut_at

    if feature_layer:
        graph = cut_at(graph, _graph_tensor(graph, feature_layer))
    elif len(graph.outputs) != 1:
        raise ConfigError(f"the model has {len(graph.outputs)} outputs; name the feature_layer")
    spec, notes = frozen_spec(graph, Metadata(source=name))
    return spec, name, notes


def _graph_tensor(graph, name: str) -> str:
    """The IR tensor named ``name``, else the output of the node named ``name``.

    Tensors come first: a Keras layer with ``activation=`` writes its activated output to the
    tensor named after the layer, while the node of that name is the pre-activation part.
    """
    tensors = {t for node in graph.nodes for t in node.outputs}
    if name in tensors:
        return name
    node = next((n for n in graph.nodes if n.name == name), None)
    if node is None:
        raise ConfigError(
            f"feature_layer {name!r} is not a layer of the model; layers: "
            + ", ".join(n.name for n in graph.nodes)
        )
    return node.outputs[-1]


def frozen_network(spec: Spec) -> Spec:
    """A copy of a NeuralNetwork (plain, classifier or regressor) spec as a plain network that
    does not train: update parameters, training inputs and updatable marks removed."""
    kind = model_type(spec)
    if kind not in NEURAL_NETWORK_TYPES:
        raise UnsupportedError(
            f"the feature extractor is a {kind or 'model of unknown type'}; it must "
            "be a NeuralNetwork (.mlmodel), not an ML Program or another model type"
        )
    source = neural_network(spec)
    frozen = Model_pb2.Model()
    frozen.specificationVersion = spec.specificationVersion
    frozen.description.CopyFrom(spec.description)
    for field in ("trainingInput", "predictedFeatureName", "predictedProbabilitiesName"):
        frozen.description.ClearField(field)
    network = frozen.neuralNetwork
    network.layers.extend(source.layers)
    network.preprocessing.extend(source.preprocessing)
    network.arrayInputShapeMapping = source.arrayInputShapeMapping
    network.imageInputShapeMapping = source.imageInputShapeMapping
    for layer in network.layers:
        layer.isUpdatable = False
        body = getattr(layer, layer.WhichOneof("layer"))
        for field in ("weights", "bias"):
            if body.DESCRIPTOR.fields_by_name.get(field) is not None and body.HasField(field):
                getattr(body, field).isUpdatable = False
    if kind == "neuralNetworkClassifier":  # the label outputs belong to the classifier part
        outputs = [
            o for o in frozen.description.output if o.type.WhichOneof("Type") == "multiArrayType"
        ]
        frozen.description.ClearField("output")
        frozen.description.output.extend(outputs)
    if not frozen.description.output:
        _set_output(frozen, network.layers[-1].output[0])
    return frozen


def cut_spec(spec: Spec, feature_layer: str) -> Spec:
    """Keep only the layers that compute ``feature_layer`` (a blob, else a layer's name) and
    make it the only output."""
    layers = spec.neuralNetwork.layers
    producers = {blob: i for i, layer in enumerate(layers) for blob in layer.output}
    by_name = {layer.name: layer for layer in layers}
    if feature_layer in producers:
        blob = feature_layer
    elif feature_layer in by_name:
        blob = by_name[feature_layer].output[0]
    else:
        raise ConfigError(
            f"feature_layer {feature_layer!r} is not a layer or blob of the model; "
            "layers: " + ", ".join(layer.name for layer in layers)
        )
    needed, stack = set(), [blob]
    while stack:
        index = producers.get(stack.pop())
        if index is not None and index not in needed:
            needed.add(index)
            stack.extend(layers[index].input)
    kept = [layer for i, layer in enumerate(layers) if i in needed]
    cut = Model_pb2.Model()
    cut.CopyFrom(spec)
    cut.neuralNetwork.ClearField("layers")
    cut.neuralNetwork.layers.extend(kept)
    _set_output(cut, blob)
    return cut


def _set_output(spec: Spec, blob: str) -> None:
    spec.description.ClearField("output")
    output = spec.description.output.add()
    output.name = blob
    output.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32


def zero_example(spec: Spec) -> dict[str, np.ndarray]:
    """One all-zero example for every input of ``spec`` (to measure the feature size)."""
    example = {}
    for feature in spec.description.input:
        kind = feature.type.WhichOneof("Type")
        if kind == "imageType":
            image = feature.type.imageType
            gray = image.colorSpace == FeatureTypes_pb2.ImageFeatureType.GRAYSCALE
            example[feature.name] = np.zeros((image.height, image.width) + (() if gray else (3,)))
        elif kind == "multiArrayType":
            example[feature.name] = np.zeros(tuple(feature.type.multiArrayType.shape), np.float32)
        else:
            raise UnsupportedError(
                f"feature extractor input {feature.name!r} is a {kind}; it must "
                "be an image or a MultiArray"
            )
    return example


def with_feature_vector(spec: Spec) -> tuple[Spec, str, int]:
    """The extractor with its single output declared as a vector, that output's name, and
    its length (measured by running the extractor through our runtime)."""
    from .runtime import load

    if len(spec.description.output) != 1:
        raise ConfigError(
            f"the feature extractor has {len(spec.description.output)} outputs; "
            "name the feature_layer"
        )
    name = spec.description.output[0].name
    features = load(spec).predict(zero_example(spec))[name]
    size = int(np.asarray(features).size)
    vector = Model_pb2.Model()
    vector.CopyFrom(spec)
    vector.description.output[0].type.multiArrayType.ClearField("shape")
    vector.description.output[0].type.multiArrayType.shape.append(size)
    return vector, name, size


# -- the k-NN classifier and the pipeline ---------------------------------------------------


def _label_type(feature_type, integer: bool) -> None:
    if integer:
        feature_type.int64Type.SetInParent()
    else:
        feature_type.stringType.SetInParent()


def knn_spec(
    feature_name: str,
    dimensions: int,
    *,
    k: int = 3,
    k_range: Optional[tuple[int, int]] = (1, 10),
    weighting: str = "inverse_distance",
    index: str = "linear",
    leaf_size: int = 30,
    labels: str = "string",
    default_label: Optional[Label] = None,
    label_name: str = LABEL_OUTPUT,
) -> Spec:
    """An empty, updatable ``KNearestNeighborsClassifier`` reading ``feature_name``."""
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"weighting={weighting!r}: use one of {', '.join(WEIGHTINGS)}")
    if index not in INDEXES:
        raise ConfigError(f"index={index!r}: use one of {', '.join(INDEXES)}")
    if labels not in DEFAULT_LABELS:
        raise ConfigError(f"labels={labels!r}: use 'string' or 'int'")
    integer = labels == "int"
    default = DEFAULT_LABELS[labels] if default_label is None else default_label
    if integer != (isinstance(default, (int, np.integer)) and not isinstance(default, bool)):
        raise ConfigError(
            f"default_label {default!r} is not a{' n int' if integer else ' string'} "
            f"label (labels={labels!r})"
        )
    if index == "kd_tree" and leaf_size < 1:
        raise ConfigError(f"leaf_size must be >= 1, got {leaf_size}")
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    spec.isUpdatable = True
    knn = spec.kNearestNeighborsClassifier
    IntParam(int(k), range=k_range, name="k").write(knn.numberOfNeighbors)
    getattr(knn, WEIGHTINGS[weighting]).SetInParent()
    if integer:
        knn.int64ClassLabels.SetInParent()
        knn.defaultInt64Label = int(default)
    else:
        knn.stringClassLabels.SetInParent()
        knn.defaultStringLabel = str(default)
    neighbors_index = knn.nearestNeighborsIndex
    neighbors_index.numberOfDimensions = dimensions
    neighbors_index.squaredEuclideanDistance.SetInParent()
    if index == "kd_tree":
        neighbors_index.singleKdTreeIndex.leafSize = leaf_size
    else:
        neighbors_index.linearIndex.SetInParent()
    description = spec.description
    feature = description.input.add()
    feature.name = feature_name
    feature.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    feature.type.multiArrayType.shape.append(dimensions)
    _describe_label_outputs(description, label_name, integer)
    description.trainingInput.add().CopyFrom(feature)
    _label_type(_training_label(description, label_name).type, integer)
    return spec


def _describe_label_outputs(description, label_name: str, integer: bool) -> None:
    label = description.output.add()
    label.name = label_name
    label.shortDescription = "Label of the nearest examples"
    _label_type(label.type, integer)
    probs = description.output.add()
    probs.name = f"{label_name}Probs"
    probs.shortDescription = "Share of the neighbors' vote per label"
    if integer:
        probs.type.dictionaryType.int64KeyType.SetInParent()
    else:
        probs.type.dictionaryType.stringKeyType.SetInParent()
    description.predictedFeatureName = label.name
    description.predictedProbabilitiesName = probs.name


def _training_label(description, label_name: str):
    label = description.trainingInput.add()
    label.name = label_name
    label.shortDescription = "The example's label"
    return label


def with_examples(spec: Spec, inputs: Any, labels: Sequence[Label]) -> Spec:
    """``spec`` holding initial examples: ``inputs`` (an array batch for the single input, or a
    dict of batches) run through our runtime's extractor, stored like an on-device update."""
    from .runtime import load

    input_names = [f.name for f in spec.description.input]
    features = dict(inputs) if isinstance(inputs, Mapping) else {input_names[0]: inputs}
    if len(input_names) > 1 and not isinstance(inputs, Mapping):
        raise ConfigError(
            f"the extractor has inputs {input_names}; give initial_examples as a dict"
        )
    features[spec.description.predictedFeatureName] = list(labels)
    return load(spec).update(features).model.spec


# -- the export ------------------------------------------------------------------------------


def export_knn(
    feature_extractor: Any,
    path: PathLike,
    *,
    feature_layer: Optional[str] = None,
    k: int = 3,
    k_range: Optional[tuple[int, int]] = (1, 10),
    weighting: str = "inverse_distance",
    index: str = "linear",
    leaf_size: int = 30,
    labels: str = "string",
    default_label: Optional[Label] = None,
    initial_examples: Optional[tuple[Any, Sequence[Label]]] = None,
    input_name: Optional[str] = None,
    label_name: str = LABEL_OUTPUT,
    example_inputs: Any = None,
    image_input: Any = None,
    compress_frozen: Optional[str] = None,
) -> ExportReport:
    """Write an updatable pipeline: ``feature_extractor`` (frozen, cut at ``feature_layer``)
    followed by an updatable k-NN classifier, and return the export report.

    ``k`` may be changed by the app within ``k_range``; ``weighting`` is ``'inverse_distance'``
    or ``'uniform'``; ``index`` ``'linear'`` or ``'kd_tree'`` (``leaf_size``); ``labels``
    ``'string'`` or ``'int'`` with ``default_label`` (answered while the model holds no
    example; ``'unknown'`` / ``-1`` if not given). ``initial_examples=(inputs, labels)`` ships
    the model knowing those examples. ``example_inputs`` is required for a torch module;
    ``image_input`` makes a Keras/torch extractor take an image (as in their exporters).
    ``compress_frozen`` (``'int8'``, ``'lut8'``, ``'lut4'``) stores the extractor's weights
    quantized (``compression``; the report gives the change of the features on random
    examples); initial examples are then embedded by the compressed extractor, as on device.
    Nothing is written unless the pipeline validates.
    """
    extractor, source, notes = extractor_from_source(
        feature_extractor,
        feature_layer=feature_layer,
        example_inputs=example_inputs,
        image_input=image_input,
    )
    if input_name:
        rename_input(extractor, extractor.description.input[0].name, input_name)
    extractor, feature_name, size = with_feature_vector(extractor)
    compression = None
    if compress_frozen is not None:
        from .compression import compress_and_measure
        from .options import DEFAULT_COMPRESSION_EXAMPLES

        extractor, compression = compress_and_measure(
            extractor, compress_frozen, examples=DEFAULT_COMPRESSION_EXAMPLES
        )
    if feature_name == label_name or feature_name == f"{label_name}Probs":
        raise ConfigError(
            f"the feature output {feature_name!r} collides with the label outputs; "
            "pass another label_name"
        )
    knn = knn_spec(
        feature_name,
        size,
        k=k,
        k_range=k_range,
        weighting=weighting,
        index=index,
        leaf_size=leaf_size,
        labels=labels,
        default_label=default_label,
        label_name=label_name,
    )
    spec = pipeline_spec(extractor, knn, names=(EXTRACTOR_NAME, KNN_NAME))
    if initial_examples is not None:
        spec = with_examples(spec, *initial_examples)
    stored = spec.pipeline.models[-1].kNearestNeighborsClassifier
    label_kind = stored.WhichOneof("ClassLabels")
    classes = sorted({str(v) for v in getattr(stored, label_kind).vector})
    default = stored.defaultStringLabel if labels == "string" else stored.defaultInt64Label
    training = [
        f"k-NN classifier on {size} features from {feature_name!r}: updates append examples",
        f"k: {IntParam.read(stored.numberOfNeighbors, 'k').describe()}",
        f"weighting: {weighting.replace('_', ' ')}",
        f"index: {'kd-tree, leaf size ' + str(leaf_size) if index == 'kd_tree' else 'linear'}",
        f"labels: {labels} (default {default!r})",
        f"initial examples: {len(stored.nearestNeighborsIndex.floatSamples)}"
        + (f" of {len(classes)} class(es)" if classes else ""),
    ]
    from .runtime.knn import KNN_ASSUMPTIONS

    extractor_layers = [layer.name for layer in spec.pipeline.models[0].neuralNetwork.layers]
    return save_validated(
        spec,
        Path(path),
        source=source,
        trainable=[KNN_NAME],
        frozen=extractor_layers,
        changes=notes,
        training=training,
        assumptions=[f"reference runtime: {a}" for a in KNN_ASSUMPTIONS],
        warnings=[],
        compression=compression,
    )


# -- simulation: accuracy against examples per class ------------------------------------------


def few_shot_indices(y: Sequence[Label], shots: int, seed: int = 0) -> np.ndarray:
    """``shots`` example indices per class (all of a class that has fewer), drawn without
    replacement; a larger ``shots`` with the same seed extends the smaller draw."""
    labels = np.asarray(y)
    rng = np.random.default_rng(seed)
    picked = [
        rng.permutation(np.flatnonzero(labels == label))[:shots] for label in np.unique(labels)
    ]
    return np.sort(np.concatenate(picked))


def knn_learning_curve(
    model: Any,
    x: Any,
    y: Sequence[Label],
    x_val: Any,
    y_val: Sequence[Label],
    shots: Sequence[int] = (1, 2, 5, 10),
    seed: int = 0,
) -> list[dict]:
    """Accuracy on ``(x_val, y_val)`` after updating ``model`` (a k-NN pipeline or k-NN: path,
    spec or runtime model) with ``n`` examples per class of ``(x, y)``, for each ``n``.

    ``x``/``x_val`` are batches for the model's single input (or dicts of batches). Every row
    starts again from the model as shipped (with its initial examples), like a fresh install.
    """
    from .runtime import load
    from .runtime.model import Model

    model = model if isinstance(model, Model) else load(model)
    description = model.description
    label_name = description.predictedFeatureName
    input_name = description.input[0].name
    as_features = (
        (lambda batch: dict(batch))
        if isinstance(x, Mapping)
        else (lambda batch: {input_name: batch})
    )
    truth = np.asarray(y_val)
    rows = []
    for count in shots:
        chosen = few_shot_indices(y, count, seed)
        examples = as_features(_take(x, chosen))
        examples[label_name] = np.asarray(y)[chosen]
        updated = model.update(examples).model
        predicted = np.asarray(updated.predict(as_features(x_val))[label_name])
        rows.append(
            {
                "shots": int(count),
                "examples": int(len(chosen)),
                "accuracy": float(np.mean(predicted.astype(truth.dtype) == truth)),
            }
        )
    return rows


def _take(x: Any, index: np.ndarray) -> Any:
    if isinstance(x, Mapping):
        return {name: np.asarray(values)[index] for name, values in x.items()}
    return np.asarray(x)[index]


def format_learning_curve(rows: Sequence[Mapping]) -> str:
    """The curve as a small table, one line per examples-per-class count."""
    lines = ["examples/class  examples  accuracy"]
    lines += [f"{row['shots']:>14}  {row['examples']:>8}  {row['accuracy']:>8.3f}" for row in rows]
    return "\n".join(lines)


def plot_learning_curve(
    curves: Mapping[str, Sequence[Mapping]],
    path: PathLike,
    title: str = "Accuracy against examples per class",
) -> Path:
    """Save a PNG with one line per named curve (e.g. ``{"k-NN": rows}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    try:
        for name, rows in curves.items():
            axes.plot(
                [r["shots"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name
            )
        axes.set_xscale("log")
        axes.set_xlabel("examples per class")
        axes.set_ylabel("accuracy")
        axes.set_ylim(0, 1)
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return Path(path)
