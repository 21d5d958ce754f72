"""The candidates a plan compares: the network head under a grid of update parameters, the
updatable k-NN under a grid of ``k`` and weighting, the model as shipped, and no update.

Each head and k-NN setup can also *replay*: the app ships ``replay`` stored examples of the
classes the model already knows and mixes them into every user's update, the usual guard
against a head forgetting those classes while it learns the user's (the demo's ``--replay``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import product

from ..errors import ConfigError

KINDS = ("none", "head", "knn")
TRAINABLE = ("all", "last")
WEIGHTINGS = ("uniform", "inverse_distance")


@dataclass(frozen=True)
class Candidate:
    """One on-device setup. ``trainable``: which updatable layers train (``all`` as shipped,
    or only the ``last`` one); ``shipped`` marks the export's own defaults."""

    kind: str
    trainable: str = "all"
    lr: float | None = None
    epochs: int | None = None
    batch: int | None = None
    k: int | None = None
    weighting: str | None = None
    shipped: bool = False
    replay: int = 0  # stored examples of the known classes mixed into every update

    @property
    def name(self) -> str:
        if self.kind == "none":
            return "no update"
        tail = f" replay={self.replay}" if self.replay else ""
        if self.kind == "knn":
            return f"k-NN k={self.k} {self.weighting}{tail}"
        tag = "shipped defaults: " if self.shipped else ""
        return (
            f"{tag}head[{self.trainable}] lr={self.lr:g} epochs={self.epochs} "
            f"batch={self.batch}{tail}"
        )

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class Grid:
    """What to try; every list may be empty to skip that family."""

    lrs: Sequence[float] = (0.003, 0.01, 0.03, 0.1)
    epochs: Sequence[int] = (5, 10, 20)
    batches: Sequence[int] = (4, 8)
    trainable: Sequence[str] = ("all", "last")
    ks: Sequence[int] = (1, 3, 5)
    weightings: Sequence[str] = WEIGHTINGS
    replays: Sequence[int] = (0,)

    def check(self) -> None:
        for name, values, ok in (
            ("replays", self.replays, lambda v: int(v) == v and v >= 0),
            ("lrs", self.lrs, lambda v: v > 0),
            ("epochs", self.epochs, lambda v: int(v) == v and v >= 1),
            ("batches", self.batches, lambda v: int(v) == v and v >= 1),
            ("ks", self.ks, lambda v: int(v) == v and v >= 1),
        ):
            bad = [v for v in values if not ok(v)]
            if bad:
                raise ConfigError(
                    f"grid {name}: {bad[0]!r} is not allowed (positive numbers; "
                    "epochs, batch sizes and k are integers; replay counts may be 0)"
                )
        for value in self.trainable:
            if value not in TRAINABLE:
                raise ConfigError(f"grid trainable: {value!r} is not one of {', '.join(TRAINABLE)}")
        for value in self.weightings:
            if value not in WEIGHTINGS:
                raise ConfigError(
                    f"grid weighting: {value!r} is not one of {', '.join(WEIGHTINGS)}"
                )


def candidates(grid: Grid, shipped: Candidate, updatable_layers: int) -> list[Candidate]:
    """The shipped setup first, then no update, the head grid and the k-NN grid (duplicates of
    the shipped setup dropped). ``last`` is only distinct with several updatable layers."""
    grid.check()
    trainable = [t for t in dict.fromkeys(grid.trainable) if t == "all" or updatable_layers > 1]
    found: list[Candidate] = [shipped, Candidate("none")]
    replays = list(dict.fromkeys(int(r) for r in grid.replays)) or [0]
    for r, t, lr, epochs, batch in product(replays, trainable, grid.lrs, grid.epochs, grid.batches):
        found.append(Candidate("head", t, float(lr), int(epochs), int(batch), replay=r))
    for r, k, weighting in product(replays, grid.ks, grid.weightings):
        found.append(Candidate("knn", "last", k=int(k), weighting=weighting, replay=r))
    unique: list[Candidate] = []
    for candidate in found:
        same = [c for c in unique if setup_key(c) == setup_key(candidate)]
        if not same:
            unique.append(candidate)
    return unique


def setup_key(candidate: Candidate) -> tuple:
    return (
        candidate.kind,
        candidate.trainable,
        candidate.lr,
        candidate.epochs,
        candidate.batch,
        candidate.k,
        candidate.weighting,
        candidate.replay,
    )
