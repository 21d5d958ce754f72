"""Simulated users from a CSV: one row per example, a user column, a label column, and either
feature columns (a model with a MultiArray input) or a column of image paths (a model with an
image input).

A CSV is how a team's labelled data usually leaves a spreadsheet or a database export, so
``plan`` reads it directly rather than asking for an ``.npz``. Image paths are relative to the
CSV's folder (the file and its images move together) and are decoded by ``simulate``'s image
reader, so an image reaches the model exactly as ``simulate --train FOLDER`` would give it.
Every refusal names the file, the line and the column, and says what to change.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .users import Dataset

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Columns:
    """Which CSV columns hold what. ``features`` None: every column that is not the user, the
    label or the image column (in file order)."""

    users: str = "user"
    label: str = "label"
    image: str = "image"
    features: Sequence[str] | None = None


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and ``(line number, cells)`` of every non-blank row."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (give a CSV with a header row)")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            rows = [(reader.line_num, cells) for cells in reader if any(c.strip() for c in cells)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read the CSV ({exc}); save it as UTF-8 text") from None
    if not header or not any(header):
        raise ConfigError(f"{path}: the CSV is empty; it needs a header row naming its columns")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ConfigError(f"{path}: column {duplicates[0]!r} appears twice in the header")
    if not rows:
        raise ConfigError(f"{path}: the CSV has a header but no examples")
    for line, cells in rows:
        if len(cells) != len(header):
            raise ConfigError(
                f"{path} line {line}: {len(cells)} values for {len(header)} columns; "
                "every row needs one value per header column"
            )
    return header, rows


def _column(path: Path, header: list[str], name: str, role: str, flag: str) -> int:
    if name not in header:
        raise ConfigError(
            f"{path}: no {role} column {name!r} (name it with {flag}); "
            f"the CSV has {', '.join(header)}"
        )
    return header.index(name)


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not text.strip() or not math.isfinite(value):
        raise ConfigError(
            f"{path} line {line}: feature column {column!r} holds {text!r}, not a finite "
            "number; fix the value, or list only numeric columns with --features"
        )
    return value


def _images(path: Path, rows: list, at: int, column: str, image_type: Any) -> np.ndarray:
    from ..runtime.simulate import read_image

    folder = path.parent
    images = []
    for line, cells in rows:
        name = cells[at].strip()
        image = folder / name
        if not name or not image.is_file():
            raise ConfigError(
                f"{path} line {line}: image {name!r} (column {column!r}) not found; "
                f"paths are relative to the CSV's folder {folder}"
            )
        images.append(read_image(image, image_type))
    return np.stack(images)


def _features(
    path: Path, header: list[str], rows: list, columns: Columns, description: Any
) -> np.ndarray:
    skip = {columns.users, columns.label}
    names = (
        list(columns.features)
        if columns.features is not None
        else [name for name in header if name not in skip]
    )
    if not names:
        raise ConfigError(f"{path}: no feature columns besides the user and label columns")
    at = [_column(path, header, name, "feature", "--features") for name in names]
    x = np.asarray(
        [[_number(path, line, header[i], cells[i]) for i in at] for line, cells in rows],
        dtype=np.float32,
    )
    shape = tuple(int(d) for d in description.type.multiArrayType.shape)
    if shape and math.prod(shape) != len(names):
        raise ConfigError(
            f"{path}: {len(names)} feature columns, but the model's input "
            f"{description.name!r} takes {math.prod(shape)} values (shape {shape}); "
            "choose the columns with --features"
        )
    return x.reshape((len(rows), *shape)) if shape else x


def load_csv(
    path: PathLike, columns: Columns, description: Any, users: bool = True
) -> tuple[Dataset, np.ndarray]:
    """Examples, labels and (``users``) each example's user; without ``users`` (the shared
    set) a user column may be absent, and is never read as a feature when present.

    ``description`` is the model's prediction input: an image input reads the image column,
    a MultiArray input the feature columns.
    """
    from ..runtime import features as feat

    path = Path(path)
    header, rows = _read_rows(path)
    label_at = _column(path, header, columns.label, "label", "--label")
    y = np.asarray([cells[label_at].strip() for _, cells in rows])
    owners = np.asarray([], dtype=str)
    if users:
        user_at = _column(path, header, columns.users, "user", "--users")
        owners = np.asarray([cells[user_at].strip() for _, cells in rows])
    kind = feat.feature_kind(description)
    if kind == "imageType":
        at = _column(path, header, columns.image, "image path", "--image-column")
        x = _images(path, rows, at, columns.image, description.type.imageType)
    elif kind == "multiArrayType":
        x = _features(path, header, rows, columns, description)
    else:
        raise ConfigError(
            f"{path}: the model's input {description.name!r} is neither an image nor a "
            "MultiArray; a CSV cannot feed it"
        )
    return Dataset(x, y), owners
