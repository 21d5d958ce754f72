"""Quiet, lazy imports of the heavy frameworks.

TensorFlow, Keras and coremltools print start-up noise (absl/oneDNN logs straight to file
descriptor 2, "version not tested" warnings) that would bury our one-line errors and make
pipeline logs nondeterministic. Each import happens once, on first use, with that noise
silenced; errors raised by the import itself still propagate.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType

_QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "GRPC_VERBOSITY": "ERROR",
    "ABSL_MIN_LOG_LEVEL": "3",
}


@contextlib.contextmanager
def _silenced_fd2() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (C++ loggers ignore sys.stderr)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_environment() -> None:
    """Ask TensorFlow/absl/gRPC for errors only (read when they are first imported)."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)


def quiet_import(name: str) -> ModuleType:
    """Import ``name`` (e.g. ``keras``, ``torch``, ``coremltools``) without start-up noise."""
    if name in sys.modules:
        return sys.modules[name]
    quiet_environment()
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with _silenced_fd2(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module(name)
    if name in ("keras", "tensorflow"):
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
    return module
