"""ONNX models as untrusted input: parse failures, missing external-data files and external
data pointing outside the model's folder become ``ModelFileError``. onnx is imported inside
the functions that need it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ...errors import ModelFileError
from ...spec_io import parse_message


def load_onnx(source: Any) -> Any:
    """An ONNX ``ModelProto`` from a path, bytes or a proto, external weights loaded.

    The file is untrusted input: parse failures, missing external-data files and external
    data that points outside the model's folder become ``ModelFileError``.
    """
    import onnx

    if isinstance(source, onnx.ModelProto):
        _check_external_data(source, None)
        return source
    if isinstance(source, (bytes, bytearray)):
        model = _parse(bytes(source), "the ONNX bytes")
        _check_external_data(model, None)
        return model
    path = Path(source)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    model = _parse(path.read_bytes(), str(path))
    files = _check_external_data(model, path.parent)
    if files:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise ModelFileError(
                f"{path}: cannot read its external data ({', '.join(sorted(files))}): {exc}"
            ) from None
    return model


def _parse(data: bytes, name: str) -> Any:
    import onnx

    model = parse_message(onnx.ModelProto(), data, name, "an ONNX model")
    if not model.HasField("graph") or not model.opset_import:
        raise ModelFileError(
            f"{name}: not an ONNX model (no graph or opset); the file may be "
            "truncated or of another format"
        )
    return model


def _check_external_data(model: Any, folder: Optional[Path]) -> set[str]:
    """Names of the external-data files the model needs, each checked to exist in ``folder``."""
    from onnx.external_data_helper import uses_external_data

    files: set[str] = set()
    for tensor in model.graph.initializer:
        if not uses_external_data(tensor):
            continue
        location = next(
            (entry.value for entry in tensor.external_data if entry.key == "location"), ""
        )
        if folder is None:
            raise ModelFileError(
                f"initializer {tensor.name!r} keeps its data in {location!r}; pass "
                "the .onnx path (not a loaded proto) so the file can be found"
            )
        target = (folder / location).resolve()
        if not location or folder.resolve() not in target.parents:
            raise ModelFileError(
                f"initializer {tensor.name!r}: external data location {location!r} "
                "is outside the model's folder; refusing to read it"
            )
        if not target.is_file():
            raise ModelFileError(
                f"initializer {tensor.name!r}: external data file {location!r} "
                f"not found next to the model (in {folder})"
            )
        files.add(location)
    return files
