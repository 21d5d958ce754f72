"""Typed errors. The CLI turns any of them into one line on stderr and exit code 2."""

from __future__ import annotations


class UpdatableCoreMLError(Exception):
    """Base class: something the user can fix; the message says what and how."""


class ModelFileError(UpdatableCoreMLError):
    """A model file is missing, unreadable, not a Core ML protobuf, or of the wrong kind."""


class ConfigError(UpdatableCoreMLError, ValueError):
    """A training hyperparameter, allowed range, or option is invalid."""


class UnsupportedError(UpdatableCoreMLError):
    """The model uses a layer, op, loss or optimizer option we cannot carry to Core ML."""


class NotUpdatableError(UpdatableCoreMLError):
    """The requested layers cannot be trained on device (wrong type, or backprop is blocked)."""


class UntrustedSourceError(UpdatableCoreMLError):
    """Loading the source would run code stored in it (pickle); refused unless the caller
    says the file is trusted (``--trust-source`` / ``trust_source=True``)."""


class InputShapeError(ConfigError):
    """An input MultiArray's shape is not one its feature description allows; Core ML refuses
    it at prediction and training, so the runtime does too (never a silent reshape)."""


class MissingDependencyError(UpdatableCoreMLError):
    """An optional dependency the command needs is not installed (the message names the extra
    to install); checked before any work starts."""


class RuntimeLayerError(UpdatableCoreMLError):
    """The reference runtime cannot execute a layer or feature of the model."""


def first_line(exc: BaseException) -> str:
    """An exception's first message line (its type name when empty), for one-line errors that
    wrap a framework's exception."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
