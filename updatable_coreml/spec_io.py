"""Reading and writing ``.mlmodel`` files: clean errors in, atomic files out."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ._proto import Model_pb2
from .errors import ModelFileError

if TYPE_CHECKING:
    from typing import TypeAlias

    # coremltools' protobuf classes are built when their module loads and ship no type stubs:
    # to the type checker a spec is Any. The alias still says what a signature means.
    Spec: TypeAlias = Any
else:
    Spec = Model_pb2.Model
SpecLike = Union[str, os.PathLike, bytes, Spec]

#: Model types that can carry a neural network (and so can be updatable).
NEURAL_NETWORK_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
#: What to do with an ML Program, which Core ML cannot update on device.
ML_PROGRAM_FIX = (
    "only NeuralNetwork models can be updatable: convert with "
    "convert_to='neuralnetwork' or use 'updatable-coreml export'"
)


def load_spec(source: SpecLike) -> Spec:
    """Return a ``Model`` spec from a path, raw bytes, or a spec (returned as is).

    Files are untrusted input: every way they can be wrong becomes a ``ModelFileError``
    that names the file and says what to do.
    """
    if isinstance(source, Model_pb2.Model):
        return source
    if isinstance(source, (bytes, bytearray)):
        return parse_spec(bytes(source), "<bytes>")
    path = Path(source)
    if path.is_dir():
        if path.suffix == ".mlpackage" or (path / "Manifest.json").exists():
            raise ModelFileError(
                f"{path}: is an .mlpackage (ML Program); only NeuralNetwork .mlmodel files can be "
                "updatable: convert with convert_to='neuralnetwork' or use 'updatable-coreml export'"
            )
        raise ModelFileError(f"{path}: is a directory, expected an .mlmodel file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_spec(data, str(path))


def parse_message(message, data: bytes, name: str, what: str, file_kind: str = ""):
    """Fill a protobuf ``message`` from untrusted bytes; any failure is a ModelFileError
    saying the file ``name`` is not ``what`` (e.g. "a Core ML model"; an empty file is told
    it should be ``file_kind``, default ``what``)."""
    if not data:
        raise ModelFileError(f"{name}: file is empty, expected {file_kind or what}")
    try:
        message.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError or RuntimeError depending on backend
        raise ModelFileError(
            f"{name}: not {what} (protobuf parse failed: {exc}); the file may be "
            "truncated or of another format"
        ) from None
    return message


def parse_spec(data: bytes, name: str) -> Spec:
    spec = parse_message(Model_pb2.Model(), data, name, "a Core ML model", "a Core ML .mlmodel")
    if spec.WhichOneof("Type") is None or spec.specificationVersion <= 0:
        raise ModelFileError(
            f"{name}: not a Core ML model (no model type or specification version); the file "
            "may be truncated or of another format"
        )
    return spec


def model_type(spec: Spec) -> str:
    """The spec's model type, e.g. ``neuralNetworkClassifier``, ``pipeline``, ``mlProgram``."""
    return spec.WhichOneof("Type") or ""


def neural_network(spec: Spec):
    """The NeuralNetwork message inside a plain/classifier/regressor spec, else None."""
    kind = model_type(spec)
    return getattr(spec, kind) if kind in NEURAL_NETWORK_TYPES else None


def atomic_write_bytes(
    data: bytes, path: Union[str, os.PathLike], *, not_same_as: Union[str, os.PathLike, None] = None
) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename.

    Readers see either the previous complete file or the new one, never a partial one, even
    if the process is killed mid-write. ``not_same_as`` names an input that must never be
    overwritten.
    """
    path = Path(path)
    folder = check_output_path(path, not_same_as=not_same_as)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot write to {folder} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ModelFileError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise
    return path


def check_output_path(
    path: Union[str, os.PathLike], *, not_same_as: Union[str, os.PathLike, None] = None
) -> Path:
    """Refuse an output path that cannot be written (before any work is done); returns its
    folder. ``not_same_as`` names an input that must never be overwritten."""
    path = Path(path)
    if not_same_as is not None and _same_file(path, Path(not_same_as)):
        raise ModelFileError(f"{path}: output would overwrite the input; choose another path")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise ModelFileError(
            f"{path}: output folder {folder} {problem}; create it or choose another output path"
        )
    if path.is_dir():
        raise ModelFileError(f"{path}: output path is a directory; give a file name")
    return folder


def save_spec(
    spec: Spec, path: Union[str, os.PathLike], *, not_same_as: Union[str, os.PathLike, None] = None
) -> Path:
    """Serialize ``spec`` deterministically and write it atomically."""
    return atomic_write_bytes(
        spec.SerializeToString(deterministic=True), path, not_same_as=not_same_as
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
