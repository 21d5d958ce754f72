"""Simulated users: a labelled data set split into people who each teach the model a few
examples per class.

A user's examples are drawn ``shots`` per class (a larger ``shots`` extends the smaller draw,
so the learning curve is one user growing their data); what the largest draw leaves is the
user's own held-out set, the same for every ``shots`` so the points of a curve compare.
A shared held-out set (never taught by anyone) measures forgetting: accuracy on the classes
a user did not teach.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Dataset:
    """Inputs (batched for the model's single input) and labels."""

    x: np.ndarray
    y: np.ndarray

    def take(self, index: np.ndarray) -> Dataset:
        return Dataset(self.x[index], self.y[index])

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class SimUser:
    """One simulated user: ``index`` rows into the pooled data set, their ``draws`` per shots
    count (positions into ``index``) and their held-out positions."""

    name: str
    index: np.ndarray
    classes: tuple
    draws: dict
    held_out: np.ndarray
    seed: int


def user_seed(seed: int, position: int) -> int:
    """A per-user seed that depends only on the plan seed and the user's position."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


def _read_npz(path: Path, users: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            for key in ("x", "y"):
                if key not in names:
                    raise ConfigError(
                        f"{path}: the .npz must hold arrays 'x' and 'y'; it has "
                        f"{', '.join(names) or 'none'}"
                    )
            if users is not None and users not in names:
                raise ConfigError(
                    f"{path}: no user column {users!r}; the .npz has {', '.join(names)}"
                )
            x, y = data["x"], data["y"]
            column = data[users] if users is not None else None
    except ConfigError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"{path}: cannot read the .npz ({exc}); write it with numpy.savez("
            "path, x=..., y=..., user=...) of numeric or string arrays"
        ) from None
    if len(x) == 0 or len(x) != len(y) or (column is not None and len(column) != len(y)):
        raise ConfigError(
            f"{path}: 'x', 'y' and the user column must hold the same, non-zero "
            f"number of examples (got {len(x)}, {len(y)}"
            + (f", {len(column)})" if column is not None else ")")
        )
    return x, y, column


def load_users_npz(path: PathLike, column: str) -> tuple[Dataset, np.ndarray]:
    """The pooled data and each example's user from an ``.npz`` with ``x``, ``y``, ``column``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (give an .npz with x, y and a user column)")
    x, y, users = _read_npz(path, column)
    assert users is not None
    return Dataset(x, y), users


def load_npz(path: PathLike) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (give an .npz with x and y)")
    x, y, _ = _read_npz(path, None)
    return Dataset(x, y)


def load_users_dir(
    folder: PathLike, model: Any, labels: list | None, string_labels: bool
) -> tuple[Dataset, np.ndarray]:
    """One subfolder per user, each holding one subfolder of images per label (the layout
    ``simulate`` reads); ``labels`` are the model's class labels (None: any label)."""
    from ..runtime.simulate import data_layout, load_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder (give one subfolder per user)")
    layout = data_layout(model)
    xs, ys, owners = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        x, y = load_folder(sub, layout, labels, string_labels)
        xs.append(x)
        ys.extend(y)
        owners.extend([sub.name] * len(y))
    if not xs:
        raise ConfigError(f"{folder}: no user folders found; expected one subfolder per user")
    return Dataset(np.concatenate(xs), np.asarray(ys)), np.asarray(owners)


def split_shared(
    data: Dataset, users: np.ndarray, fraction: float, seed: int
) -> tuple[Dataset, np.ndarray, Dataset]:
    """Hold out ``fraction`` of the examples (seeded) as the shared set nobody teaches."""
    if not 0 < fraction < 1:
        raise ConfigError(f"shared fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    shared = np.zeros(len(data), bool)
    shared[rng.permutation(len(data))[: max(1, int(round(len(data) * fraction)))]] = True
    return data.take(~shared), users[~shared], data.take(shared)


def split_replay(held: Dataset, count: int, seed: int) -> tuple[Dataset, Dataset]:
    """Set ``count`` examples of the shared set aside as the replay store (what an app would
    ship in its bundle), class-balanced and seeded; the rest stays the shared held-out set.

    The store is ordered round robin over the classes, so its first ``n`` examples are the
    ``n``-example store: every replay count in a grid draws from one store, and no candidate
    is scored on an example it trained on.
    """
    if count <= 0:
        return held, held.take(np.zeros(0, dtype=np.int64))
    if count >= len(held):
        raise ConfigError(
            f"replay {count} needs more than {count} shared examples (it has {len(held)}): "
            "the store comes out of the shared set, which must keep examples to score on; "
            "lower the replay count or give a larger --shared set"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x4E9A]))
    labels = held.y.astype(str)
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    store: list[int] = []
    while len(store) < count:
        for queue in queues:
            if queue and len(store) < count:
                store.append(int(queue.pop(0)))
    chosen = np.asarray(store)
    keep = np.ones(len(held), bool)
    keep[chosen] = False
    return held.take(np.flatnonzero(keep)), held.take(chosen)


def make_users(
    labels: np.ndarray, owners: np.ndarray, shots: Sequence[int], seed: int
) -> list[SimUser]:
    """Check every user can teach ``max(shots)`` examples per class and keep one to score,
    then draw each user's examples."""
    if not shots or any(int(s) < 1 for s in shots):
        raise ConfigError(f"shots must be positive integers, got {list(shots)}")
    most = max(int(s) for s in shots)
    names = list(dict.fromkeys(owners.tolist()))
    if not names:
        raise ConfigError("the data set has no users")
    result = []
    for position, name in enumerate(sorted(names, key=str)):
        index = np.flatnonzero(owners == name)
        y = labels[index]
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise ConfigError(
                f"user {name!r} has one class ({classes[0]!r}); a simulated user "
                "must teach at least two classes: merge or drop this user"
            )
        short = [
            (c, n) for c, n in zip(classes.tolist(), counts.tolist(), strict=True) if n < most + 1
        ]
        if short:
            label, count = short[0]
            raise ConfigError(
                f"user {name!r} has {count} example(s) of class {label!r}; shots up "
                f"to {most} need {most + 1} per class ({most} to teach, 1 to score): "
                "lower the largest shots value or drop this user"
            )
        seed_u = user_seed(seed, position)
        rng = np.random.default_rng(seed_u)
        orders = {c: rng.permutation(np.flatnonzero(y == c)) for c in classes.tolist()}
        draws = {
            int(s): np.sort(np.concatenate([orders[c][: int(s)] for c in orders])) for s in shots
        }
        held = np.sort(np.concatenate([orders[c][most:] for c in orders]))
        result.append(SimUser(str(name), index, tuple(classes.tolist()), draws, held, seed_u))
    return result
