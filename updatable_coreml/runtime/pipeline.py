"""A pipeline of loaded models: each reads the features produced so far; only the last may
train, and it decides how (``Model.update_in_pipeline``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._proto import Model_pb2
from ..errors import ModelFileError, RuntimeLayerError
from ..spec_io import model_type
from .base import Model

if TYPE_CHECKING:  # annotations only
    from .network import NeuralNetworkModel


class PipelineModel(Model):
    """A pipeline: each model reads the features produced so far; only the last may train."""

    def __init__(self, spec: Model_pb2.Model, dtype: np.dtype, models: list[Model]) -> None:
        """``models``: the loaded ``spec.pipeline.models``, in order (the loader makes them)."""
        super().__init__(spec, dtype)
        kind = model_type(spec)
        self.pipeline = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        self.models = list(models)
        if not self.models:
            raise ModelFileError("the pipeline has no models")

    @property
    def modified(self) -> bool:
        return self.models[-1].modified

    @property
    def spec(self) -> Model_pb2.Model:
        if not self.modified:
            return self._spec
        spec = Model_pb2.Model()
        spec.CopyFrom(self._spec)
        kind = model_type(spec)
        pipeline = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        pipeline.models[-1].CopyFrom(self.models[-1].spec)
        return spec

    def predict_batched(self, batch: Mapping[str, Any]) -> dict:
        features = self.training_features(batch)
        features.update(self.models[-1].predict_batched(features))
        missing = [d.name for d in self.description.output if d.name not in features]
        if missing:
            raise RuntimeLayerError(
                f"pipeline output {missing[0]!r} is not produced by any of its "
                "models; rename the output or the model's feature"
            )
        return {d.name: features[d.name] for d in self.description.output}

    def update(self, examples, **options):
        """The last model updates the pipeline (a network trains, a k-NN appends examples)."""
        return self.models[-1].update_in_pipeline(self, examples, **options)

    def training_features(self, batch: Mapping[str, Any]) -> dict:
        """Features after every model but the last (the frozen part of an updatable pipeline)."""
        features = dict(batch)
        for model in self.models[:-1]:
            features.update(model.predict_batched(features))
        return features

    def trainable(self) -> NeuralNetworkModel:
        return self.models[-1].trainable()

    def with_trainable(self, network: Model) -> Model:
        return PipelineModel(self._spec, self.dtype, self.models[:-1] + [network])
