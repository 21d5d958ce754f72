"""Keras models from files, loaded without running code stored in them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ModelFileError, first_line
from .context import PathLike, _keras


def load_keras_file(path: PathLike) -> Any:
    """A ``.keras``/``.h5`` model loaded without running code from the file (``safe_mode``)."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"{path}: {'is a directory, expected a file' if path.is_dir() else 'no such file'}"
        )
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path}: not a .keras archive (a zip file); it may be empty, truncated "
            "or of another format: save it again with model.save('model.keras')"
        )
    keras = _keras()
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:
        hint = (
            "; it holds a Lambda layer (Python code, never run from a file): replace it with "
            "built-in layers"
            if "`Lambda`" in str(exc)
            else ""
        )
        raise ModelFileError(
            f"{path}: cannot load the Keras model safely ({first_line(exc)}){hint}"
        ) from None
