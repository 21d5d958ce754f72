"""``plan``: decide the on-device training setup from data before shipping it.

Simulated users (``users``; from an ``.npz``, a CSV (``tables``) or one folder per user) each
teach a few examples per class; every candidate setup (``candidates``: the network head under
a grid of update parameters, the updatable k-NN, either with a replay store of known-class
examples, the export's own defaults, no update; or Optuna's choice within the grid's bounds,
``search``) is trained and scored for every user by the reference runtime (``run``), the frozen
part's features computed once. The result (``report``) is a table, plots, a recommendation with
its reasons, and optionally the model written with the chosen defaults and allowed ranges,
validated and checked to simulate to the reported numbers (``write``). Every result names the
runtime assumptions it was computed under.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelFileError
from .candidates import Candidate, Grid, candidates
from .report import recommend, summarize, text, write_csv, write_json, write_plot
from .run import Job, build_heads, run_jobs, single_input
from .tables import Columns, load_csv
from .users import (
    Dataset,
    load_npz,
    load_users_dir,
    load_users_npz,
    make_users,
    split_replay,
    split_shared,
)
from .write import write_model, write_npz

PathLike = str | os.PathLike
ALL = "all"  # every preset: says whether the recommendation depends on Core ML's unknowns
SEARCHES = ("grid", "optuna")  # every grid candidate, or Optuna's trials within its bounds
__all__ = ["plan", "PlanResult", "Grid", "Candidate"]


def _is_csv(path: PathLike) -> bool:
    return Path(path).suffix.lower() == ".csv"


@dataclass
class PlanResult:
    table: list[dict]
    rows: list[dict]
    candidates: list[Candidate]
    recommendation: dict
    assumptions: str
    files: dict = field(default_factory=dict)
    verification: dict | None = None
    robustness: dict | None = None  # preset -> its recommendation (assumptions="all")

    def summary(self) -> str:
        lines = [text(self.table, self.recommendation, self.assumptions)]
        if self.robustness:
            names = {entry["recommended"] for entry in self.robustness.values()}
            verdict = (
                "the same under every preset"
                if len(names) == 1
                else "CHANGES with Core ML's unknown behaviours"
            )
            lines.append(f"recommendation {verdict}:")
            lines += [
                f"  {preset}: {entry['recommended']} (score {entry['score']:.3f})"
                for preset, entry in self.robustness.items()
            ]
        if self.verification:
            lines.append(
                f"written: {self.verification['path']} (valid; simulates to the "
                f"reported numbers within {self.verification['max_difference']:.2g})"
            )
        lines += [f"{kind}: {path}" for kind, path in self.files.items()]
        return "\n".join(lines)


def _presets() -> dict:
    """The runtime's named assumption sets (``runtime.assumptions.PRESETS``)."""
    from ..runtime import assumptions as module

    presets = dict(getattr(module, "PRESETS", {}))
    if not presets:
        presets["default"] = module.DEFAULT
    return presets


def resolve_assumptions(assumptions: Any) -> tuple[str, Any]:
    """A preset name, ``"default"`` (the runtime's default preset) or an ``Assumptions``;
    returns the preset's name and value."""
    from ..runtime import assumptions as module

    presets = _presets()
    if assumptions is None or assumptions == "default":
        name = next((n for n, v in presets.items() if v == module.DEFAULT), "default")
        return name, module.DEFAULT
    if isinstance(assumptions, str):
        if assumptions not in presets:
            raise ConfigError(
                f"unknown assumptions preset {assumptions!r}; use one of "
                f"{', '.join(presets)}, default or {ALL!r}"
            )
        return assumptions, presets[assumptions]
    name = next((n for n, v in presets.items() if v == assumptions), None)
    return (name or f"custom ({assumptions})"), assumptions


def require(module: str, extra: str) -> None:
    """Refuse before any work when an optional dependency is missing."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"plan needs {module} for this; install it with pip install 'updatable-coreml[{extra}]'"
        )


def _model_labels(network) -> list:
    if not network.is_classifier:
        raise ModelFileError(
            "plan compares classifiers: the model must be a neural network "
            "classifier (or a pipeline ending in one)"
        )
    return network.class_labels()


def _as_labels(y: np.ndarray, labels: list, where: str) -> np.ndarray:
    """``y`` in the model's label type; a label the model does not have is refused."""
    known = {str(v): v for v in labels}
    unknown = sorted({str(v) for v in y.tolist()} - set(known))
    if unknown:
        shown = ", ".join(map(repr, labels[:8])) + (", ..." if len(labels) > 8 else "")
        raise ConfigError(
            f"{where}: label {unknown[0]!r} is not one of the model's class labels ({shown})"
        )
    if all(isinstance(v, str) for v in labels):
        return np.asarray([str(v) for v in y.tolist()])
    return np.asarray([known[str(v)] for v in y.tolist()], dtype=np.int64)


