"""IR ``Graph`` -> Core ML NeuralNetwork spec (plain, classifier or regressor).

Only classic (rank-5) layers are written: a vector travels as ``(C, 1, 1)``, so
``innerProduct`` keeps its input's rank and the classic ``softmax`` (axis -3, the only one
Core ML's cross-entropy accepts) works on it without any reshape or transpose on the
trainable path. Trainable dense/conv nodes become updatable ``innerProduct``/``convolution``
layers. Core ML refuses iOS 13 layers under the default rank-5 input mapping, so clip/ReLU6
are written with iOS 12 layers; only a GELU or attention (layers outside Core ML's iOS 12
set, ``validator.layers.is_ios12_layer``) switches the network to the exact-rank mapping
(vectors then declared ``(1, C, 1, 1)``, images ``(1, C, H, W)``).

Each node's layers are written by its entry in the op table (``updatable_coreml.ops``); this
module builds the model around them: inputs, outputs, classifier or regressor description,
shape mapping and metadata. Output is byte-deterministic for the same graph and settings
(no timestamps, deterministic serialization in ``spec_io.save_spec``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from . import ops
from ._proto import FeatureTypes_pb2, Model_pb2, NeuralNetwork_pb2
from .errors import ConfigError, UnsupportedError
from .ir import Graph
from .ops import Shapes
from .passes import infer_shapes
from .validator.layers import is_ios12_layer

Label = Union[str, int]
LABEL_OUTPUT = "classLabel"


@dataclass(frozen=True)
class Metadata:
    """What the model file says about itself (shown in Xcode's model view)."""

    description: str = ""
    author: str = ""
    license: str = ""
    version: str = ""
    source: str = ""  # e.g. "keras==3.15.1"
    user_defined: dict[str, str] = field(default_factory=dict)


# -- layers ------------------------------------------------------------------------------


def _exact_rank_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A per-example IR shape as declared under the exact-rank mapping: vectors (1, C, 1, 1),
    images (1, C, H, W), so every blob has the rank the classic layers reading it need. A
    vector must not be (C, 1, 1): NeuralNetwork.proto's innerProduct reads a rank-3 input
    ``(x1, x2, x3)`` as rows of its last axis (``(x1 * x2, x3)``), so it would see C rows of
    one value; at rank 4 ``(x1, x2, x3, x4)`` it reads ``(x1, x2 * x3 * x4)``: one row of C."""
    if len(shape) == 1:
        return (1, *shape, 1, 1)
    if len(shape) == 3:
        return (1, *shape)
    return shape


def _rank4_reshapes(nn) -> None:
    """Classic ``reshape`` layers as ``reshapeStatic``, for the exact-rank mapping.

    There our blobs have rank 4 (``_exact_rank_shape``), but the classic ``reshape`` takes
    and gives rank 5 only (NeuralNetwork.proto, ReshapeLayerParams; Apple's validator checks
    ``validateRankCount(layer, "Reshape", 5, 5)`` under N-d semantics in every release 3.0 to
    9.0, whenever it knows the rank, and Core ML's engine knows it). A channel-first reshape
    to (C, H, W) keeps the elements in order, so it is a ``reshapeStatic`` to (1, C, H, W),
    an iOS 13 layer the exact-rank mapping allows. A channel-last one has no such twin."""
    for layer in nn.layers:
        if layer.WhichOneof("layer") != "reshape":
            continue
        params = layer.reshape
        if params.mode != params.CHANNEL_FIRST or len(params.targetShape) != 3:
            raise UnsupportedError(
                f"layer {layer.name!r}: a channel-last reshape in a network that uses the "
                "exact-rank shape mapping (for GELU or attention): Core ML's classic reshape "
                "needs rank-5 blobs there; reshape in channel-first order"
            )
        target = [1, *params.targetShape]
        layer.reshapeStatic.targetShape.extend(target)  # replaces the classic reshape


def write_layers(nn, graph: Graph, shapes: Shapes) -> None:
    """Every node's layer(s), written by its op table entry (``updatable_coreml.ops``)."""
    for node in graph.nodes:
        ops.write(nn, node, shapes)


# -- model description -------------------------------------------------------------------

_COLOR = {"rgb": "RGB", "bgr": "BGR", "grayscale": "GRAYSCALE"}


def _describe_array(feature, shape: tuple[int, ...]) -> None:
    """A FLOAT32 MultiArray. A sequence ``(Seq, C)`` is declared as one step, ``(C,)``: under
    the rank-5 mapping Core ML reads the steps from the Seq axis of a ``[Seq, 1, C]`` array
    (the layout coremltools' Keras converter used), which the description says."""
    array = feature.type.multiArrayType
    array.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    array.shape.extend(shape[1:] if len(shape) == 2 else shape)
    if len(shape) == 2:
        feature.shortDescription = (
            f"Sequence of {shape[0]} steps of {shape[1]} values: a "
            f"MultiArray shaped [{shape[0]}, 1, {shape[1]}] (Seq, Batch, C)"
        )


def describe_input(spec, nn, tensor, shape: tuple[int, ...]) -> None:
    """Add ``tensor`` to the model's inputs: a FLOAT32 MultiArray, or an image with its
    scaler preprocessing (``tensor.image``, from ``image_input``); also used for a backbone
    converted by coremltools, so an image input means the same in both."""
    feature = spec.description.input.add()
    feature.name = tensor.name
    if tensor.image is None:
        _describe_array(feature, shape)
        if tensor.description:
            feature.shortDescription = tensor.description
        return
    color = tensor.image.get("color", "rgb" if shape[0] == 3 else "grayscale")
    channels = 1 if color == "grayscale" else 3
    if len(shape) != 3 or shape[0] != channels:
        raise ConfigError(
            f"input {tensor.name!r} has shape {shape}; a {color} image input needs "
            f"({channels}, H, W)"
        )
    image = feature.type.imageType
    image.height, image.width = shape[1], shape[2]
    image.colorSpace = getattr(FeatureTypes_pb2.ImageFeatureType, _COLOR[color])
    scale = float(tensor.image.get("scale", 1.0))
    bias = np.broadcast_to(np.asarray(tensor.image.get("bias", 0.0), np.float64), (channels,))
    if scale == 1.0 and not bias.any():
        return
    pre = nn.preprocessing.add()
    pre.featureName = tensor.name
    pre.scaler.channelScale = scale
    if channels == 1:
        pre.scaler.grayBias = float(bias[0])
    else:
        red, green, blue = (float(b) for b in (bias if color == "rgb" else bias[::-1]))
        pre.scaler.redBias, pre.scaler.greenBias, pre.scaler.blueBias = red, green, blue


def _describe_array_output(spec, name: str, shape: tuple[int, ...]) -> None:
    feature = spec.description.output.add()
    feature.name = name
    _describe_array(feature, shape)


def _describe_classifier(spec, nn, probs: str, labels: Sequence[Label]) -> None:
    integer = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels)
    seen: set = set()
    repeated = []
    for v in labels:
        key = v if integer else str(v)
        if key in seen:
            repeated.append(v)
        seen.add(key)
    if repeated:
        raise ConfigError(
            f"class labels must be unique; {repeated[0]!r} appears more than once: "
            "give every output unit its own label"
        )
    if integer:
        nn.int64ClassLabels.vector.extend(int(v) for v in labels)
    else:
        nn.stringClassLabels.vector.extend(str(v) for v in labels)
    label_name = LABEL_OUTPUT if probs != LABEL_OUTPUT else f"{LABEL_OUTPUT}_"
    label = spec.description.output.add()
    label.name = label_name
    label.shortDescription = "Most likely class label"
    prob = spec.description.output.add()
    prob.name = probs
    prob.shortDescription = "Probability of each class label"
    if integer:
        label.type.int64Type.SetInParent()
        prob.type.dictionaryType.int64KeyType.SetInParent()
    else:
        label.type.stringType.SetInParent()
        prob.type.dictionaryType.stringKeyType.SetInParent()
    spec.description.predictedFeatureName = label_name
    spec.description.predictedProbabilitiesName = probs


def _write_metadata(spec, metadata: Metadata, exporter_version: str) -> None:
    meta = spec.description.metadata
    meta.shortDescription = metadata.description
    meta.author = metadata.author
    meta.license = metadata.license
    meta.versionString = metadata.version
    if metadata.source:
        meta.userDefined["updatable_coreml.source"] = metadata.source
    meta.userDefined["updatable_coreml.version"] = exporter_version
    for key, value in metadata.user_defined.items():
        meta.userDefined[str(key)] = str(value)


def build_spec(
    graph: Graph,
    *,
    class_labels: Optional[Sequence[Label]] = None,
    regressor: bool = False,
    metadata: Metadata = Metadata(),
) -> Model_pb2.Model:
    """Write ``graph`` (after ``passes.run_passes``) as a NeuralNetwork spec.

    With ``class_labels`` the spec is a classifier whose probabilities output is the graph
    output; with ``regressor`` a regressor; otherwise a plain neural network.
    """
    from . import __version__

    shapes = infer_shapes(graph)
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    kind = (
        "neuralNetworkClassifier"
        if class_labels is not None
        else "neuralNetworkRegressor"
        if regressor
        else "neuralNetwork"
    )
    nn = getattr(spec, kind)
    write_layers(nn, graph, shapes)
    if not all(is_ios12_layer(layer) for layer in nn.layers):
        if any(len(shape) == 2 for shape in shapes.values()):
            newer = next(layer for layer in nn.layers if not is_ios12_layer(layer))
            raise UnsupportedError(
                f"layer {newer.name!r}: a sequence model cannot use a layer added in iOS 13 "
                f"({newer.WhichOneof('layer')}, for GELU or attention): sequences need Core "
                "ML's rank-5 input mapping, which refuses such layers"
            )
        # Core ML refuses iOS 13 layers under the rank-5 mapping; with exact shapes, vectors
        # are declared (1, C, 1, 1) so classic layers (softmax needs rank >= 3, innerProduct
        # rank 4 to read one row) keep working, and images (1, C, H, W): a convolution or
        # pooling reading an input needs rank >= 4
        # under N-d semantics (apple/coremltools NeuralNetworkLayerValidator.cpp,
        # validateRankCount(layer, "Convolution", 4, -1), the same for pooling).
        nn.arrayInputShapeMapping = NeuralNetwork_pb2.EXACT_ARRAY_MAPPING
        nn.imageInputShapeMapping = NeuralNetwork_pb2.RANK4_IMAGE_MAPPING
        _rank4_reshapes(nn)
    declared = (
        {name: _exact_rank_shape(shape) for name, shape in shapes.items()}
        if nn.arrayInputShapeMapping == NeuralNetwork_pb2.EXACT_ARRAY_MAPPING
        else shapes
    )
    for tensor in graph.inputs:  # an image's shape is its size (RANK4_IMAGE_MAPPING adds N)
        describe_input(spec, nn, tensor, (shapes if tensor.image else declared)[tensor.name])
    if class_labels is not None:
        (probs,) = graph.outputs
        size = shapes[probs][0]
        if len(class_labels) != size or any(d != 1 for d in shapes[probs][1:]):
            raise ConfigError(
                f"{len(class_labels)} class labels for output {probs!r} of shape "
                f"{shapes[probs]}; give one label per output unit"
            )
        _describe_classifier(spec, nn, probs, class_labels)
    else:
        for name in graph.outputs:
            _describe_array_output(spec, name, declared[name])
        if regressor:
            # Core ML refuses a regressor without it ("Specification is missing regressor
            # predictedFeatureName.": validateRegressorInterface in apple/coremltools
            # mlmodel/src/Validation/InterfaceValidators.cpp, the same check in every version
            # of that function; issue 14). It must name a Double or MultiArray output; the
            # passes leave exactly one output.
            spec.description.predictedFeatureName = graph.outputs[0]
    _write_metadata(spec, metadata, __version__)
    return spec
