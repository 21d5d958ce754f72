"""Optional dependencies, checked before any work starts.

A missing extra must not surface as a traceback after minutes of training (``simulate
--plot`` used to train, then fail on matplotlib, and never write ``-o``), nor as exit code 1,
which means "model invalid". ``require`` imports the module up front (the command would import
it anyway) and turns its absence into one line naming the extra to install (exit 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import MissingDependencyError

#: importable module -> (pip distribution, extra of updatable-coreml that installs it)
PACKAGES = {
    "matplotlib": ("matplotlib", "plot"),
    "PIL": ("pillow", "plot"),
    "onnx": ("onnx", "onnx"),
    "keras": ("keras", "keras"),
    "torch": ("torch", "torch"),
    "sklearn": ("scikit-learn", "demo"),
}

#: Keras backend name -> the module it imports
KERAS_BACKENDS = {
    "tensorflow": "tensorflow",
    "jax": "jax",
    "torch": "torch",
    "numpy": "numpy",
    "openvino": "openvino",
}


def require(module: str, purpose: str, extra: str | None = None) -> None:
    """Import ``module`` now, or raise MissingDependencyError saying what to install.

    ``purpose`` names what needs it, e.g. ``"--plot"`` or ``"a .keras source"``; ``extra``
    overrides the extra named in the fix (``demo`` installs everything the demo needs).
    """
    from ..frameworks import quiet_import

    if module == "keras":
        _require_keras_backend(purpose)
    try:
        quiet_import(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        if module == "keras" and missing.split(".")[0] == _backend_module():
            raise _backend_missing(purpose) from None
        if missing.split(".")[0] != module.split(".")[0]:
            raise MissingDependencyError(
                f"{purpose} needs {module}, which failed to import because {missing} is missing "
                f"({type(exc).__name__}): install {missing} or reinstall {module}"
            ) from None
        distribution, default_extra = PACKAGES.get(module, (module, None))
        extra = extra or default_extra
        fix = f'pip install "updatable-coreml[{extra}]"' if extra else f"pip install {distribution}"
        raise MissingDependencyError(
            f"{purpose} needs {distribution}, which is not installed: {fix}"
        ) from None


def keras_backend() -> str:
    """The backend Keras will load: KERAS_BACKEND, else keras.json's, else tensorflow
    (Keras's own order; read without importing Keras, which would import the backend)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        config = json.loads((home / "keras.json").read_text())
        return str(config.get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def _require_keras_backend(purpose: str) -> None:
    from importlib.util import find_spec

    try:
        keras_found = find_spec("keras") is not None
    except (ImportError, ValueError):
        keras_found = False
    if not keras_found:
        return  # require() reports Keras itself missing
    try:
        found = find_spec(_backend_module()) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise _backend_missing(purpose)


def _backend_module() -> str:
    backend = keras_backend()
    return KERAS_BACKENDS.get(backend, backend)


def _backend_missing(purpose: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"{purpose} needs a Keras backend: Keras is set to '{keras_backend()}' (KERAS_BACKEND or "
        f"keras.json), which is not installed: pip install {_backend_module()}, or set "
        "KERAS_BACKEND to an installed one (jax, torch, tensorflow)"
    )
