"""updatable-coreml: export Keras, PyTorch and ONNX models to updatable Core ML models.

The top level is lazy: ``import updatable_coreml`` loads nothing heavy; each verb imports
its module (and its framework) on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "validate": "updatable_coreml.validator",
    "Finding": "updatable_coreml.validator",
    "inspect": "updatable_coreml.inspection",
    "make_updatable": "updatable_coreml.surgery",
    "TrainingConfig": "updatable_coreml.training",
    "Loss": "updatable_coreml.training",
    "SGD": "updatable_coreml.training",
    "Adam": "updatable_coreml.training",
    "load_spec": "updatable_coreml.spec_io",
    "save_spec": "updatable_coreml.spec_io",
    "UpdatableCoreMLError": "updatable_coreml.errors",
    "ModelFileError": "updatable_coreml.errors",
    "ConfigError": "updatable_coreml.errors",
    "UnsupportedError": "updatable_coreml.errors",
    "NotUpdatableError": "updatable_coreml.errors",
    "export_keras": "updatable_coreml.exporters.keras",
    "UpdatableCoreMLExport": "updatable_coreml.exporters.keras",
    "ExportReport": "updatable_coreml.export",
    "export_torch": "updatable_coreml.exporters.torch",
    "export_onnx": "updatable_coreml.exporters.onnx",
    "export_knn": "updatable_coreml.knn",
    "simulate": "updatable_coreml.runtime.simulate",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'updatable_coreml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
