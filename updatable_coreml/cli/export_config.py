"""Settings of ``export``: the config file (TOML) and the flags, coerced and checked in one
table (``SETTINGS``), so a value means the same whether it came from a flag or the file."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..compression import METHODS
from ..errors import ConfigError
from ..options import BACKBONES, EXAMPLE_DTYPES, VAL_LAYOUTS
from .common import float_pair, int_list

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
            raise ConfigError(
                f"{key}: no such labels file {value!r} (paths are relative to the "
                "current directory)"
            )
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
        raise ConfigError(
            f"{key}: expected 'name:rgb:scale=1/255:bias=...' or a table, got {value!r}"
        )
    if options.get("color") not in ("rgb", "bgr", "grayscale"):
        raise ConfigError(
            f"{key}: color must be rgb, bgr or grayscale, got {options.get('color')!r}"
        )
    try:
        if "scale" in options:
            options["scale"] = float(Fraction(str(options["scale"])))
        if "bias" in options:
            bias = options["bias"]
            values = (
                bias.split(",")
                if isinstance(bias, str)
                else bias
                if isinstance(bias, list)
                else [bias]
            )
            options["bias"] = [float(Fraction(str(v))) for v in values]
    except (ValueError, ZeroDivisionError):
        raise ConfigError(
            f"{key}: scale and bias must be numbers or fractions, got {value!r}"
        ) from None
    return options


SETTINGS: dict[str, Coerce] = {
    "source": _scalar(str),
    "output": _scalar(str),
    "report": _scalar(str),
    "weights": _scalar(str),
    "example_shape": int_list,
    "example_dtype": _scalar(str),
    "trainable": _names,
    "loss": _scalar(str),
    "optimizer": _scalar(str),
    "lr": _scalar(float),
    "momentum": _scalar(float),
    "beta1": _scalar(float),
    "beta2": _scalar(float),
    "eps": _scalar(float),
    "lr_range": float_pair,
    "batch_size": _scalar(int),
    "allowed_batch_sizes": int_list,
    "epochs": _scalar(int),
    "allowed_epochs": int_list,
    "shuffle": _scalar(bool),
    "seed": _scalar(int),
    "class_labels": class_labels,
    "extra_class_slots": _scalar(int),
    "image_input": image_input,
    "author": _scalar(str),
    "license": _scalar(str),
    "description": _scalar(str),
    "model_version": _scalar(str),
    "allow_unsupported": _scalar(bool),
    "strict": _scalar(bool),
    "verbose": _scalar(bool),
    "quiet": _scalar(bool),
    "pipeline": _scalar(bool),
    "backbone": _scalar(str),
    "compress_frozen": _scalar(str),
    "val": _scalar(str),
    "val_layout": _scalar(str),
}
CHOICES = {
    "loss": ("cce", "mse"),
    "optimizer": ("sgd", "adam"),
    "backbone": BACKBONES,
    "compress_frozen": tuple(METHODS),
    "val_layout": VAL_LAYOUTS,
    "example_dtype": EXAMPLE_DTYPES,
}


def load_config(path: str) -> dict[str, Any]:
    """The TOML settings file as {dest: value}; unknown keys are an error (typos must not pass)."""
    try:
        # 3.11+; mypy checks as Python 3.10, where only tomli exists
        import tomllib  # type: ignore[import-not-found]
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
        dest = "model_version" if key == "version" else key.replace("-", "_")  # old spelling kept
        if dest not in SETTINGS:
            raise ConfigError(
                f"{path}: unknown setting {key!r}; settings are the export flags "
                f"without dashes: {', '.join(sorted(SETTINGS))}"
            )
        config[dest] = value
    return config
