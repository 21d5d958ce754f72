"""``inspect``: what a model takes, gives, trains, and with which update parameters."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from . import schema
from .errors import ConfigError
from .mlpackage import is_mlpackage, package_size, read_mlpackage
from .sizes import format_size
from .spec_io import NEURAL_NETWORK_TYPES, Spec, SpecLike, load_spec, model_type
from .training import TrainingConfig
from .validator import backpropagable, trainable_path


@dataclass
class LayerInfo:
    name: str
    type: str
    weights: dict[str, tuple[int, ...]]
    updatable: bool
    on_backprop_path: bool
    backpropagable: bool


@dataclass
class ModelInfo:
    path: Optional[str]
    size_bytes: Optional[int]
    model_type: str
    specification_version: int
    is_updatable: bool
    inputs: list[str]
    outputs: list[str]
    training_inputs: list[str]
    layers: list[LayerInfo] = field(default_factory=list)
    update_parameters: list[str] = field(default_factory=list)
    class_labels: list[str] = field(default_factory=list)
    submodels: list[ModelInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: structured forms for ``to_dict`` (see schema.py); the lists above are the terminal's
    features: dict[str, list[dict]] = field(default_factory=dict)
    training: Optional[dict] = None

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON form (docs/json-output.md), versioned by ``schema_version``."""
        from .schema import INSPECT_SCHEMA, SCHEMA_VERSION

        return {"schema": INSPECT_SCHEMA, "schema_version": SCHEMA_VERSION, **self._body()}

    def _body(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "model_type": self.model_type,
            "specification_version": self.specification_version,
            "is_updatable": self.is_updatable,
            "inputs": self.features.get("inputs", []),
            "outputs": self.features.get("outputs", []),
            "training_inputs": self.features.get("training_inputs", []),
            "class_labels": self.class_labels,
            "layers": [
                {
                    "name": layer.name,
                    "type": layer.type,
                    "weights": {k: list(v) for k, v in layer.weights.items()},
                    "updatable": layer.updatable,
                    "on_backprop_path": layer.on_backprop_path,
                    "backpropagable": layer.backpropagable,
                }
                for layer in self.layers
            ],
            "update_parameters": self.training,
            "submodels": [sub._body() for sub in self.submodels],
            "notes": self.notes,
        }

    def text(self, indent: str = "") -> str:
        lines = []
        if self.path:
            lines.append(f"file: {self.path} ({_size(self.size_bytes)})")
        lines.append(
            f"type: {self.model_type}  spec version {self.specification_version}  "
            f"updatable: {'yes' if self.is_updatable else 'no'}"
        )
        lines += [f"note: {n}" for n in self.notes]
        lines += _section("inputs", self.inputs)
        lines += _section("outputs", self.outputs)
        lines += _section("training inputs", self.training_inputs)
        if self.class_labels:
            shown = ", ".join(self.class_labels[:12]) + (
                " ..." if len(self.class_labels) > 12 else ""
            )
            lines.append(f"class labels ({len(self.class_labels)}): {shown}")
        if self.layers:
            lines.append(f"layers ({len(self.layers)}):  U = updatable, B = on the backprop path")
            width = max(len(layer.name) for layer in self.layers)
            for layer in self.layers:
                flags = ("U" if layer.updatable else "-") + ("B" if layer.on_backprop_path else "-")
                weights = "  ".join(f"{k}{list(v)}" for k, v in layer.weights.items())
                lines.append(
                    f"  {flags} {layer.name:<{width}}  {layer.type:<18} {weights}".rstrip()
                )
        lines += _section("update parameters", self.update_parameters)
        for position, sub in enumerate(self.submodels):
            lines.append(f"pipeline model {position}:")
            lines.append(sub.text(indent + "  "))
        return "\n".join(indent + line for line in lines)


def _section(title: str, rows: list[str]) -> list[str]:
    return [f"{title}:"] + [f"  {row}" for row in rows] if rows else []


def _size(size: Optional[int]) -> str:
    return "?" if size is None else format_size(size)


def enum_name(enum_type, value: int) -> str:
    """Name of an enum value; files are untrusted, so unknown numbers are shown, not raised."""
    try:
        return enum_type.Name(value)
    except ValueError:
        return f"unknown({value})"


def feature_type(feature) -> str:
    """Human form of a FeatureDescription's type, e.g. ``MultiArray FLOAT32 [3, 32, 32]``."""
    kind = feature.type.WhichOneof("Type")
    if kind == "multiArrayType":
        array = feature.type.multiArrayType
        dtype = enum_name(type(array).ArrayDataType, array.dataType)
        return f"MultiArray {dtype} {list(array.shape)}"
    if kind == "imageType":
        image = feature.type.imageType
        return f"Image {enum_name(type(image).ColorSpace, image.colorSpace)} {image.width}x{image.height}"
    if kind == "dictionaryType":
        return f"Dictionary {feature.type.dictionaryType.WhichOneof('KeyType')}"
    return {"int64Type": "Int64", "stringType": "String", "doubleType": "Double"}.get(
        kind or "", str(kind)
    )


