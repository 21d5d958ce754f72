"""Keras 3 frontend: a built Keras model -> IR graph -> updatable ``.mlmodel``.

Layout: ``context`` (the graph being built, the converter table, the channel-last edge),
``activations``, ``converters/`` (one converter per Keras layer class, by family),
``trace`` (the functional graph walk), ``training`` (loss and optimizer), ``backbone`` (the
coremltools fallback for pipelines), ``export`` (``export_keras``), ``callback``
(``UpdatableCoreMLExport``) and ``files`` (``.keras`` loading). Keras is imported on first
use, so importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

from .activations import ACTIVATIONS
from .context import CONVERTERS, Context, channel_first
from .context import _keras as _keras  # keras, imported quietly on first use
from .export import export_keras
from .files import load_keras_file
from .trace import keras_to_graph
from .training import fit_arguments, map_loss, map_optimizer

__all__ = [
    "ACTIVATIONS",
    "CONVERTERS",
    "Context",
    "UpdatableCoreMLExport",
    "channel_first",
    "export_keras",
    "fit_arguments",
    "keras_to_graph",
    "load_keras_file",
    "map_loss",
    "map_optimizer",
]


def __getattr__(name: str) -> Any:
    """``UpdatableCoreMLExport`` imports Keras, so it is loaded when first asked for."""
    if name == "UpdatableCoreMLExport":
        from .callback import UpdatableCoreMLExport

        return UpdatableCoreMLExport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