def _costs(candidate: Candidate, heads: dict, partial_batch: str):
    """``examples -> (update multiply-adds, prediction multiply-adds per example)``."""

    def cost(n: int) -> tuple[int, int]:
        n += candidate.replay  # the stored examples train (and go through the prefix) too
        if candidate.kind == "knn":
            head = heads["last"]
            dims = int(np.prod(next(iter(head.features.values())).shape[1:]))
            return n * head.prefix_macs, head.prefix_macs + n * dims
        head = heads[candidate.trainable]
        predict = head.prefix_macs + head.forward_macs
        if candidate.kind == "none":
            return 0, predict
        b = candidate.batch or 1
        per_epoch = {"wrap": -(-n // b) * b, "short": n, "drop": n - n % b}[partial_batch]
        return (
            n * head.prefix_macs + (candidate.epochs or 0) * per_epoch * head.train_macs,
            predict,
        )

    return cost


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def plan(
    model_path: PathLike,
    data: PathLike | None = None,
    *,
    users: str = "user",
    label: str = "label",
    image_column: str = "image",
    features: Sequence[str] | None = None,
    users_dir: PathLike | None = None,
    output: PathLike = "plan",
    shots: Sequence[int] = (1, 2, 5),
    grid: Grid | None = None,
    shared: PathLike | None = None,
    shared_fraction: float = 0.2,
    seed: int = 0,
    assumptions: Any = "default",
    n_jobs: int = -1,
    backend: str | None = None,
    plots: bool = True,
    write: PathLike | None = None,
    max_forgetting: float | None = None,
    chunk: int = 8,
    verbose: int = 0,
    search: str = "grid",
    trials: int = 30,
) -> PlanResult:
    """Compare on-device training setups on simulated users; see the module docstring.

    ``data`` is an ``.npz`` with ``x``, ``y`` and the ``users`` column; or a ``.csv`` with the
    ``users`` and ``label`` columns and either feature columns (``features``, default every
    other column) or, for an image input, the ``image_column`` of paths relative to the CSV;
    or ``users_dir`` one folder per user (label subfolders of images). ``shared`` is an
    ``.npz`` or ``.csv`` (no user column) held out for everyone; without it
    ``shared_fraction`` of the examples is. ``backend`` is any joblib
    backend name (``loky``, ``threading``, ``dask``...); results do not depend on it.
    ``search="optuna"`` tries ``trials`` candidates chosen by Optuna within the grid's bounds
    instead of the whole grid (``plan.search``; needs the ``optuna`` extra).
    """
    from ..runtime import load
    from ..spec_io import check_output_path

    if plots:
        require("matplotlib", "plot")
    if n_jobs != 1 or backend is not None:
        require("joblib", "plan")
    if search not in SEARCHES:
        raise ConfigError(f"unknown search {search!r}; use one of {', '.join(SEARCHES)}")
    if search == "optuna":
        require("optuna", "optuna")
    every = assumptions == ALL
    name, assume = resolve_assumptions(None if every else assumptions)
    out = Path(output)
    check_output_path(out / "plan.json" if out.exists() else out)
    if write is not None:
        check_output_path(write, not_same_as=model_path)
    if (data is None) == (users_dir is None):
        raise ConfigError(
            "give the data either as an .npz or CSV with a user column (data) or as one "
            "folder per user (users_dir), not both"
        )
    model = load(model_path)
    network = model.trainable()
    labels = _model_labels(network)
    label_name = model.description.predictedFeatureName
    description = single_input(model)
    columns = Columns(users, label, image_column, features)
    if users_dir is not None:
        pool, owners = load_users_dir(
            users_dir, model, labels, all(isinstance(v, str) for v in labels)
        )
        source = str(users_dir)
    else:
        assert data is not None  # checked above: exactly one of data and users_dir
        source = str(data)
        if _is_csv(data):
            pool, owners = load_csv(data, columns, description)
        else:
            pool, owners = load_users_npz(data, users)
    pool = Dataset(pool.x, _as_labels(pool.y, labels, source))
    if shared is not None:
        if _is_csv(shared):
            held, _ = load_csv(shared, columns, description, users=False)
        else:
            held = load_npz(shared)
        held = Dataset(held.x, _as_labels(held.y, labels, str(shared)))
    else:
        pool, owners, held = split_shared(pool, owners, shared_fraction, seed)
    sim_users = make_users(pool.y, owners, shots, seed)
    grid = grid or Grid()
    grid.check()
    held, store = split_replay(held, max((int(r) for r in grid.replays), default=0), seed)

    updatable = [layer for layer in network.layers if layer.isUpdatable]
    choices = ["all", "last"] if len(updatable) > 1 else ["all"]
    heads = build_heads(model, np.concatenate([pool.x, held.x, store.x]), choices, assume)
    if "last" not in heads:
        heads["last"] = heads["all"]
    if grid.ks and len(heads["last"].frontier) != 1:
        raise ConfigError(
            "the k-NN candidates need the last updatable layer to read one blob; "
            "this model's reads several: pass a grid without k values"
        )
    from ..runtime.update import read_training_setup

    setup = read_training_setup(network, assume)
    defaults = {k: p.default for k, p in setup.parameters.items()}
    shipped = Candidate(
        "head",
        "all",
        float(defaults["learningRate"]),
        int(defaults["epochs"]),
        int(defaults["miniBatchSize"]),
        shipped=True,
    )

    parts = np.cumsum([len(pool), len(held)])

    def rows_of(part: slice) -> dict:
        return {t: {b: v[part] for b, v in h.features.items()} for t, h in heads.items()}

    feats = rows_of(slice(0, parts[0]))
    shared_feats = rows_of(slice(parts[0], parts[1]))
    store_feats = rows_of(slice(parts[1], None))

    def make_jobs(assume: Any, indexed: list[tuple[int, Candidate]]) -> list[Job]:
        jobs = []
        for position, user in enumerate(sim_users):
            own = {t: {b: v[user.index] for b, v in f.items()} for t, f in feats.items()}
            for part in _chunks(indexed, chunk):
                jobs.append(
                    Job(
                        user,
                        position,
                        pool.y[user.index],
                        own,
                        held.y,
                        shared_feats,
                        {t: h.spec for t, h in heads.items()},
                        tuple(part),
                        label_name,
                        assume,
                        store.y,
                        store_feats,
                    )
                )
        return jobs

    def evaluate(indexed: list[tuple[int, Candidate]]) -> list[dict]:
        jobs = make_jobs(assume, indexed)
        return run_jobs(jobs, n_jobs=n_jobs, backend=backend, verbose=verbose)

    if search == "optuna":
        from .search import optuna_search

        found, rows = optuna_search(grid, shipped, len(updatable), trials, seed, evaluate)
    else:
        found = candidates(grid, shipped, len(updatable))
        rows = evaluate(list(enumerate(found)))
    costs = {i: _costs(c, heads, assume.partial_batch) for i, c in enumerate(found)}
    table = summarize(rows, found, costs, name)
    choice = recommend(table, found, max_forgetting)
    result = PlanResult(table, rows, found, choice, name)
    if every:
        result.robustness = {name: {"recommended": choice["name"], "score": choice["score"]}}
        for other, value in _presets().items():
            if other == name:
                continue
            other_jobs = make_jobs(value, list(enumerate(found)))
            other_rows = run_jobs(other_jobs, n_jobs=n_jobs, backend=backend)
            other_costs = {i: _costs(c, heads, value.partial_batch) for i, c in enumerate(found)}
            other_choice = recommend(
                summarize(other_rows, found, other_costs, other), found, max_forgetting
            )
            result.robustness[other] = {
                "recommended": other_choice["name"],
                "score": other_choice["score"],
            }

    out.mkdir(parents=True, exist_ok=True)
    if write is not None:
        result.verification = write_model(
            model_path,
            write,
            found[choice["candidate"]],
            choice,
            heads,
            pool,
            held,
            store,
            sim_users,
            rows,
            label_name,
            assume,
        )
    chosen = found[choice["candidate"]]
    if chosen.replay:  # what the app ships to mix into every update
        stored = store.take(np.arange(chosen.replay))
        result.files["replay"] = str(write_npz(stored, out / "replay.npz"))
    result.files["table"] = str(write_csv(table, out / "plan.csv"))
    if plots:
        result.files["plot"] = str(write_plot(table, found, choice["candidate"], out / "plan.png"))
    summary = {
        "model": str(model_path),
        "data": source,
        "assumptions": name,
        "seed": seed,
        "search": search if search == "grid" else f"{search} ({trials} trials)",
        "shots": [int(s) for s in shots],
        "users": [u.name for u in sim_users],
        "shared_examples": len(held),
        "replay_store": len(store),
        "candidates": [c.to_dict() for c in found],
        "table": table,
        "runs": rows,
        "recommendation": choice,
        "verification": result.verification,
        "robustness": result.robustness,
        "macs": "multiply-adds of convolution and "
        "inner-product layers; the frozen part counted once per example",
    }
    result.files["json"] = str(write_json(summary, out / "plan.json"))
    return result
