"""IR ``Graph`` -> Core ML NeuralNetwork spec (plain, classifier or regressor).

Only classic (rank-5) layers are written: a vector travels as ``(C, 1, 1)``, so
``innerProduct`` keeps its input's rank and the classic ``softmax`` (axis -3, the only one
Core ML's cross-entropy accepts) works on it without any reshape or transpose on the
trainable path. Trainable dense/conv nodes become updatable ``innerProduct``/``convolution``
layers. Core ML refuses iOS 13 layers under the default rank-5 input mapping, so clip/ReLU6
are written with iOS 12 layers; only a GELU switches the network to the exact-rank mapping
(vectors then declared ``(C, 1, 1)``).

Weights are written as packed ``floatValue`` bytes built from NumPy and merged in one
protobuf call: filling the repeated field element by element costs seconds for ResNet50.
Output is byte-deterministic for the same graph and settings (no timestamps, deterministic
serialization in ``spec_io.save_spec``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ._proto import FeatureTypes_pb2, Model_pb2, NeuralNetwork_pb2
from .errors import ConfigError, UnsupportedError
from .ir import Graph, Node
from .passes import Shapes, explicit_pads, infer_shapes
from .registry import Registry

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


# -- weights -----------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def put_weights(params, array: np.ndarray, updatable: bool = False) -> None:
    """Write ``array`` as fp32 ``floatValue`` into an empty ``WeightParams``.

    Field 1 packed: tag 0x0A, varint byte length, little-endian float32 bytes.
    """
    array = np.asarray(array)
    header = b"\x0a" + _varint(4 * array.size)
    buffer = bytearray(len(header) + 4 * array.size)
    buffer[:len(header)] = header
    np.frombuffer(buffer, dtype="<f4", offset=len(header)).reshape(array.shape)[...] = array
    params.MergeFromString(memoryview(buffer))
    if updatable:
        params.isUpdatable = True


# -- layer writers -----------------------------------------------------------------------

#: IR op -> ``fn(layer, node, shapes)`` filling a new ``NeuralNetworkLayer``.
WRITERS = Registry("Core ML writer for IR op")
_writes = WRITERS.register


def _border(padding, pads: tuple[int, int, int, int]) -> None:
    """Explicit (t, b, l, r) pads into a ``ValidPadding`` message."""
    for start, end in ((pads[0], pads[1]), (pads[2], pads[3])):
        amount = padding.paddingAmounts.borderAmounts.add()
        amount.startEdgeSize, amount.endEdgeSize = int(start), int(end)


@_writes("dense")
def _dense(layer, node: Node, shapes: Shapes) -> None:
    weight = node.weights["weight"]
    params = layer.innerProduct
    params.outputChannels, params.inputChannels = weight.shape
    put_weights(params.weights, weight, node.trainable)
    if "bias" in node.weights:
        params.hasBias = True
        put_weights(params.bias, node.weights["bias"], node.trainable)


@_writes("conv2d")
def _conv(layer, node: Node, shapes: Shapes) -> None:
    weight = node.weights["weight"]
    attrs = node.attrs
    params = layer.convolution
    params.outputChannels, params.kernelChannels = weight.shape[:2]
    params.nGroups = int(attrs.get("groups", 1))
    params.kernelSize.extend(weight.shape[2:])
    params.stride.extend(attrs.get("strides", (1, 1)))
    dilations = attrs.get("dilations", (1, 1))
    params.dilationFactor.extend(dilations)
    _border(params.valid, explicit_pads(attrs, shapes[node.inputs[0]][1:], weight.shape[2:], dilations))
    put_weights(params.weights, weight, node.trainable)
    if "bias" in node.weights:
        params.hasBias = True
        put_weights(params.bias, node.weights["bias"], node.trainable)


@_writes("pool2d")
def _pool(layer, node: Node, shapes: Shapes) -> None:
    attrs = node.attrs
    params = layer.pooling
    params.type = params.MAX if attrs["kind"] == "max" else params.AVERAGE
    if attrs.get("global"):
        params.globalPooling = True
        params.kernelSize.extend((1, 1))
        params.stride.extend((1, 1))
        params.valid.SetInParent()
        return
    params.kernelSize.extend(attrs["kernel"])
    params.stride.extend(attrs.get("strides", attrs["kernel"]))
    params.avgPoolExcludePadding = not attrs.get("count_include_pad", False)
    if attrs.get("padding") == "same":
        params.same.SetInParent()  # TF/Keras 'same': extra pixel bottom/right; pads ignored
    else:
        _border(params.valid, explicit_pads(attrs, shapes[node.inputs[0]][1:], attrs["kernel"]))


@_writes("batchnorm")
def _batchnorm(layer, node: Node, shapes: Shapes) -> None:
    params = layer.batchnorm
    params.channels = node.weights["gamma"].size
    params.epsilon = float(node.attrs.get("eps", 1e-3))
    for name in ("gamma", "beta", "mean", "variance"):
        put_weights(getattr(params, name), node.weights[name])


@_writes("scale")
def _scale(layer, node: Node, shapes: Shapes) -> None:
    params = layer.scale
    scale, bias = node.weights["scale"], node.weights.get("bias")
    params.shapeScale.append(scale.size)
    put_weights(params.scale, scale)
    if bias is not None:
        params.hasBias = True
        params.shapeBias.append(bias.size)
        put_weights(params.bias, bias)


@_writes("flatten")
def _flatten(layer, node: Node, shapes: Shapes) -> None:
    params = layer.flatten
    params.mode = params.CHANNEL_LAST if node.attrs.get("order") == "hwc" else params.CHANNEL_FIRST


@_writes("reshape")
def _reshape(layer, node: Node, shapes: Shapes) -> None:
    target = tuple(node.attrs["shape"])
    if len(target) != 3:
        raise UnsupportedError(f"layer {node.name!r}: reshape to {target} is not rank 3 (C, H, W); "
                               "Core ML's classic reshape needs a (C, H, W) target")
    params = layer.reshape
    params.targetShape.extend(target)
    params.mode = params.CHANNEL_LAST if node.attrs.get("order") == "hwc" else params.CHANNEL_FIRST


@_writes("softmax")
def _softmax(layer, node: Node, shapes: Shapes) -> None:
    layer.softmax.SetInParent()


@_writes("add")
def _add(layer, node: Node, shapes: Shapes) -> None:
    layer.add.SetInParent()


@_writes("mul")
def _mul(layer, node: Node, shapes: Shapes) -> None:
    layer.multiply.SetInParent()


@_writes("concat")
def _concat(layer, node: Node, shapes: Shapes) -> None:
    layer.concat.SetInParent()


@_writes("pad")
def _pad(layer, node: Node, shapes: Shapes) -> None:
    params = layer.padding
    params.constant.value = float(node.attrs.get("value", 0.0))
    t, b, l, r = node.attrs["pads"]
    for start, end in ((t, b), (l, r)):
        amount = params.paddingAmounts.borderAmounts.add()
        amount.startEdgeSize, amount.endEdgeSize = int(start), int(end)


@_writes("embedding")
def _embedding(layer, node: Node, shapes: Shapes) -> None:
    table = node.weights["weight"]
    params = layer.embedding
    params.inputDim, params.outputChannels = table.shape
    put_weights(params.weights, table.T)  # Core ML keeps [outputChannels, inputDim]


#: The spec's LSTM weight field prefixes, in the IR's gate order i, f, g, o.
LSTM_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")


@_writes("lstm")
def _lstm(layer, node: Node, shapes: Shapes) -> None:
    """A uniDirectionalLSTM from zero states. Core ML wants exactly three outputs (y, final h,
    final c); the two states get blobs of their own that nothing reads. Gate pre-activations
    and the cell are clipped to [-50, 50] on device (Keras does not clip): harmless for the
    bounded activations the frontends allow."""
    hidden = int(node.attrs["hidden"])
    params = layer.uniDirectionalLSTM
    params.inputVectorSize, params.outputVectorSize = node.weights["W_ih"].shape[1], hidden
    for role in ("recurrent_activation", "activation", "activation"):  # the spec's [f, g, h]
        attrs = node.attrs[role]
        _ACTIVATIONS[attrs.get("kind", "linear")](params.activations.add(), attrs)
    params.params.sequenceOutput = bool(node.attrs.get("return_sequences"))
    params.params.hasBiasVectors = "bias" in node.weights
    parts = {"WeightMatrix": node.weights["W_ih"], "RecursionMatrix": node.weights["W_hh"]}
    if "bias" in node.weights:
        parts["BiasVector"] = node.weights["bias"]
    for suffix, stacked in parts.items():
        for gate, part in zip(LSTM_GATES, np.split(stacked, 4)):
            put_weights(getattr(params.weightParams, gate + suffix), part, node.trainable)
    layer.output.extend([f"{node.name}_final_h", f"{node.name}_final_c"])


_ACTIVATIONS: dict[str, Callable[[object, dict], None]] = {
    "relu": lambda p, a: p.ReLU.SetInParent(),
    "sigmoid": lambda p, a: p.sigmoid.SetInParent(),
    "tanh": lambda p, a: p.tanh.SetInParent(),
    "softplus": lambda p, a: p.softplus.SetInParent(),
    "softsign": lambda p, a: p.softsign.SetInParent(),
    "leaky_relu": lambda p, a: setattr(p.leakyReLU, "alpha", float(a["alpha"])),
    "elu": lambda p, a: setattr(p.ELU, "alpha", float(a.get("alpha", 1.0))),
    "hard_sigmoid": lambda p, a: (setattr(p.sigmoidHard, "alpha", float(a["alpha"])),
                                  setattr(p.sigmoidHard, "beta", float(a["beta"]))),
    "linear": lambda p, a: (setattr(p.linear, "alpha", float(a.get("alpha", 1.0))),
                            setattr(p.linear, "beta", float(a.get("beta", 0.0)))),
}


#: Layers Core ML added in iOS 13; a network using one needs the exact-rank shape mapping.
IOS13_LAYERS = ("gelu", "clip")


def _write_clip(nn, node: Node, low: float, high: float) -> None:
    """``min(max(x, low), high)`` with iOS 12 layers (the clip layer is iOS 13's, and would
    force the exact-rank shape mapping on the whole network): max(x, low), then
    max(-y, -high), then negate. Negation is exact, so this is exactly the clip."""
    floor, ceiling = f"{node.name}_max", f"{node.name}_min_negated"
    if low == 0.0:
        _new_layer(nn, floor, node.inputs, [floor]).activation.ReLU.SetInParent()
    else:
        unary = _new_layer(nn, floor, node.inputs, [floor]).unary
        unary.type, unary.alpha = unary.THRESHOLD, low
    unary = _new_layer(nn, ceiling, [floor], [ceiling]).unary
    unary.type, unary.alpha, unary.scale = unary.THRESHOLD, -high, -1.0
    negate = _new_layer(nn, node.name, [ceiling], node.outputs).activation.linear
    negate.alpha = -1.0


def _write_activation(nn, node: Node, shapes: Shapes) -> None:
    """Activations, some of which take two Core ML layers (silu = x * sigmoid(x))."""
    kind, attrs = node.attrs["kind"], node.attrs
    if kind in _ACTIVATIONS:
        layer = _new_layer(nn, node.name, node.inputs, node.outputs)
        _ACTIVATIONS[kind](layer.activation, attrs)
    elif kind in ("relu6", "clip"):
        _write_clip(nn, node, float(attrs.get("min", 0.0)), float(attrs.get("max", 6.0)))
    elif kind == "gelu":
        layer = _new_layer(nn, node.name, node.inputs, node.outputs)
        modes = NeuralNetwork_pb2.GeluLayerParams
        layer.gelu.mode = modes.TANH_APPROXIMATION if attrs.get("approximate") else modes.EXACT
    elif kind == "silu":
        gate = f"{node.name}_sigmoid"
        _new_layer(nn, gate, node.inputs, [gate]).activation.sigmoid.SetInParent()
        _new_layer(nn, node.name, [node.inputs[0], gate], node.outputs).multiply.SetInParent()
    else:
        raise UnsupportedError(f"layer {node.name!r}: activation {kind!r} has no Core ML layer")


def _new_layer(nn, name: str, inputs: Sequence[str], outputs: Sequence[str]):
    layer = nn.layers.add()
    layer.name = name
    layer.input.extend(inputs)
    layer.output.extend(outputs)
    return layer


def write_layers(nn, graph: Graph, shapes: Shapes) -> None:
    for node in graph.nodes:
        if node.op == "activation":
            _write_activation(nn, node, shapes)
            continue
        writer = WRITERS.get(node.op)
        if writer is None:
            raise UnsupportedError(f"layer {node.name!r}: IR op {node.op!r} has no Core ML writer "
                                   "(run the passes first)")
        layer = _new_layer(nn, node.name, node.inputs, node.outputs)
        writer(layer, node, shapes)
        if node.trainable:
            layer.isUpdatable = True


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
        feature.shortDescription = (f"Sequence of {shape[0]} steps of {shape[1]} values: a "
                                    f"MultiArray shaped [{shape[0]}, 1, {shape[1]}] (Seq, Batch, C)")


def _describe_input(spec, nn, tensor, shape: tuple[int, ...]) -> None:
    feature = spec.description.input.add()
    feature.name = tensor.name
    if tensor.image is None:
        _describe_array(feature, shape)
        return
    color = tensor.image.get("color", "rgb" if shape[0] == 3 else "grayscale")
    channels = 1 if color == "grayscale" else 3
    if len(shape) != 3 or shape[0] != channels:
        raise ConfigError(f"input {tensor.name!r} has shape {shape}; a {color} image input needs "
                          f"({channels}, H, W)")
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
    repeated = [v for v in labels if (v if integer else str(v)) in seen
                or seen.add(v if integer else str(v))]
    if repeated:
        raise ConfigError(f"class labels must be unique; {repeated[0]!r} appears more than once: "
                          "give every output unit its own label")
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


def build_spec(graph: Graph, *, class_labels: Optional[Sequence[Label]] = None,
               regressor: bool = False, metadata: Metadata = Metadata()) -> Model_pb2.Model:
    """Write ``graph`` (after ``passes.run_passes``) as a NeuralNetwork spec.

    With ``class_labels`` the spec is a classifier whose probabilities output is the graph
    output; with ``regressor`` a regressor; otherwise a plain neural network.
    """
    from . import __version__

    shapes = infer_shapes(graph)
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    kind = "neuralNetworkClassifier" if class_labels is not None else \
        "neuralNetworkRegressor" if regressor else "neuralNetwork"
    nn = getattr(spec, kind)
    write_layers(nn, graph, shapes)
    if any(layer.WhichOneof("layer") in IOS13_LAYERS for layer in nn.layers):
        if any(len(shape) == 2 for shape in shapes.values()):
            raise UnsupportedError("a sequence model cannot use GELU: sequences need Core ML's "
                                   "rank-5 input mapping, which refuses iOS 13 layers")
        # Core ML refuses iOS 13 layers under the rank-5 mapping; with exact shapes, vectors
        # are declared (C, 1, 1) so classic layers (softmax needs rank >= 3) keep working.
        nn.arrayInputShapeMapping = NeuralNetwork_pb2.EXACT_ARRAY_MAPPING
        nn.imageInputShapeMapping = NeuralNetwork_pb2.RANK4_IMAGE_MAPPING
        shapes = {name: shape + (1, 1) if len(shape) == 1 else shape for name, shape in shapes.items()}
    for tensor in graph.inputs:
        _describe_input(spec, nn, tensor, shapes[tensor.name])
    if class_labels is not None:
        (probs,) = graph.outputs
        size = shapes[probs][0]
        if len(class_labels) != size or any(d != 1 for d in shapes[probs][1:]):
            raise ConfigError(f"{len(class_labels)} class labels for output {probs!r} of shape "
                              f"{shapes[probs]}; give one label per output unit")
        _describe_classifier(spec, nn, probs, class_labels)
    else:
        for name in graph.outputs:
            _describe_array_output(spec, name, shapes[name])
    _write_metadata(spec, metadata, __version__)
    return spec
