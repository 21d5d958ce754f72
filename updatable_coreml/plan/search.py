"""Optuna's search as an alternative to the full grid (``plan(search="optuna")``).

A grid costs the product of its lists; a search spends a fixed number of trials where the
results point. The grid's lists become the search space: the learning rate is searched
log-uniformly between the grid's smallest and largest value, epochs and ``k`` as integers
between theirs, batch sizes, weightings, which layers train and replay counts as the listed
choices. Each trial is one candidate, trained and scored for every user exactly as in a grid
plan (same jobs, same score), so the table, the recommendation and ``--write`` work alike.

Deterministic for a seed: Optuna's TPE sampler is seeded with the plan seed and trials are
asked and told one at a time in order; only the user runs inside a trial are spread over
workers, and those are pure functions of their arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError
from .candidates import Candidate, Grid, setup_key

#: ``evaluate([(index, candidate), ...]) -> rows`` of those candidates for every user
Evaluate = Callable[[list], list]


def _space(grid: Grid, updatable_layers: int) -> dict[str, Any]:
    trainable = [t for t in dict.fromkeys(grid.trainable) if t == "all" or updatable_layers > 1]
    families = []
    if grid.lrs and grid.epochs and grid.batches and trainable:
        families.append("head")
    if grid.ks and grid.weightings:
        families.append("knn")
    if not families:
        raise ConfigError(
            "the search has nothing to try: give learning rates, epochs and batch sizes "
            "(network head) or k values and weightings (k-NN)"
        )
    return {"families": families, "trainable": trainable}


def suggest(trial: Any, grid: Grid, space: dict[str, Any]) -> Candidate:
    """One candidate from an Optuna trial, within the grid's bounds and choices."""
    replay = int(trial.suggest_categorical("replay", sorted({int(r) for r in grid.replays})))
    family = trial.suggest_categorical("family", space["families"])
    if family == "knn":
        k = trial.suggest_int("k", int(min(grid.ks)), int(max(grid.ks)))
        weighting = trial.suggest_categorical("weighting", list(dict.fromkeys(grid.weightings)))
        return Candidate("knn", "last", k=k, weighting=weighting, replay=replay)
    low, high = float(min(grid.lrs)), float(max(grid.lrs))
    lr = trial.suggest_float("lr", low, high, log=True) if low < high else low
    return Candidate(
        "head",
        trial.suggest_categorical("trainable", space["trainable"]),
        float(f"{lr:.3g}"),  # three digits: a readable default, and near-duplicates merge
        trial.suggest_int("epochs", int(min(grid.epochs)), int(max(grid.epochs))),
        int(trial.suggest_categorical("batch", sorted({int(b) for b in grid.batches}))),
        replay=replay,
    )


def score(rows: list[dict], index: int) -> float:
    """The plan's score of one candidate (``report.scores``): mean user accuracy per shots
    count, averaged over the shots counts."""
    by: dict[int, list] = {}
    for row in rows:
        if row["candidate"] == index and row["user_accuracy"] is not None:
            by.setdefault(row["shots"], []).append(row["user_accuracy"])
    return float(np.mean([np.mean(values) for values in by.values()]))


def optuna_search(
    grid: Grid,
    shipped: Candidate,
    updatable_layers: int,
    trials: int,
    seed: int,
    evaluate: Evaluate,
) -> tuple[list[Candidate], list[dict]]:
    """The shipped defaults and no update, then ``trials`` candidates chosen by TPE; returns
    every distinct candidate tried and their rows."""
    import optuna

    if trials < 1:
        raise ConfigError(f"trials must be at least 1, got {trials}")
    grid.check()
    space = _space(grid, updatable_layers)
    found = [shipped, Candidate("none")]
    rows = evaluate(list(enumerate(found)))
    known = {setup_key(c): i for i, c in enumerate(found)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    for _ in range(trials):
        trial = study.ask()
        candidate = suggest(trial, grid, space)
        index = known.get(setup_key(candidate))
        if index is None:  # a repeat is told its known score, not trained again
            index = known[setup_key(candidate)] = len(found)
            found.append(candidate)
            rows += evaluate([(index, candidate)])
        study.tell(trial, score(rows, index))
    rows.sort(key=lambda r: (r["candidate"], r["user_position"], r["shots"]))
    return found, rows
