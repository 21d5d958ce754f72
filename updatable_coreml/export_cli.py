"""``updatable-coreml export SOURCE -o OUT.mlmodel``: one export as a clean pipeline step.

SOURCE is a Keras file (``.keras``, loaded with ``safe_mode=True``; legacy ``.h5``), an
``.onnx`` model, a torch ``.pt2`` program, or ``module:factory`` / ``file.py:factory`` (with
``--weights`` and ``--example-shape``). Settings come from ``--config export.toml`` (the same
names as the flags, ``batch-size`` or ``batch_size``), overridden by flags; anything unset is
what the source says (Keras's compiled loss, optimizer and trainable flags; torch's
``requires_grad``), except that ONNX needs ``--loss``.

Exit codes: 0 exported and valid; 1 exported but the validator reports errors (``--strict``:
or warnings); 2 unusable input or unsupported construct (one line on stderr, no output file).
Quiet unless ``--verbose``; the output is byte-identical for the same source and settings.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import platform
import sys
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from .errors import ConfigError, ModelFileError, UpdatableCoreMLError, first_line
from .cli import float_pair, int_list
from .frameworks import quiet_environment

#: turns a flag or config value into a setting (value, setting name) -> value
Coerce = Callable[[Any, str], Any]


def _names(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ConfigError(f"{key}: expected a name or a list of names, got {value!r}")


def _scalar(kind: type) -> Coerce:
    def coerce(value: Any, key: str) -> Any:
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}") from None

    return coerce


def class_labels(value: Any, key: str = "class_labels") -> list:
    """``labels.txt`` (one per line), ``a,b,c`` or a list; all-integer labels become ints."""
    if isinstance(value, str):
        path = Path(value)
        if path.is_file():
            labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix.lower() in (".txt", ".csv") and "," not in value:
            raise ConfigError(f"{key}: no such labels file {value!r} (paths are relative to the "
                              "current directory)")
        else:
            labels = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list):
        labels = [str(v) for v in value]
    else:
        raise ConfigError(f"{key}: expected a file, 'a,b,c' or a list, got {value!r}")
    if not labels:
        raise ConfigError(f"{key}: no labels in {value!r}")
    try:
        return [int(v) for v in labels]
    except ValueError:
        return labels


def image_input(value: Any, key: str = "image_input") -> dict:
    """``[name:]rgb|bgr|grayscale[:scale=1/255][:bias=B or R,G,B]``, or a config table."""
    if isinstance(value, dict):
        options = dict(value)
    elif isinstance(value, str):
        parts = value.split(":")
        options = {} if parts[0] in ("rgb", "bgr", "grayscale") else {"name": parts.pop(0)}
        if not parts:
            raise ConfigError(f"{key}: {value!r} has no color (rgb, bgr or grayscale)")
        options["color"] = parts.pop(0)
        for part in parts:
            name, _, text = part.partition("=")
            if name not in ("scale", "bias") or not text:
                raise ConfigError(f"{key}: {part!r} is not scale=S or bias=B[,B,B]")
            options[name] = text
    else:
        raise ConfigError(f"{key}: expected 'name:rgb:scale=1/255:bias=...' or a table, got {value!r}")
    if options.get("color") not in ("rgb", "bgr", "grayscale"):
        raise ConfigError(f"{key}: color must be rgb, bgr or grayscale, got {options.get('color')!r}")
    try:
        if "scale" in options:
            options["scale"] = float(Fraction(str(options["scale"])))
        if "bias" in options:
            bias = options["bias"]
            values = bias.split(",") if isinstance(bias, str) else bias if isinstance(bias, list) else [bias]
            options["bias"] = [float(Fraction(str(v))) for v in values]
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{key}: scale and bias must be numbers or fractions, got {value!r}") from None
    return options


SETTINGS: dict[str, Coerce] = {
    "source": _scalar(str), "output": _scalar(str), "report": _scalar(str),
    "weights": _scalar(str), "example_shape": int_list,
    "trainable": _names, "loss": _scalar(str), "optimizer": _scalar(str),
    "lr": _scalar(float), "momentum": _scalar(float), "beta1": _scalar(float),
    "beta2": _scalar(float), "eps": _scalar(float), "lr_range": float_pair,
    "batch_size": _scalar(int), "allowed_batch_sizes": int_list, "epochs": _scalar(int),
    "allowed_epochs": int_list, "shuffle": _scalar(bool), "seed": _scalar(int),
    "class_labels": class_labels, "extra_class_slots": _scalar(int), "image_input": image_input,
    "author": _scalar(str), "license": _scalar(str), "description": _scalar(str),
    "model_version": _scalar(str), "allow_unsupported": _scalar(bool), "strict": _scalar(bool),
    "verbose": _scalar(bool), "pipeline": _scalar(bool), "backbone": _scalar(str),
}
CHOICES = {"loss": ("cce", "mse"), "optimizer": ("sgd", "adam"),
           "backbone": ("auto", "frontend", "coremltools")}


# -- the command line ------------------------------------------------------------------------


def add_export_command(sub: argparse._SubParsersAction) -> None:
    """Register ``export`` (every option defaults to None: unset means config, then source)."""
    p = sub.add_parser("export", help="export a Keras/ONNX/torch model to an updatable .mlmodel",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("source", nargs="?", help=".keras, .h5, .onnx, .pt2, or module:factory")
    p.add_argument("-o", "--output", help="the .mlmodel to write")
    p.add_argument("--config", metavar="TOML", help="settings file; flags override it")
    p.add_argument("--report", metavar="JSON", help="write what was exported, findings, versions")
    p.add_argument("--weights", metavar="STATE_DICT", help="torch state dict for module:factory")
    p.add_argument("--example-shape", metavar="C,H,W", help="one example's input shape (torch)")
    p.add_argument("--trainable", nargs="+", metavar="NAME",
                   help="layers that train: names, or 'all' (default: what the source says)")
    p.add_argument("--loss", choices=CHOICES["loss"])
    p.add_argument("--optimizer", choices=CHOICES["optimizer"])
    for flag in ("--lr", "--momentum", "--beta1", "--beta2", "--eps"):
        p.add_argument(flag, type=float)
    p.add_argument("--lr-range", metavar="MIN,MAX")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--allowed-batch-sizes", metavar="N,N,...")
    p.add_argument("--epochs", type=int)
    p.add_argument("--allowed-epochs", metavar="N,N,...")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--class-labels", metavar="FILE|a,b,c")
    p.add_argument("--extra-class-slots", type=int, metavar="N",
                   help="placeholder labels user0... for classes the app learns later")
    p.add_argument("--image-input", metavar="SPEC", help="name:rgb:scale=1/255:bias=-1,-1,-1")
    for flag in ("--author", "--license", "--description"):
        p.add_argument(flag)
    p.add_argument("--version", dest="model_version", help="the model's version string")
    p.add_argument("--allow-unsupported", action="store_true", default=None,
                   help="turn refusals of options Core ML cannot carry into report warnings")
    p.add_argument("--trust-source", action="store_true",
                   help="SOURCE is a file you made: allow loaders that can run code stored in it "
                        "(a .pt2, read by torch.export.load); flag only, never from --config")
    p.add_argument("--pipeline", action="store_true", default=None,
                   help="write the frozen backbone and the updatable head as a two-model pipeline")
    p.add_argument("--backbone", choices=CHOICES["backbone"],
                   help="with --pipeline (Keras, torch): convert the backbone with our frontend, "
                        "with coremltools, or with coremltools only when ours refuses it (auto)")
    p.add_argument("--strict", action="store_true", default=None, help="validator warnings fail (exit 1)")
    p.add_argument("--verbose", action="store_true", default=None, help="print the export summary")
    p.set_defaults(run=run_export)


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """Config file values overridden by the flags given, each coerced and checked."""
    merged = load_config(args.config) if args.config else {}
    merged.update({key: getattr(args, key) for key in SETTINGS if getattr(args, key, None) is not None})
    settings = {key: SETTINGS[key](value, key) for key, value in merged.items()}
    for key, allowed in CHOICES.items():
        if key in settings and settings[key] not in allowed:
            raise ConfigError(f"{key}: {settings[key]!r} is not one of {', '.join(allowed)}")
    for key in ("source", "output"):
        if not settings.get(key):
            raise ConfigError(f"no {key}: give {'SOURCE' if key == 'source' else '-o OUT.mlmodel'} "
                              f"or set {key} in the config file")
    from .spec_io import check_output_path

    for key in ("output", "report"):  # refuse before loading anything; never overwrite the source
        if settings.get(key):
            check_output_path(settings[key], not_same_as=settings["source"])
    settings["trust_source"] = bool(getattr(args, "trust_source", False))
    return settings


def load_config(path: str) -> dict[str, Any]:
    """The TOML settings file as {dest: value}; unknown keys are an error (typos must not pass)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML file ({exc})") from None
    config = {}
    for key, value in data.items():
        dest = "model_version" if key == "version" else key.replace("-", "_")
        if dest not in SETTINGS:
            raise ConfigError(f"{path}: unknown setting {key!r}; settings are the export flags "
                              f"without dashes: {', '.join(sorted(SETTINGS))}")
        config[dest] = value
    return config


