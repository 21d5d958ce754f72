"""Reference runtime: run an updatable NeuralNetwork ``.mlmodel`` off-device with NumPy.

``load(path)`` gives a model with ``predict``, ``update`` (MLUpdateTask emulation) and
``save``. It reads only the spec, never the exporter's IR or backend, so a backend bug cannot
hide behind shared code. Core ML behaviours Apple does not document live in ``assumptions``.
"""

from __future__ import annotations

from .assumptions import DEFAULT as DEFAULT_ASSUMPTIONS
from .assumptions import Assumptions
from .features import to_channel_first
from .model import Model, NeuralNetworkModel, PipelineModel, load
from .registry import register_custom_layer
from .update import ProgressEvent, UpdateResult, UpdateTask

__all__ = [
    "load",
    "Model",
    "NeuralNetworkModel",
    "PipelineModel",
    "Assumptions",
    "DEFAULT_ASSUMPTIONS",
    "ProgressEvent",
    "UpdateResult",
    "UpdateTask",
    "to_channel_first",
    "register_custom_layer",
]
