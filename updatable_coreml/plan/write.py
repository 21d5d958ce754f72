"""Writing the recommended model and checking it: the written file, trained by the runtime on
every user's draws (and the replay store, when the recommendation replays), must give the
accuracies the plan reported, or nothing is claimed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFileError
from .candidates import Candidate
from .users import Dataset

PathLike = str | os.PathLike


def _set_int(message, default: int, values: Sequence[int]) -> None:
    message.defaultValue = int(default)
    allowed = message.WhichOneof("AllowedValues")
    if allowed:
        message.ClearField(allowed)
    message.set.values.extend(sorted({int(v) for v in values} | {int(default)}))


def _set_float(message, default: float, low: float, high: float) -> None:
    message.defaultValue = float(default)
    allowed = message.WhichOneof("AllowedValues")
    if allowed:
        message.ClearField(allowed)
    message.range.minValue = float(min(low, default))
    message.range.maxValue = float(max(high, default))


def head_model_spec(model_path: PathLike, candidate: Candidate, region: dict):
    """The shipped spec with the chosen trainable layers, defaults and allowed ranges."""
    from ..spec_io import load_spec, model_type, neural_network

    spec = load_spec(model_path)
    target = spec
    if model_type(spec).startswith("pipeline"):
        kind = model_type(spec)
        pipeline = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        target = pipeline.models[-1]
    nn = neural_network(target)
    if candidate.kind == "head":
        if candidate.trainable == "last":
            updatable = [layer for layer in nn.layers if layer.isUpdatable]
            for layer in updatable[:-1]:
                layer.isUpdatable = False
        params = nn.updateParams
        optimizer = getattr(params.optimizer, params.optimizer.WhichOneof("OptimizerType"))
        _set_int(params.epochs, candidate.epochs or 1, region.get("epochs", []))
        _set_int(optimizer.miniBatchSize, candidate.batch or 1, region.get("miniBatchSize", []))
        low, high = region.get("learningRate", [candidate.lr, candidate.lr])
        _set_float(optimizer.learningRate, candidate.lr or 0.0, low, high)
    return spec


def write_model(
    model_path: PathLike,
    path: PathLike,
    candidate: Candidate,
    choice: dict,
    heads: dict,
    pool: Dataset,
    held: Dataset,
    store: Dataset,
    users: list,
    rows: list[dict],
    label_name: str,
    assume: Any,
) -> dict:
    """Write the recommended model (validated, atomically) and check that the runtime,
    training the *written file* on each user's examples, gives the reported accuracies."""
    from ..spec_io import save_spec
    from ..validator import is_valid, validate

    region = choice["allowed"]
    if candidate.kind == "knn":
        from ..knn import export_knn

        k_low, k_high = region.get("k", [candidate.k, candidate.k])
        labels_int = pool.y.dtype.kind in "iu"
        stored = store.take(np.arange(candidate.replay))
        export_knn(
            str(model_path),
            path,
            feature_layer=heads["last"].frontier[0],
            k=candidate.k or 1,
            k_range=(k_low, k_high),
            weighting=candidate.weighting or "uniform",
            labels="int" if labels_int else "string",
            label_name=label_name,
            # a replaying k-NN ships knowing the stored examples (what the plan simulated)
            initial_examples=(stored.x, stored.y.tolist()) if candidate.replay else None,
        )
    else:
        spec = head_model_spec(model_path, candidate, region)
        findings = validate(spec)
        if not is_valid(findings):
            first = next(f for f in findings if f.severity == "error")
            raise ModelFileError(
                f"the recommended model would be invalid ({first}); nothing written"
            )
        save_spec(spec, path, not_same_as=model_path)
    findings = validate(path)
    if not is_valid(findings):  # export_knn validates too; this guards both paths
        raise ModelFileError(f"{path}: the written model is invalid: {findings[0]}")
    return verify(
        path, candidate, choice["candidate"], pool, held, store, users, rows, label_name, assume
    )


def verify(
    path: PathLike,
    candidate: Candidate,
    index: int,
    pool: Dataset,
    held: Dataset,
    store: Dataset,
    users: list,
    rows: list[dict],
    label_name: str,
    assume: Any,
) -> dict:
    """Train the written model (its own defaults) on every user's draws (a head: followed by
    the first ``candidate.replay`` stored examples; a k-NN was written holding them) and
    compare the accuracies with the plan's rows for ``index``."""
    from ..runtime import load

    model = load(path)
    input_name = model.description.input[0].name
    reported = {(r["user"], r["shots"]): r for r in rows if r["candidate"] == index}
    worst = 0.0
    for user in users:
        x, y = pool.x[user.index], pool.y[user.index]
        rest = ~np.isin(held.y.astype(str), np.asarray(user.classes).astype(str))
        for shots, drawn in sorted(user.draws.items()):
            trained = model
            if candidate.kind != "none":
                examples = {input_name: x[drawn], label_name: y[drawn]}
                if candidate.replay and candidate.kind == "head":  # the user's, then the store
                    stored = store.take(np.arange(candidate.replay))
                    examples = {
                        input_name: np.concatenate([x[drawn], stored.x]),
                        label_name: np.concatenate([y[drawn], stored.y]),
                    }
                trained = model.update(examples, assumptions=assume).model
            mine = np.asarray(trained.predict({input_name: x[user.held_out]})[label_name])
            got = [float(np.mean(mine.astype(str) == y[user.held_out].astype(str)))]
            want = [reported[(user.name, shots)]["user_accuracy"]]
            if rest.any():
                theirs = np.asarray(trained.predict({input_name: held.x[rest]})[label_name])
                got.append(float(np.mean(theirs.astype(str) == held.y[rest].astype(str))))
                want.append(reported[(user.name, shots)]["rest_accuracy"])
            worst = max(worst, max(abs(a - b) for a, b in zip(got, want, strict=True)))
    if worst > 1e-9:
        raise ModelFileError(
            f"{path}: the written model simulates to accuracies up to {worst:.3g} "
            "away from the plan's; the plan and the file disagree (a bug: "
            "please report it)"
        )
    return {"path": str(path), "max_difference": worst, "runs": len(reported)}


def write_npz(data: Dataset, path: PathLike) -> Path:
    """``x`` and ``y`` as an ``.npz`` (atomically): the replay store an app ships."""
    import io

    from ..spec_io import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, x=data.x, y=data.y)
    return atomic_write_bytes(buffer.getvalue(), Path(path))