def run_export(args: argparse.Namespace) -> int:
    from .cli import EXIT_INVALID, EXIT_OK

    settings = settings_from(args)
    verbose = bool(settings.get("verbose"))
    with quiet(not verbose):
        kind = source_kind(settings["source"])
        report = export_source(kind, settings)
    from .validator import validate

    findings = validate(report.path)
    failing = [f for f in findings if f.severity == "error"
               or (settings.get("strict") and f.severity == "warning")]
    if settings.get("report"):
        write_report(settings["report"], kind, settings, report, findings, not failing)
    if verbose:
        print(report.summary())
    for finding in failing:
        print(f"updatable-coreml: {finding}", file=sys.stderr)
    return EXIT_INVALID if failing else EXIT_OK


@contextlib.contextmanager
def quiet(enabled: bool) -> Iterator[None]:
    """Silence framework noise (TensorFlow's C++ log, Python warnings, library prints)."""
    if not enabled:
        yield
        return
    quiet_environment()
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


# -- dispatch to the frontends ---------------------------------------------------------------


def source_kind(source: str) -> str:
    suffix = Path(source).suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        return "keras"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".pt2" or ":" in source:
        return "torch"
    raise ConfigError(f"{source}: unknown source type; give a .keras, .h5, .onnx or .pt2 file, or "
                      "module:factory for a torch model")


