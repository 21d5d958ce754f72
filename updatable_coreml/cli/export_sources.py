"""From export settings to a frontend call: which frontend reads SOURCE, and how the
settings map onto its arguments (only those set; the frontend's defaults stay otherwise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelFileError, UpdatableCoreMLError, first_line
from ..options import EXAMPLE_DTYPES


def source_kind(source: str) -> str:
    suffix = Path(source).suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        return "keras"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".pt2" or ":" in source:
        return "torch"
    raise ConfigError(
        f"{source}: unknown source type; give a .keras, .h5, .onnx or .pt2 file, or "
        "module:factory for a torch model"
    )


def optimizer_from(settings: dict[str, Any], keras_source: bool = False) -> Any:
    """Our SGD/Adam from ``--optimizer`` and its hyperparameters; None leaves it to the source
    (SGD when only SGD's hyperparameters are given and the source has no optimizer)."""
    from ..training import SGD, Adam

    names = {
        "sgd": {"lr": "learning_rate", "momentum": "momentum"},
        "adam": {"lr": "learning_rate", "beta1": "beta1", "beta2": "beta2", "eps": "eps"},
    }
    given = [key for key in ("lr", "momentum", "beta1", "beta2", "eps") if key in settings]
    kind = settings.get("optimizer")
    if kind is None:
        if not given:
            return None
        if keras_source:  # switching a compiled Adam to SGD would silently change training
            raise ConfigError(
                f"--{given[0]} without --optimizer: the Keras model's compiled "
                "optimizer applies; give --optimizer sgd|adam to replace it"
            )
        adam_only = [key for key in given if key not in names["sgd"]]
        if adam_only:
            raise ConfigError(f"--{adam_only[0]} belongs to Adam: add --optimizer adam")
        kind = "sgd"  # the default optimizer, as for make-updatable
    wrong = [key for key in given if key not in names[kind]]
    if wrong:
        raise ConfigError(f"--{wrong[0]} does not apply to {kind}")
    options = {names[kind][key]: settings[key] for key in given}
    return SGD(**options) if kind == "sgd" else Adam(**options)


def _common(settings: dict[str, Any]) -> dict[str, Any]:
    """Options every frontend takes, only those set (the frontend's defaults stay otherwise)."""
    keys = (
        "batch_size",
        "epochs",
        "allowed_batch_sizes",
        "allowed_epochs",
        "lr_range",
        "shuffle",
        "seed",
        "class_labels",
        "extra_class_slots",
        "allow_unsupported",
        "pipeline",
        "compress_frozen",
        "val",
        "val_layout",
    )
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
    from ..backend import Metadata

    return Metadata(
        description=settings.get("description", ""),
        author=settings.get("author", ""),
        license=settings.get("license", ""),
        version=settings.get("model_version", ""),
        source=source,
    )


def _image_options(settings: dict[str, Any]) -> dict | None:
    """``image_input`` without its input name (Keras and torch frontends take the first input)."""
    options = settings.get("image_input")
    return None if options is None else {k: v for k, v in options.items() if k != "name"}


def export_source(kind: str, settings: dict[str, Any]) -> Any:
    output = settings["output"]
    if kind == "onnx":
        from ..exporters.onnx import export_onnx
        from ..training import SGD

        if "loss" not in settings:
            raise ConfigError(
                "an ONNX model carries no training configuration: give --loss cce|mse"
            )
        if "backbone" in settings:
            raise ConfigError(
                "--backbone does not apply to ONNX (coremltools no longer converts "
                "ONNX): the backbone is always converted by our ONNX frontend"
            )
        return export_onnx(
            settings["source"],
            output,
            loss=settings["loss"],
            optimizer=optimizer_from(settings) or SGD(),
            trainable=_trainable(settings),
            image_input=settings.get("image_input"),
            metadata=_metadata(settings, ""),
            **_common(settings),
        )
    if kind == "torch":
        return _export_torch(settings, output)
    return _export_keras(settings, output)


def _export_torch(settings: dict[str, Any], output: str) -> Any:
    import torch

    from ..exporters.torch import export_torch, load_torch_source

    if "loss" not in settings:
        raise ConfigError("a torch model carries no loss: give --loss cce|mse")
    try:
        loaded = load_torch_source(
            settings["source"],
            settings.get("weights"),
            settings.get("example_shape"),
            trust_source=settings["trust_source"],
            example_dtype=settings.get("example_dtype") or EXAMPLE_DTYPES[0],
        )
    except UpdatableCoreMLError:
        raise
    except Exception as exc:  # the user's factory code failed
        raise ModelFileError(
            f"{settings['source']}: could not build the model "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from None
    trainable = _trainable(settings)
    return export_torch(
        loaded.model,
        loaded.example_inputs,
        output,
        loss="cross_entropy" if settings["loss"] == "cce" else "mse",
        optimizer=optimizer_from(settings),
        trainable=None if trainable == "all" else trainable,
        image_input=_image_options(settings),
        metadata=_metadata(settings, f"torch=={torch.__version__}"),
        **_common(settings),
        **_backbone(settings),
    )


def _export_keras(settings: dict[str, Any], output: str) -> Any:
    from ..exporters.keras import export_keras, load_keras_file

    model = load_keras_file(settings["source"])
    trainable = _trainable(settings)
    if trainable == "all":
        model.trainable = True  # Keras sets every nested layer trainable
        trainable = None
    return export_keras(
        model,
        output,
        loss=settings.get("loss"),
        optimizer=optimizer_from(settings, keras_source=True),
        trainable=trainable,
        image_input=_image_options(settings),
        description=settings.get("description", ""),
        author=settings.get("author", ""),
        license=settings.get("license", ""),
        version=settings.get("model_version", ""),
        **_common(settings),
        **_backbone(settings),
    )
