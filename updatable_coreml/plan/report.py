"""Summaries of a plan: the table, the plots, the recommendation and its reasons."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..spec_io import atomic_write_bytes
from .candidates import Candidate

GOOD_MARGIN = 0.02  # candidates within this of the best score make the "good region"
COLUMNS = (
    "candidate",
    "name",
    "kind",
    "trainable",
    "lr",
    "epochs",
    "batch",
    "k",
    "weighting",
    "replay",
    "shots",
    "users",
    "user_accuracy_mean",
    "user_accuracy_std",
    "user_accuracy_min",
    "user_accuracy_p10",
    "rest_accuracy_mean",
    "rest_accuracy_std",
    "rest_accuracy_min",
    "update_macs",
    "predict_macs",
    "assumptions",
)


def _stats(values: Sequence[float | None], prefix: str) -> dict:
    present = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(present):
        return {
            f"{prefix}_mean": None,
            f"{prefix}_std": None,
            f"{prefix}_min": None,
            f"{prefix}_p10": None,
        }
    return {
        f"{prefix}_mean": float(present.mean()),
        f"{prefix}_std": float(present.std()),
        f"{prefix}_min": float(present.min()),
        f"{prefix}_p10": float(np.percentile(present, 10)),
    }


def summarize(
    rows: list[dict], candidates: list[Candidate], costs: dict, assumptions_name: str
) -> list[dict]:
    """One line per candidate x shots: mean, spread and worst user, and the costs."""
    table = []
    for index, candidate in enumerate(candidates):
        mine = [r for r in rows if r["candidate"] == index]
        for shots in sorted({r["shots"] for r in mine}):
            at = [r for r in mine if r["shots"] == shots]
            line = {"candidate": index, **candidate.to_dict(), "shots": shots, "users": len(at)}
            line.update(_stats([r["user_accuracy"] for r in at], "user_accuracy"))
            rest = _stats([r["rest_accuracy"] for r in at], "rest_accuracy")
            line.update({k: v for k, v in rest.items() if not k.endswith("_p10")})
            examples = int(np.mean([r["examples"] for r in at]))
            line["update_macs"], line["predict_macs"] = costs[index](examples)
            line["assumptions"] = assumptions_name
            table.append(line)
    return table


def scores(table: list[dict]) -> dict[int, float]:
    """A candidate's score: mean user accuracy averaged over the shots counts (each shots
    count weighs the same, so a setup must help at few examples too)."""
    by: dict[int, list] = {}
    for line in table:
        by.setdefault(line["candidate"], []).append(line["user_accuracy_mean"])
    return {index: float(np.mean(values)) for index, values in by.items()}


def rest_scores(table: list[dict]) -> dict[int, float | None]:
    by: dict[int, list] = {}
    for line in table:
        if line["rest_accuracy_mean"] is not None:
            by.setdefault(line["candidate"], []).append(line["rest_accuracy_mean"])
    return {
        line["candidate"]: (
            float(np.mean(by[line["candidate"]])) if line["candidate"] in by else None
        )
        for line in table
    }


def recommend(table: list[dict], candidates: list[Candidate], max_forgetting: float | None) -> dict:
    """The best candidate by score (ties: cheaper update, then grid order), the reasons, and
    the good region (same family, score within ``GOOD_MARGIN`` of the best)."""
    score, rest = scores(table), rest_scores(table)
    macs = {line["candidate"]: line["update_macs"] for line in table}
    none = next(i for i, c in enumerate(candidates) if c.kind == "none")
    shipped = next(i for i, c in enumerate(candidates) if c.shipped)
    allowed = list(score)
    excluded = []
    base_rest = rest[none]
    if max_forgetting is not None and base_rest is not None:
        floor = base_rest - max_forgetting
        excluded = [i for i in allowed if (rest[i] or 0.0) < floor]
        allowed = [i for i in allowed if i not in excluded] or [none]
    best = min(allowed, key=lambda i: (-score[i], macs[i], i))
    chosen = candidates[best]
    reasons = [
        f"{chosen.name}: mean user accuracy {score[best]:.3f} over the shots counts, "
        f"against {score[shipped]:.3f} for the export's defaults "
        f"({candidates[shipped].name})"
        f" and {score[none]:.3f} without any update"
    ]
    if rest[best] is not None:
        reasons.append(
            f"accuracy on the classes users did not teach: {rest[best]:.3f} "
            f"(shipped defaults {rest[shipped] if rest[shipped] is not None else 0:.3f},"
            f" no update {rest[none]:.3f})"
        )
        if chosen.kind == "knn" and not chosen.replay:
            reasons.append(
                "a k-NN shipped without examples only knows the classes the user "
                "taught; seed it with examples of the other classes (--replay) to keep them"
            )
    if chosen.replay and chosen.kind == "knn":
        reasons.append(
            f"the k-NN ships holding {chosen.replay} stored examples of the classes the "
            "model knows (--write seeds it with them; also in replay.npz)"
        )
    elif chosen.replay:
        reasons.append(
            f"the app ships {chosen.replay} stored examples of the classes the model "
            "knows (replay.npz in the plan folder) and adds them to every update"
        )
    if excluded:
        reasons.append(
            f"{len(excluded)} candidate(s) excluded: they lose more than "
            f"{max_forgetting:.2f} accuracy on the other classes"
        )
    worst = [line for line in table if line["candidate"] == best]
    reasons.append(
        "worst user per shots: "
        + ", ".join(f"{line['shots']}: {line['user_accuracy_min']:.3f}" for line in worst)
    )
    good = [
        i
        for i in allowed
        if score[i] >= score[best] - GOOD_MARGIN
        and candidates[i].kind == chosen.kind
        and candidates[i].trainable == chosen.trainable
        and candidates[i].replay == chosen.replay  # the app ships one store
    ]
    region = _region([candidates[i] for i in good])
    reasons.append(
        f"{len(good)} candidate(s) of this family score within {GOOD_MARGIN} of "
        "the "
        f"best; the allowed ranges cover them: {json.dumps(region)}"
    )
    return {
        "candidate": best,
        "name": chosen.name,
        "setup": chosen.to_dict(),
        "score": score[best],
        "shipped_score": score[shipped],
        "no_update_score": score[none],
        "rest_score": rest[best],
        "reasons": reasons,
        "allowed": region,
        "good_candidates": good,
    }


def _region(good: list[Candidate]) -> dict:
    if good[0].kind == "knn":
        ks = [c.k or 1 for c in good]
        return {"k": [min(ks), max(ks)]}
    if good[0].kind == "none":
        return {}
    lrs = [c.lr or 0.0 for c in good]
    return {
        "epochs": sorted({c.epochs for c in good}),
        "miniBatchSize": sorted({c.batch for c in good}),
        "learningRate": [min(lrs), max(lrs)],
    }


# -- files -------------------------------------------------------------------------------------


def write_csv(table: list[dict], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for line in table:
        writer.writerow({k: ("" if line.get(k) is None else line.get(k)) for k in COLUMNS})
    return atomic_write_bytes(buffer.getvalue().encode(), path)


def write_json(data: Any, path: Path) -> Path:
    return atomic_write_bytes((json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), path)


def write_plot(
    table: list[dict], candidates: list[Candidate], chosen: int, path: Path, top: int = 4
) -> Path:
    """Accuracy on the users' classes and on the rest against shots, for the recommended,
    the shipped defaults, no update and the best few others; bands are the 10th-90th
    percentile spread over users (user accuracy) or one standard deviation (rest)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    score = scores(table)
    shipped = next(i for i, c in enumerate(candidates) if c.shipped)
    none = next(i for i, c in enumerate(candidates) if c.kind == "none")
    others = sorted((i for i in score if i not in (chosen, shipped, none)), key=lambda i: -score[i])
    shown = list(dict.fromkeys([chosen, shipped, none] + others[: max(0, top - 3)]))
    figure = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    for index in shown:
        lines = [line for line in table if line["candidate"] == index]
        shots = [line["shots"] for line in lines]
        label = ("recommended: " if index == chosen else "") + candidates[index].name
        for ax, key in zip(axes, ("user_accuracy", "rest_accuracy"), strict=True):
            means = [line[f"{key}_mean"] for line in lines]
            if any(m is None for m in means):
                continue
            (curve,) = ax.plot(
                shots, means, marker="o", label=label, linewidth=2.5 if index == chosen else 1.2
            )
            std = np.asarray([line[f"{key}_std"] for line in lines])
            ax.fill_between(
                shots,
                np.clip(np.asarray(means) - std, 0, 1),
                np.clip(np.asarray(means) + std, 0, 1),
                color=curve.get_color(),
                alpha=0.12,
            )
    axes[0].set_title("users' own held-out examples")
    axes[1].set_title("shared held-out, classes the user did not teach")
    if all(line["rest_accuracy_mean"] is None for line in table):
        axes[1].text(
            0.5,
            0.5,
            "every user taught every class:\nno class left to measure forgetting on",
            ha="center",
            va="center",
            transform=axes[1].transAxes,
        )
    ticks = sorted({line["shots"] for line in table})
    for ax in axes:
        ax.set_xlabel("examples per class")
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("accuracy (mean, band: ±1 std over users)")
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write_bytes(buffer.getvalue(), path)


def text(table: list[dict], recommendation: dict, assumptions_name: str) -> str:
    """The human summary the CLI prints."""
    lines = [f"runtime assumptions: {assumptions_name}", f"recommended: {recommendation['name']}"]
    lines += [f"  - {reason}" for reason in recommendation["reasons"]]
    return "\n".join(lines)
