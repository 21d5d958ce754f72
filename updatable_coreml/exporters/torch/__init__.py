"""PyTorch frontend: ``export_torch(module, example_inputs, path, loss=..., optimizer=...)``.

Layout: ``capture`` (torch.export), ``translate`` (aten ops -> IR, one converter per op),
``training`` (what trains, loss, optimizer), ``graph`` (the three together),
``backbone`` (the coremltools fallback for pipelines), ``export`` (the entry point) and
``sources`` (models from files, for the CLI). torch is imported inside the functions that
need it, so importing this package is cheap.
"""

from __future__ import annotations

from ..common.loss import LossPlan
from ..common.refusals import Refusals
from .capture import as_example_inputs, capture
from .export import export_torch
from .graph import torch_to_graph
from .sources import TorchSource, load_torch_source
from .training import (
    map_loss,
    map_optimizer,
    mark_trainable,
    optimizer_assumptions,
    trainable_parameters,
)

__all__ = [
    "LossPlan",
    "Refusals",
    "TorchSource",
    "as_example_inputs",
    "capture",
    "export_torch",
    "load_torch_source",
    "map_loss",
    "map_optimizer",
    "mark_trainable",
    "optimizer_assumptions",
    "torch_to_graph",
    "trainable_parameters",
]
