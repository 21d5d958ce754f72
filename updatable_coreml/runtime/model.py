"""Loading a model file into the runtime: the one place that knows every model kind.

``load`` reads only the spec (never the exporter's IR or backend) and builds the model kind
it holds: ``NeuralNetworkModel`` (``network``), ``PipelineModel`` (``pipeline``) or
``KNNModel`` (``knn``), all ``Model`` (``base``). The kinds are re-exported here.
"""

from __future__ import annotations

import os

import numpy as np

from .._proto import Model_pb2
from ..coreml_rules import PIPELINE_MODEL_TYPES as PIPELINE_TYPES
from ..errors import ConfigError, ModelFileError
from ..spec_io import ML_PROGRAM_FIX, NEURAL_NETWORK_TYPES, load_spec, model_type
from . import limits
from .base import Model, WeightKey
from .knn import KNNModel
from .network import NeuralNetworkModel, weight_message
from .pipeline import PipelineModel

__all__ = [
    "load",
    "model_from_spec",
    "Model",
    "NeuralNetworkModel",
    "PipelineModel",
    "KNNModel",
    "WeightKey",
    "weight_message",
]


def load(source: str | os.PathLike | bytes | Model_pb2.Model, *, dtype=np.float32) -> Model:
    """Load an ``.mlmodel`` (path, bytes or spec) for prediction and on-device-style training."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ConfigError(f"compute dtype must be float32 or float64, got {dtype}")
    spec = load_spec(source)
    if not isinstance(source, (str, os.PathLike)):
        return model_from_spec(spec, dtype)
    try:
        return model_from_spec(spec, dtype)
    except ModelFileError as exc:  # name the file: the caller may load several
        raise ModelFileError(f"{source}: {exc}") from None


def model_from_spec(spec: Model_pb2.Model, dtype: np.dtype) -> Model:
    kind = model_type(spec)
    limits.check_description(spec.description)
    if kind in NEURAL_NETWORK_TYPES:
        return NeuralNetworkModel(spec, dtype)
    if kind in PIPELINE_TYPES:
        pipeline = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        return PipelineModel(spec, dtype, [model_from_spec(sub, dtype) for sub in pipeline.models])
    if kind == "kNearestNeighborsClassifier":
        return KNNModel(spec, dtype)
    if kind == "mlProgram":
        raise ModelFileError(
            f"an ML Program cannot be run or updated by the reference runtime "
            f"(nor on device): {ML_PROGRAM_FIX}"
        )
    raise ModelFileError(
        f"model type {kind!r} is not supported by the reference runtime; it runs "
        "NeuralNetwork and k-NN classifier models and pipelines of them"
    )
