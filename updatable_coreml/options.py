"""One options object for every export entry point, with its defaults in one place.

``export_keras``, ``export_torch``, ``export_onnx``, the Keras callback, ``export_graph`` and
the CLI all take the same options: the on-device training configuration, what the model file
says and how it is shaped, and the export policy. Each entry point accepts them as keyword
arguments (``batch_size=4``) or as ``options=ExportOptions(...)``; ``ExportOptions.build``
checks them once, turns the string forms the CLI and hurried users give (``"fc"`` for
``["fc"]``, ``"a,b,c"`` for three labels) into lists, and names the CLI flag with the Python
keyword in its errors.

Defaults (``DEFAULTS``), stated once here and documented in docs/hyperparameters.md:

* ``batch_size`` 8: on-device personalization trains on a handful of examples per class; a
  batch of 8 updates several times per epoch on such data where Keras's ``fit`` default of 32
  would often update once. It was already the default of ``TrainingConfig``,
  ``make_updatable`` and the torch frontend; ``export_graph``, ONNX and Keras used 32.
* ``epochs`` 10. The Keras callback does not copy ``fit(epochs=...)`` (a server run of 100
  epochs is not a device's default): pass ``epochs`` or ``epochs="fit"`` to copy it.
* ``compress_frozen`` None: weights are stored as the source holds them (fp32) unless the
  user asks for a lossy method (``compression.METHODS``). Without ``val`` data, its effect
  is measured on ``DEFAULT_COMPRESSION_EXAMPLES`` (8) seeded random examples: enough to show
  the size of the change while a large backbone runs in NumPy in seconds, not minutes.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from .errors import ConfigError

Label = Union[str, int]

DEFAULT_BATCH_SIZE = 8
DEFAULT_EPOCHS = 10
DEFAULT_COMPRESSION_EXAMPLES = 8
#: Option name -> default; None means "not set" (the frontend or the model decides).
DEFAULTS: dict[str, Any] = {"batch_size": DEFAULT_BATCH_SIZE, "epochs": DEFAULT_EPOCHS}
BACKBONES = ("auto", "frontend", "coremltools")
#: how an ``.npz``'s x is ordered (``runtime.simulate.ARRAY_LAYOUTS``, the same names)
VAL_LAYOUTS = ("nchw", "nhwc")
#: dtypes of the zero example a torch factory is captured on (``example_shape``): float for
#: images and features, int64 for token ids (an ``nn.Embedding`` refuses float indices when
#: the graph is captured; 0 is a valid id of every vocabulary); the first is the default.
EXAMPLE_DTYPES = ("float32", "int64")


def flag(name: str) -> str:
    """The CLI flag of an option (``batch_size`` -> ``--batch-size``)."""
    return "--" + name.replace("_", "-")


def both_names(name: str) -> str:
    """How errors name an option for CLI and Python users alike."""
    return f"{flag(name)} ({name}=)"


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """``"; did you mean 'a', 'b'?"`` for the names closest to a mistyped ``name`` (or "")."""
    close = difflib.get_close_matches(name, list(known), n=3)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def as_list(value: Any, name: str, *, split_commas: bool = False) -> Optional[list]:
    """A list from a list, a tuple, a range or one string (never iterated into characters).

    With ``split_commas``, ``"a,b,c"`` is three items, as on the command line.
    """
    if value is None:
        return None
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")] if split_commas else [value]
        if any(not item for item in items):
            raise ConfigError(f"{both_names(name)}: empty name in {value!r}")
        return items
    if isinstance(value, Mapping):
        raise ConfigError(f"{both_names(name)}: expected a list, got a {type(value).__name__}")
    try:
        return list(value)
    except TypeError:
        raise ConfigError(f"{both_names(name)}: expected a list, got {value!r}") from None


def _integers(values: Optional[list], name: str) -> Optional[list[int]]:
    if values is None:
        return None
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{both_names(name)}: expected whole numbers, got {values}") from None


@dataclass(frozen=True)
class ExportOptions:
    """Everything an export takes besides the model, its loss and its optimizer.

    Training on device (written into the model; the app may change what the ranges allow):
    ``batch_size`` and ``epochs`` (None: ``DEFAULTS``), ``allowed_batch_sizes``,
    ``allowed_epochs``, ``lr_range`` (the learning rate the app may set), ``shuffle``,
    ``seed``.

    The model: ``class_labels`` (a classifier; a string is comma-separated) plus
    ``extra_class_slots`` placeholders for classes learnt later, ``regressor``, the metadata
    strings ``description``/``author``/``license``/``version``, ``image_input`` (the first
    input becomes an image), ``input_names`` and ``output_names`` (rename the inputs/outputs
    in order).

    Policy: ``trainable`` (layer names; a string is one name), ``allow_unsupported`` (options
    Core ML cannot carry become report warnings instead of errors), ``pipeline`` and
    ``backbone`` (a frozen backbone + updatable head pipeline, backbone made by
    ``'auto'|'frontend'|'coremltools'``), ``verbose`` (the callback prints its report).

    Size: ``compress_frozen`` (``'int8'``, ``'lut8'``, ``'lut4'``: frozen layers' weights
    stored quantized, see ``compression``), measured on ``val`` (an ``.npz`` with x and y or
    an image folder, x ordered as ``val_layout`` says) or on random examples.
    """

    # training on device
    batch_size: Optional[int] = None
    epochs: Optional[int] = None
    allowed_batch_sizes: Optional[Sequence[int]] = None
    allowed_epochs: Optional[Sequence[int]] = None
    lr_range: Optional[tuple[float, float]] = None
    shuffle: bool = True
    seed: Optional[int] = None
    # the model
    class_labels: Optional[Sequence[Label]] = None
    extra_class_slots: int = 0
    regressor: bool = False
    description: str = ""
    author: str = ""
    license: str = ""
    version: str = ""
    image_input: Any = None
    input_names: Optional[Sequence[str]] = None
    output_names: Optional[Sequence[str]] = None
    # policy
    trainable: Optional[Sequence[str]] = None
    allow_unsupported: bool = False
    pipeline: bool = False
    backbone: str = "auto"
    verbose: bool = False
    # size
    compress_frozen: Optional[str] = None
    val: Any = None
    val_layout: str = "nchw"
    #: a ``backend.Metadata`` given whole (its source is kept); the strings above win
    metadata: Any = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        # a string is comma-separated labels (the backend refuses repeated labels)
        set_(self, "class_labels", as_list(self.class_labels, "class_labels", split_commas=True))
        for name in ("input_names", "output_names"):
            set_(self, name, as_list(getattr(self, name), name, split_commas=True))
        for name in ("allowed_batch_sizes", "allowed_epochs"):
            value = getattr(self, name)
            if not isinstance(value, range):
                set_(self, name, _integers(as_list(value, name, split_commas=True), name))
        trainable = self.trainable
        if trainable is not None and trainable != "all":
            set_(self, "trainable", as_list(trainable, "trainable"))
        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"{both_names('backbone')}: {self.backbone!r}; use one of " + ", ".join(BACKBONES)
            )
        if self.compress_frozen is not None:
            from .compression import method

            method(self.compress_frozen)
        elif self.val is not None:
            raise ConfigError(
                f"{both_names('val')} measures what {both_names('compress_frozen')} changes: "
                "add it (e.g. int8) or drop the validation data"
            )
        if self.val_layout not in VAL_LAYOUTS:
            raise ConfigError(
                f"{both_names('val_layout')}: {self.val_layout!r}; use one of "
                + ", ".join(VAL_LAYOUTS)
            )
        if self.extra_class_slots < 0:
            raise ConfigError(
                f"{both_names('extra_class_slots')} must be >= 0, got {self.extra_class_slots}"
            )
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"{both_names(name)} must be a positive integer, got {value!r}")

    @classmethod
    def build(cls, options: Optional[ExportOptions] = None, **kwargs: Any) -> ExportOptions:
        """``options`` (or the defaults) with ``kwargs`` applied; an unknown keyword is a
        ``ConfigError`` that suggests the closest option."""
        known = {f.name for f in dataclasses.fields(cls)}
        for name in kwargs:
            if name not in known:
                raise ConfigError(
                    f"unknown export option {name!r}{did_you_mean(name, sorted(known))}"
                )
        return dataclasses.replace(options if options is not None else cls(), **kwargs)

    # resolved values ---------------------------------------------------------------------

    def resolved(self, name: str) -> Any:
        """The option's value, ``DEFAULTS`` filling a None."""
        value = getattr(self, name)
        return DEFAULTS.get(name) if value is None else value

    def default_notes(self) -> list[str]:
        """Report assumptions for the training defaults that were used."""
        notes = []
        if self.batch_size is None:
            notes.append(
                f"batch size {DEFAULT_BATCH_SIZE} (the default for on-device training): "
                f"pass {both_names('batch_size')} to choose"
            )
        if self.epochs is None:
            notes.append(
                f"{DEFAULT_EPOCHS} epochs (the default for on-device training): pass "
                f"{both_names('epochs')} to choose"
            )
        return notes

    def model_metadata(self, source: str = "") -> Any:
        """The ``backend.Metadata`` to write: ``metadata`` if given, the strings win."""
        from .backend import Metadata

        base = self.metadata if self.metadata is not None else Metadata(source=source)
        if not base.source and source:
            base = dataclasses.replace(base, source=source)
        strings = {
            k: getattr(self, k)
            for k in ("description", "author", "license", "version")
            if getattr(self, k)
        }
        return dataclasses.replace(base, **strings) if strings else base
