"""What every loaded model of the reference runtime is: the base type the loader, the model
kinds (network, pipeline, k-NN) and the update task share, so none of them imports another's
module to know the others' interface.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._proto import Model_pb2
from ..errors import ModelFileError
from ..spec_io import model_type, save_spec
from . import features as feat

if TYPE_CHECKING:  # annotations only: the network module builds on this one
    from .network import NeuralNetworkModel

#: An updatable weight: (layer index, dotted WeightParams field of the layer's params).
WeightKey = tuple[int, str]


class Model:
    """What every loaded model offers: ``predict``, ``update``, ``save``."""

    def __init__(self, spec: Model_pb2.Model, dtype: np.dtype) -> None:
        self._spec = spec
        self.dtype = dtype

    @property
    def spec(self) -> Model_pb2.Model:
        """The spec with the model's current weights (do not modify it)."""
        return self._spec

    @property
    def modified(self) -> bool:
        """Whether training changed weights (``spec`` then differs from the loaded one)."""
        return False

    @property
    def description(self):
        return self._spec.description

    def predict(self, features: Mapping[str, Any]) -> dict:
        """Outputs for one example or a batch (see ``features`` for the two forms).

        Batched prediction runs the batch through each layer at once; a batchnorm that
        computes its statistics over the batch then sees the whole batch.
        """
        batch, _, batched = feat.batch_features(self.description.input, features)
        outputs = self.predict_batched(batch)
        return outputs if batched else feat.unbatch(outputs)

    def predict_batched(self, batch: Mapping[str, Any]) -> dict:
        raise NotImplementedError

    def update(self, examples: Iterable[Mapping] | Mapping, **options):
        """Emulate an MLUpdateTask on ``examples`` (see ``runtime.update.run_update`` for the
        ``parameters``, ``progress`` and ``assumptions`` options)."""
        raise ModelFileError(f"a {model_type(self._spec)} model cannot be updated")

    def update_in_pipeline(self, pipeline: Model, examples, **options):
        """Update ``pipeline`` whose last model this is: each model type knows how it trains
        (a network runs the update task on the pipeline's features, a k-NN appends)."""
        raise ModelFileError(
            f"a pipeline ending in a {model_type(self._spec)} model cannot be updated"
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model atomically (updatable layers carry their current weights)."""
        return save_spec(self.spec, path)

    # -- training hooks: which network trains, and what it is fed --------------------------

    def trainable(self) -> NeuralNetworkModel:
        """The neural network that trains (itself, or a pipeline's last model)."""
        raise ModelFileError(f"a {model_type(self._spec)} model has no neural network to train")

    def training_features(self, batch: Mapping[str, Any]) -> dict:
        return dict(batch)

    def with_trainable(self, network: Model) -> Model:
        raise NotImplementedError