def optimizer_from(settings: dict[str, Any]) -> Any:
    """Our SGD/Adam from ``--optimizer`` and its hyperparameters; None leaves it to the source."""
    from .training import SGD, Adam

    names = {"sgd": {"lr": "learning_rate", "momentum": "momentum"},
             "adam": {"lr": "learning_rate", "beta1": "beta1", "beta2": "beta2", "eps": "eps"}}
    given = [key for key in ("lr", "momentum", "beta1", "beta2", "eps") if key in settings]
    kind = settings.get("optimizer")
    if kind is None:
        if given:
            raise ConfigError(f"--{given[0]} needs --optimizer sgd|adam")
        return None
    wrong = [key for key in given if key not in names[kind]]
    if wrong:
        raise ConfigError(f"--{wrong[0]} does not apply to {kind}")
    options = {names[kind][key]: settings[key] for key in given}
    return SGD(**options) if kind == "sgd" else Adam(**options)


def _common(settings: dict[str, Any]) -> dict[str, Any]:
    """Options every frontend takes, only those set (the frontend's defaults stay otherwise)."""
    keys = ("batch_size", "epochs", "allowed_batch_sizes", "allowed_epochs", "lr_range", "shuffle",
            "seed", "class_labels", "extra_class_slots", "allow_unsupported", "pipeline")
    return {key: settings[key] for key in keys if key in settings}


def _backbone(settings: dict[str, Any]) -> dict[str, Any]:
    """``backbone=`` for the frontends that have a coremltools fallback (Keras, torch)."""
    if "backbone" in settings and not settings.get("pipeline"):
        raise ConfigError("--backbone applies to pipeline exports: add --pipeline")
    return {"backbone": settings["backbone"]} if "backbone" in settings else {}


def _trainable(settings: dict[str, Any]) -> Any:
    names = settings.get("trainable")
    return "all" if names == ["all"] else names


def _metadata(settings: dict[str, Any], source: str) -> Any:
    from .backend import Metadata

    return Metadata(description=settings.get("description", ""), author=settings.get("author", ""),
                    license=settings.get("license", ""), version=settings.get("model_version", ""),
                    source=source)


