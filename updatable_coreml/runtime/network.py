"""A NeuralNetwork model (plain, classifier, regressor), interpreted layer by layer.

Weights are decoded lazily per layer, in the compute dtype chosen at ``load`` (float32 like
Core ML on device, or float64 for gradient checks). A model is never mutated: ``update``
returns a new model that shares the frozen layers' decoded weights and owns its updatable ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .. import coreml_rules
from .._proto import Model_pb2, NeuralNetwork_pb2
from ..errors import ModelFileError, RuntimeLayerError
from ..spec_io import model_type, neural_network
from . import control, limits
from . import features as feat
from .base import Model, WeightKey
from .layers import recurrent  # the package registers every layer family on import
from .registry import WeightGetter, forward_op
from .update import run_update
from .weights import decode_weights


def weight_message(layer, field: str):
    """The WeightParams at dotted ``field`` of a layer's params (``weights``, ``PReLU.alpha``,
    ``weightParams.inputGateWeightMatrix``; a number indexes a repeated field:
    ``weightParams.1.inputGateWeightMatrix`` of a biDirectionalLSTM)."""
    message = getattr(layer, layer.WhichOneof("layer"))
    for part in field.split("."):
        if part.isdigit():
            if int(part) >= len(message):
                raise RuntimeLayerError(f"layer {layer.name!r}: it has no {field}")
            message = message[int(part)]
        else:
            message = getattr(message, part)
    return message


class NeuralNetworkModel(Model):
    """A NeuralNetwork spec, interpreted layer by layer."""

    def __init__(
        self,
        spec: Model_pb2.Model,
        dtype: np.dtype,
        weights: Mapping[WeightKey, np.ndarray] | None = None,
        trained: Iterable[WeightKey] = (),
    ) -> None:
        super().__init__(spec, dtype)
        self.network = neural_network(spec)
        self.layers = list(self.network.layers)
        #: blobs hold Core ML's exact ranks (EXACT_ARRAY_MAPPING) rather than rank-5 views;
        #: the few layers whose arithmetic depends on the rank read it (registry)
        self.rank4_images = (
            self.network.imageInputShapeMapping == NeuralNetwork_pb2.RANK4_IMAGE_MAPPING
        )
        self.exact_rank = (
            self.network.arrayInputShapeMapping == NeuralNetwork_pb2.EXACT_ARRAY_MAPPING
        )
        self._weights: dict[WeightKey, np.ndarray] = dict(weights or {})
        self._trained = frozenset(trained)
        self._getters = [self._getter(i) for i in range(len(self.layers))]
        #: decoded weights of nested networks (branches, loops), by the message's id (the
        #: message is kept with them so the id stays its own)
        self._nested: dict[int, tuple[dict, object]] = {}

    # -- weights ---------------------------------------------------------------------------

    def _getter(self, index: int) -> WeightGetter:
        def weight(field: str) -> np.ndarray:
            key = (index, field)
            value = self._weights.get(key)
            if value is None:
                value = self._weights[key] = self._decode(index, field)
            return value

        return weight

    def _decode(self, index: int, field: str) -> np.ndarray:
        layer = self.layers[index]
        return decode_weights(
            weight_message(layer, field), f"layer {layer.name!r} {field}", layer, field
        ).astype(self.dtype)

    def weight_getter(self, index: int) -> WeightGetter:
        return self._getters[index]

    def updatable_keys(self) -> list[WeightKey]:
        """The (layer index, field) of every updatable weight and bias."""
        keys = []
        for i, layer in enumerate(self.layers):
            if not layer.isUpdatable:
                continue
            kind = layer.WhichOneof("layer")
            if not coreml_rules.is_updatable_type(kind):
                raise RuntimeLayerError(
                    f"layer {layer.name!r}: training a {kind} layer is not "
                    "supported by the reference runtime"
                )
            if kind == "uniDirectionalLSTM":
                keys += [(i, field) for field in recurrent.lstm_trainable_fields(layer)]
                continue
            keys.append((i, "weights"))
            if getattr(layer, kind).hasBias:
                keys.append((i, "bias"))
        return keys

    def with_weights(self, weights: Mapping[WeightKey, np.ndarray]) -> NeuralNetworkModel:
        """A model sharing this one's decoded weights except ``weights`` (marked trained)."""
        return NeuralNetworkModel(
            self._spec, self.dtype, {**self._weights, **weights}, self._trained | set(weights)
        )

    @property
    def modified(self) -> bool:
        return bool(self._trained)

    @property
    def spec(self) -> Model_pb2.Model:
        if not self._trained:
            return self._spec
        spec = Model_pb2.Model()
        spec.CopyFrom(self._spec)
        layers = neural_network(spec).layers
        for index, field in sorted(self._trained):
            params = weight_message(layers[index], field)
            for name in ("floatValue", "float16Value", "rawValue", "quantization"):
                params.ClearField(name)
            params.floatValue.extend(self._weights[(index, field)].astype(np.float32).ravel())
        return spec

    # -- forward ---------------------------------------------------------------------------

    def input_blobs(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Network input blobs from batched features (images get their preprocessing)."""
        blobs = {}
        inputs = self.description.input
        preprocessing = {p.featureName: p for p in self.network.preprocessing}
        images = [d.name for d in inputs if feat.feature_kind(d) == "imageType"]
        for description in inputs:
            name = description.name
            if name not in batch:
                continue
            kind = feat.feature_kind(description)
            if kind == "imageType":
                step = preprocessing.get(name) or (
                    preprocessing.get("") if len(images) == 1 else None
                )
                pixels = np.asarray(batch[name], dtype=self.dtype)
                blob = (
                    feat.preprocess_image(step, pixels, description.type.imageType.colorSpace)
                    if step is not None
                    else pixels
                )
                # RANK4_IMAGE_MAPPING: the image is the rank-4 tensor [1, C, H, W]
                # (NeuralNetwork.proto, NeuralNetworkImageShapeMapping), not (C, H, W)
                blobs[name] = blob[:, None] if self.rank4_images else blob
            elif kind == "multiArrayType":
                blobs[name] = feat.multiarray_blob(description, batch[name], self.dtype)
            else:
                raise RuntimeLayerError(
                    f"input {name!r}: a neural network input must be an image "
                    f"or a MultiArray, got {kind}"
                )
        return blobs

    def run(self, blobs: dict[str, np.ndarray], indices: Iterable[int]) -> dict[str, np.ndarray]:
        """Run layers ``indices`` in order, adding their outputs to ``blobs``."""
        for i in indices:
            self._run_layer(self.layers[i], self._getters[i], blobs)
        return blobs

    def _run_layer(self, layer, weight: WeightGetter, blobs: dict[str, np.ndarray]) -> None:
        if layer.WhichOneof("layer") in control.CONTROL_FLOW:
            control.run(layer, blobs, self._run_nested)
            return
        try:
            inputs = [blobs[name] for name in layer.input]
        except KeyError as exc:
            raise RuntimeLayerError(
                f"layer {layer.name!r}: input {exc.args[0]!r} is not a model "
                "input or an earlier layer's output"
            ) from None
        op = forward_op(layer, self.exact_rank)
        limits.check_layer_inputs(layer, inputs)
        try:
            outputs = op(layer, inputs, weight)
        except (ValueError, IndexError, ArithmeticError) as exc:  # parameters from the file
            raise RuntimeLayerError(
                f"layer {layer.name!r} ({layer.WhichOneof('layer')}): {exc}"
            ) from exc
        except MemoryError:
            raise RuntimeLayerError(
                f"layer {layer.name!r} ({layer.WhichOneof('layer')}): out "
                "of memory; check the layer's parameters"
            ) from None
        limits.check_layer_outputs(layer, outputs)
        blobs.update(zip(layer.output, outputs, strict=False))

    def _run_nested(self, network, blobs: dict[str, np.ndarray]) -> None:
        """Run a nested network (a branch, a loop's condition or body) on the same blobs. Its
        layers are frozen: weights are decoded once per nested network and kept."""
        layers = list(network.layers)
        cache = self._nested.setdefault(id(network), ({}, network))[0]
        for index, layer in enumerate(layers):

            def weight(field: str, index: int = index, layer=layer) -> np.ndarray:
                key = (index, field)
                if key not in cache:
                    cache[key] = decode_weights(
                        weight_message(layer, field), f"layer {layer.name!r} {field}", layer, field
                    ).astype(self.dtype)
                return cache[key]

            self._run_layer(layer, weight, blobs)

    def predict_batched(self, batch: Mapping[str, Any]) -> dict:
        blobs = self.run(self.input_blobs(batch), range(len(self.layers)))
        return self.output_features(blobs)

    # -- outputs ---------------------------------------------------------------------------

    @property
    def is_classifier(self) -> bool:
        return model_type(self._spec) == "neuralNetworkClassifier"

    def class_labels(self) -> list:
        kind = self.network.WhichOneof("ClassLabels") if self.is_classifier else None
        if kind is None:
            raise ModelFileError("the classifier has no class labels")
        return [v if isinstance(v, str) else int(v) for v in getattr(self.network, kind).vector]

    def probability_blob(self) -> str:
        """Blob holding a classifier's probabilities: ``labelProbabilityLayerName``, else the
        probabilities output when a layer makes it, else the last layer's output."""
        if self.network.labelProbabilityLayerName:
            return self.network.labelProbabilityLayerName
        name = self.description.predictedProbabilitiesName
        if name and any(name in layer.output for layer in self.layers):
            return name
        if not self.layers or not self.layers[-1].output:
            raise RuntimeLayerError(
                "the classifier's last layer has no output to read "
                "probabilities from; set labelProbabilityLayerName"
            )
        return self.layers[-1].output[0]

    def output_features(self, blobs: Mapping[str, np.ndarray]) -> dict:
        description = self.description
        outputs: dict[str, Any] = {}
        if self.is_classifier:
            name = self.probability_blob()
            if name not in blobs:
                raise RuntimeLayerError(
                    f"the classifier's probabilities blob {name!r} is not "
                    "produced by any layer; fix labelProbabilityLayerName"
                )
            outputs.update(self._classify(blobs[name]))
        for output in description.output:
            if output.name in outputs:
                continue
            if output.name not in blobs:
                raise RuntimeLayerError(f"output {output.name!r} is not produced by any layer")
            outputs[output.name] = feat.output_array(output, blobs[output.name])
        return outputs

    def _classify(self, probabilities: np.ndarray) -> dict:
        labels = self.class_labels()
        probs = probabilities.reshape(probabilities.shape[0], -1)
        if probs.shape[1] != len(labels):
            raise RuntimeLayerError(
                f"the classifier has {len(labels)} class labels but its "
                f"probabilities blob has {probs.shape[1]} values"
            )
        description = self.description
        outputs: dict[str, Any] = {
            description.predictedFeatureName: np.asarray(labels)[probs.argmax(axis=1)]
        }
        if description.predictedProbabilitiesName:
            outputs[description.predictedProbabilitiesName] = [
                dict(zip(labels, row)) for row in probs.tolist()
            ]
        return outputs

    # -- training hooks --------------------------------------------------------------------

    def update(self, examples: Iterable[Mapping] | Mapping, **options):
        """Emulate an MLUpdateTask on ``examples``; see ``runtime.update.run_update``."""
        return run_update(self, examples, **options)

    def update_in_pipeline(self, pipeline: Model, examples, **options):
        return run_update(pipeline, examples, **options)

    def trainable(self) -> NeuralNetworkModel:
        return self

    def with_trainable(self, network: Model) -> Model:
        return network
