"""Reading the model description inside an ``.mlpackage`` (untrusted, read-only).

An ``.mlpackage`` is a folder: ``Manifest.json`` names a root item whose ``path`` (under
``Data/``) is a Core ML ``Model`` protobuf, usually ``com.apple.CoreML/model.mlmodel``, with
an ML Program inside and its weights beside it. Core ML cannot update an ML Program on device
(only NeuralNetwork, k-NN and pipelines of them carry ``isUpdatable``; see ``ML_PROGRAM_FIX``),
but ``inspect`` can still say what the package holds and why it is not updatable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ModelFileError
from .spec_io import Spec, parse_spec

#: A manifest lists a few items; anything larger is not a manifest.
MAX_MANIFEST_BYTES = 1 << 20


def is_mlpackage(path: Path) -> bool:
    return path.is_dir() and (path.suffix == ".mlpackage" or (path / "Manifest.json").is_file())


def read_mlpackage(path: Path) -> Spec:
    """The root model spec of the package at ``path``; every defect is a ModelFileError."""
    manifest_path = path / "Manifest.json"
    if not manifest_path.is_file():
        raise ModelFileError(
            f"{path}: is an .mlpackage (ML Program) without Manifest.json, so it cannot be read; "
            "only NeuralNetwork .mlmodel files can be updatable: convert with "
            "convert_to='neuralnetwork' or use 'updatable-coreml export'"
        )
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ModelFileError(f"{manifest_path}: too large for a package manifest")
    try:
        manifest = json.loads(manifest_path.read_bytes())
        root = manifest["rootModelIdentifier"]
        relative = manifest["itemInfoEntries"][root]["path"]
        if not isinstance(relative, str):
            raise TypeError("path is not a string")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(
            f"{manifest_path}: not a valid package manifest "
            f"({type(exc).__name__}: {exc}); the package may be damaged"
        ) from None
    data_dir = (path / "Data").resolve()
    model_path = (data_dir / relative).resolve()
    if os.path.commonpath([data_dir, model_path]) != str(data_dir):  # untrusted path
        raise ModelFileError(
            f"{manifest_path}: the root model path {relative!r} leaves the package"
        )
    try:
        data = model_path.read_bytes()
    except OSError as exc:
        raise ModelFileError(
            f"{path}: cannot read the root model {relative!r} "
            f"({exc.strerror or exc}); the package may be damaged"
        ) from None
    return parse_spec(data, f"{path}/Data/{relative}")


def package_size(path: Path) -> int:
    """Bytes of every regular file in the package (weights included), links not followed."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            file = Path(folder) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total