def _image_options(settings: dict[str, Any]) -> Optional[dict]:
    """``image_input`` without its input name (Keras and torch frontends take the first input)."""
    options = settings.get("image_input")
    return None if options is None else {k: v for k, v in options.items() if k != "name"}


def export_source(kind: str, settings: dict[str, Any]) -> Any:
    output = settings["output"]
    if kind == "onnx":
        from .exporters.onnx import export_onnx
        from .training import SGD

        if "loss" not in settings:
            raise ConfigError("an ONNX model carries no training configuration: give --loss cce|mse")
        if "backbone" in settings:
            raise ConfigError("--backbone does not apply to ONNX (coremltools no longer converts "
                              "ONNX): the backbone is always converted by our ONNX frontend")
        return export_onnx(settings["source"], output, loss=settings["loss"],
                           optimizer=optimizer_from(settings) or SGD(), trainable=_trainable(settings),
                           image_input=settings.get("image_input"),
                           metadata=_metadata(settings, ""), **_common(settings))
    if kind == "torch":
        return _export_torch(settings, output)
    return _export_keras(settings, output)


def _export_torch(settings: dict[str, Any], output: str) -> Any:
    import torch

    from .exporters.torch import export_torch, load_torch_source

    if "loss" not in settings:
        raise ConfigError("a torch model carries no loss: give --loss cce|mse")
    try:
        loaded = load_torch_source(settings["source"], settings.get("weights"),
                                   settings.get("example_shape"), trust_source=settings["trust_source"])
    except UpdatableCoreMLError:
        raise
    except Exception as exc:  # the user's factory code failed
        raise ModelFileError(f"{settings['source']}: could not build the model "
                             f"({type(exc).__name__}: {first_line(exc)})") from None
    trainable = _trainable(settings)
    return export_torch(loaded.model, loaded.example_inputs, output,
                        loss="cross_entropy" if settings["loss"] == "cce" else "mse",
                        optimizer=optimizer_from(settings),
                        trainable=None if trainable == "all" else trainable,
                        image_input=_image_options(settings),
                        metadata=_metadata(settings, f"torch=={torch.__version__}"), **_common(settings),
                        **_backbone(settings))


def _export_keras(settings: dict[str, Any], output: str) -> Any:
    from .exporters.keras import export_keras, load_keras_file

    model = load_keras_file(settings["source"])
    trainable = _trainable(settings)
    if trainable == "all":
        model.trainable = True  # Keras sets every nested layer trainable
        trainable = None
    return export_keras(model, output, loss=settings.get("loss"), optimizer=optimizer_from(settings),
                        trainable=trainable, image_input=_image_options(settings),
                        description=settings.get("description", ""), author=settings.get("author", ""),
                        license=settings.get("license", ""), version=settings.get("model_version", ""),
                        **_common(settings), **_backbone(settings))


# -- the report ------------------------------------------------------------------------------


def versions(kind: str) -> dict[str, str]:
    """Exporter and source-framework versions, for reproducing an export."""
    import numpy

    from . import __version__

    found = {"updatable_coreml": __version__, "python": platform.python_version(),
             "numpy": numpy.__version__}
    modules = {"onnx": ("onnx",), "torch": ("torch",), "keras": ("keras", "tensorflow")}[kind]
    for name in modules:
        with contextlib.suppress(ImportError):
            found[name] = __import__(name).__version__
    return found


def _sha256(path: str) -> Optional[str]:
    if not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_report(path: str, kind: str, settings: dict[str, Any], report: Any, findings: list,
                 valid: bool) -> None:
    from .spec_io import atomic_write_bytes

    document = {
        "valid": valid,
        "output": {"path": report.path, "sha256": report.sha256, "size_bytes": report.size_bytes},
        "source": {"path": settings["source"], "kind": kind, "sha256": _sha256(settings["source"])},
        "export": report.to_dict(),
        "findings": [finding.to_dict() for finding in findings],
        "settings": {k: v for k, v in settings.items() if k not in ("report", "verbose")},
        "versions": versions(kind),
    }
    atomic_write_bytes((json.dumps(document, indent=2, sort_keys=True) + "\n").encode(), path)
