"""The machine-readable forms of ``inspect --json`` and ``export --report``: numbers, lists and
ranges under a versioned schema (documented in docs/json-output.md), beside the human text the
terminal shows. Bump ``SCHEMA_VERSION`` on any change a reader could trip over (a key removed,
renamed, or a value's type changed); adding a key is not such a change.
"""

from __future__ import annotations

from typing import Any

from .training import SGD, TrainingConfig

SCHEMA_VERSION = 1
INSPECT_SCHEMA = "updatable-coreml/inspect"
REPORT_SCHEMA = "updatable-coreml/export-report"


def parameter(param: Any) -> dict[str, Any]:
    """``{"default": d, "allowed": {"set": [...]} | {"range": [min, max]} | null}``; null means
    only the default is allowed (for a learning rate: Core ML's built-in bounds apply)."""
    allowed: dict[str, list] | None = None
    values = getattr(param, "values", None)
    if values is not None:
        allowed = {"set": sorted(values)}
    elif param.range is not None:
        allowed = {"range": list(param.range)}
    return {"default": param.default, "allowed": allowed}


def training(config: TrainingConfig) -> dict[str, Any]:
    """A network's update parameters, as MLUpdateTask reads them."""
    optimizer = config.optimizer
    if isinstance(optimizer, SGD):
        opt: dict[str, Any] = {
            "kind": "sgd",
            "learning_rate": parameter(optimizer.learning_rate),
            "momentum": parameter(optimizer.momentum),
        }
    else:
        opt = {
            "kind": "adam",
            "learning_rate": parameter(optimizer.learning_rate),
            "beta1": parameter(optimizer.beta1),
            "beta2": parameter(optimizer.beta2),
            "eps": parameter(optimizer.eps),
        }
    loss = config.loss
    return {
        "loss": {"kind": loss.kind, "layer": loss.name, "input": loss.input, "target": loss.target},
        "optimizer": opt,
        "batch_size": parameter(config.batch_size),
        "epochs": parameter(config.epochs),
        "shuffle": bool(config.shuffle),
        "seed": config.seed,
    }


def feature(description) -> dict[str, Any]:
    """A FeatureDescription: name, kind and, per kind, data type, shape, image size, colour."""
    kind = description.type.WhichOneof("Type") or ""
    found: dict[str, Any] = {
        "name": description.name,
        "type": kind[: -len("Type")] if kind.endswith("Type") else kind,
        "optional": bool(description.type.isOptional),
    }
    if kind == "multiArrayType":
        array = description.type.multiArrayType
        found["data_type"] = _enum(type(array).ArrayDataType, array.dataType)
        found["shape"] = [int(d) for d in array.shape]
        flexibility = array.WhichOneof("ShapeFlexibility")
        if flexibility == "enumeratedShapes":
            found["enumerated_shapes"] = [
                [int(d) for d in s.shape] for s in array.enumeratedShapes.shapes
            ]
        elif flexibility == "shapeRange":
            found["shape_range"] = [
                [int(r.lowerBound), int(r.upperBound)] for r in array.shapeRange.sizeRanges
            ]
    elif kind == "imageType":
        image = description.type.imageType
        found.update(
            width=int(image.width),
            height=int(image.height),
            color_space=_enum(type(image).ColorSpace, image.colorSpace),
        )
    elif kind == "dictionaryType":
        found["key_type"] = description.type.dictionaryType.WhichOneof("KeyType")
    if description.shortDescription:
        found["description"] = description.shortDescription
    return found


def _enum(enum_type, value: int) -> str:
    try:
        return enum_type.Name(value)
    except ValueError:  # files are untrusted: show the number, do not raise
        return f"unknown({value})"