def weight_shapes(layer) -> dict[str, tuple[int, ...]]:
    kind = layer.WhichOneof("layer")
    if kind is None:
        return {}
    body = getattr(layer, kind)
    shapes: dict[str, tuple[int, ...]]
    if kind == "innerProduct":
        shapes = {"W": (body.outputChannels, body.inputChannels)}
    elif kind == "convolution":
        shapes = {"W": (body.outputChannels, body.kernelChannels, *body.kernelSize)}
    elif kind == "batchnorm":
        shapes = {"gamma/beta/mean/var": (body.channels,)}
    elif kind == "embedding":
        shapes = {"W": (body.outputChannels, body.inputDim)}
    elif kind == "uniDirectionalLSTM":  # per gate: input, forget, block input, output
        hidden = body.outputVectorSize
        shapes = {"W_x": (4, hidden, body.inputVectorSize), "W_h": (4, hidden, hidden)}
        if body.params.hasBiasVectors:
            shapes["b"] = (4, hidden)
        return shapes
    else:
        return {}
    if getattr(body, "hasBias", False):
        shapes["b"] = (body.outputChannels,)
    return shapes


def _describe(spec: Spec, path: Optional[str], size: Optional[int]) -> ModelInfo:
    kind = model_type(spec)
    description = spec.description
    info = ModelInfo(
        path,
        size,
        kind,
        spec.specificationVersion,
        spec.isUpdatable,
        [f"{f.name}: {feature_type(f)}" for f in description.input],
        [f"{f.name}: {feature_type(f)}" for f in description.output],
        [f"{f.name}: {feature_type(f)}" for f in description.trainingInput],
    )
    info.features = {
        key: [schema.feature(f) for f in features]
        for key, features in (
            ("inputs", description.input),
            ("outputs", description.output),
            ("training_inputs", description.trainingInput),
        )
    }
    if kind == "mlProgram":
        info.notes += _program_notes(spec.mlProgram)
        info.notes.append(
            "not updatable: Core ML updates only NeuralNetwork models (and k-NN, "
            "pipelines ending in one) on device, never an ML Program; convert with "
            "convert_to='neuralnetwork' or export with updatable-coreml"
        )
    elif kind in NEURAL_NETWORK_TYPES:
        nn = getattr(spec, kind)
        on_path = {layer.name for layer in trainable_path(nn)} if spec.isUpdatable else set()
        info.layers = [
            LayerInfo(
                layer.name,
                _layer_type(layer),
                weight_shapes(layer),
                layer.isUpdatable,
                layer.name in on_path,
                backpropagable(layer),
            )
            for layer in nn.layers
        ]
        labels = nn.WhichOneof("ClassLabels") if kind == "neuralNetworkClassifier" else None
        if labels:
            info.class_labels = [str(v) for v in getattr(nn, labels).vector]
        if spec.isUpdatable:
            try:
                config = TrainingConfig.from_spec(spec)
                info.update_parameters = config.summary_lines()
                info.training = {"kind": "network", **schema.training(config)}
            except ConfigError as exc:
                info.notes.append(f"update parameters unreadable: {exc}")
    elif kind == "kNearestNeighborsClassifier":
        knn = spec.kNearestNeighborsClassifier
        index = knn.nearestNeighborsIndex
        labels = knn.WhichOneof("ClassLabels")
        if labels:
            info.class_labels = sorted({str(v) for v in getattr(knn, labels).vector})
        k = knn.numberOfNeighbors
        allowed = k.WhichOneof("AllowedValues")
        info.training = {
            "kind": "knn",
            "k": {
                "default": int(k.defaultValue),
                "allowed": (
                    {"set": sorted(int(v) for v in k.set.values)}
                    if allowed == "set"
                    else {"range": [int(k.range.minValue), int(k.range.maxValue)]}
                    if allowed == "range"
                    else None
                ),
            },
            "weighting": knn.WhichOneof("WeightingScheme"),
            "index": index.WhichOneof("IndexType"),
            "dimensions": int(index.numberOfDimensions),
            "examples": len(index.floatSamples),
        }
        info.update_parameters = [
            f"k: {knn.numberOfNeighbors.defaultValue}",
            f"weighting: {knn.WhichOneof('WeightingScheme')}",
            f"index: {index.WhichOneof('IndexType')}  dimensions {index.numberOfDimensions}  "
            f"examples {len(index.floatSamples)}",
        ]
    elif kind in ("pipeline", "pipelineClassifier", "pipelineRegressor"):
        pipeline = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        info.submodels = [_describe(m, None, None) for m in pipeline.models]
    return info


def _program_notes(program) -> list[str]:
    """One line per function of an ML Program: its opset and its top-level operations."""
    notes = []
    for name in sorted(program.functions):
        function = program.functions[name]
        opset = function.opset
        block = function.block_specializations.get(opset)
        if block is None and function.block_specializations:
            opset = sorted(function.block_specializations)[0]
            block = function.block_specializations[opset]
        counts: dict[str, int] = {}
        for operation in block.operations if block is not None else ():
            counts[operation.type] = counts.get(operation.type, 0) + 1
        total = sum(counts.values())
        shown = ", ".join(
            f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        notes.append(
            f"ML Program function {name!r} (opset {opset or '?'}): {total} operation(s)"
            + (f": {shown}" if shown else "")
        )
    return notes


def _layer_type(layer) -> str:
    kind = layer.WhichOneof("layer")
    if kind == "activation":
        return f"activation/{layer.activation.WhichOneof('NonlinearityType')}"
    if kind == "pooling":
        return f"pooling/{enum_name(type(layer.pooling).PoolingType, layer.pooling.type).lower()}"
    return kind or "(no type)"


def inspect(model: SpecLike) -> ModelInfo:
    """Describe a model file (or spec): I/O, training inputs, layers, update parameters."""
    if isinstance(model, (str, os.PathLike)) and is_mlpackage(Path(model)):
        return _describe(read_mlpackage(Path(model)), str(model), package_size(Path(model)))
    spec = load_spec(model)
    path = str(model) if isinstance(model, (str, os.PathLike)) else None
    size = os.path.getsize(model) if path else None
    return _describe(spec, path, size)
