"""plan: simulated users x candidate setups, trained by the reference runtime."""

from __future__ import annotations

import ast
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from plan_helpers import (
    CLI,
    cli_env,
    digits,
    digits_model,
    image_model,
    image_users,
    npz_to_csv,
    shared_npz,
    users_npz,
)
from updatable_coreml.errors import ConfigError
from updatable_coreml.plan import Grid, plan
from updatable_coreml.plan.search import score as search_score
from updatable_coreml.runtime import load
from updatable_coreml.validator import is_valid, validate

SMALL = Grid(
    lrs=(0.03, 0.1),
    epochs=(4,),
    batches=(4,),
    trainable=("all", "last"),
    ks=(1, 3),
    weightings=("uniform",),
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    return {
        "model": digits_model(root / "Digits.mlmodel"),
        "users": users_npz(root / "users.npz"),
        "shared": shared_npz(root / "shared.npz"),
        "root": root,
    }


def _plan(files, out, **options):
    options.setdefault("grid", SMALL)
    options.setdefault("plots", False)
    return plan(
        files["model"], files["users"], shared=files["shared"], output=out, shots=(1, 3), **options
    )


def test_same_numbers_whatever_the_backend(files, tmp_path):
    serial = _plan(files, tmp_path / "a", n_jobs=1).rows
    assert serial == _plan(files, tmp_path / "b", n_jobs=2, backend="loky").rows
    assert serial == _plan(files, tmp_path / "c", n_jobs=2, backend="threading", chunk=3).rows
    other = _plan(files, tmp_path / "d", n_jobs=1, seed=1).rows
    assert [r["user_accuracy"] for r in other] != [r["user_accuracy"] for r in serial]


def test_dask_backend_gives_the_same_numbers(files, tmp_path):
    from distributed import Client

    serial = _plan(files, tmp_path / "a", n_jobs=1).rows
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None):
        assert _plan(files, tmp_path / "b", backend="dask").rows == serial


def test_recommendation_is_written_valid_and_simulates_to_the_table(files, tmp_path):
    out = tmp_path / "best.mlmodel"
    result = _plan(files, tmp_path / "plan", n_jobs=1, write=out, plots=True)
    choice = result.recommendation
    assert choice["score"] > choice["shipped_score"]
    assert is_valid(validate(out))
    assert result.verification["max_difference"] == 0.0
    assert result.verification["runs"] == 4 * 2  # every user x shots count re-run on the file
    data = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert data["assumptions"] == "espresso" and data["recommendation"]["name"] == choice["name"]
    assert all(line["assumptions"] == "espresso" for line in data["table"])
    assert (tmp_path / "plan" / "plan.png").stat().st_size > 0
    header = (tmp_path / "plan" / "plan.csv").read_text().splitlines()[0]
    assert "user_accuracy_min" in header and "update_macs" in header
    if choice["setup"]["kind"] == "head":  # the written defaults are the chosen ones
        params = load(out).spec.neuralNetworkClassifier.updateParams
        assert params.epochs.defaultValue == choice["setup"]["epochs"]
        assert params.optimizer.sgdOptimizer.learningRate.defaultValue == choice["setup"]["lr"]


def test_knn_recommendation_writes_a_knn_pipeline(files, tmp_path):
    out = tmp_path / "knn.mlmodel"
    grid = Grid(lrs=(), epochs=(), batches=(), ks=(1, 3), weightings=("uniform",))
    result = _plan(files, tmp_path / "plan", n_jobs=1, grid=grid, write=out)
    assert result.recommendation["setup"]["kind"] == "knn"
    assert is_valid(validate(out))
    assert result.verification["max_difference"] == 0.0
    knn = load(out).spec.pipeline.models[-1].kNearestNeighborsClassifier
    assert knn.numberOfNeighbors.defaultValue == result.recommendation["setup"]["k"]


def test_costs_count_multiply_adds(files, tmp_path):
    result = _plan(files, tmp_path / "p", n_jobs=1)
    by_name = {(line["name"], line["shots"]): line for line in result.table}
    none = by_name[("no update", 1)]
    assert none["update_macs"] == 0
    assert none["predict_macs"] == 64 * 24 + 24 * 16 + 16 * 10
    head = next(
        line
        for line in result.table
        if line["kind"] == "head"
        and line["trainable"] == "last"
        and line["shots"] == 1
        and not line["shipped"]
    )
    # 5 classes x 1 shot, batch 4 wrapped to 8 per epoch, 4 epochs; fc2 forward + weight grad
    # (fc2 is the first trained layer: no input gradient); prefix once per example
    assert head["update_macs"] == 5 * (64 * 24 + 24 * 16) + 4 * 8 * (2 * 16 * 10)


def _data(tmp_path, x, y, user):
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=y, user=user)
    return path


def _cli(*args, cwd):
    """The installed console script, running this checkout's code."""
    return subprocess.run(
        [*CLI, "plan", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env=cli_env(),
    )


def test_bad_input_is_one_line_and_exit_2(files, tmp_path):
    x, y = digits()
    y = y.astype(str)
    one_class = _data(tmp_path, x[y == "0"][:8], y[y == "0"][:8], np.array(["a"] * 8))
    cases = {
        "one class": ([one_class], "has one class"),
        "too few": ([files["users"], "--shots", "1,9"], "need 10 per class"),
        "unknown column": ([files["users"], "--users", "who"], "no user column 'who'"),
    }
    for name, (data, expected) in cases.items():
        result = _cli(
            files["model"],
            "--data",
            *data,
            "--no-plots",
            "-j",
            "1",
            "-o",
            tmp_path / "out",
            cwd=tmp_path,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr)
        assert len(lines) == 1 and expected in lines[0], (name, result.stderr)
        assert not (tmp_path / "out").exists()


def test_bad_label_and_grid_are_refused(files, tmp_path):
    x, y = digits()
    data = _data(tmp_path, x[:30], np.array(["cat", "dog"] * 15), np.array(["a", "b"] * 15))
    with pytest.raises(ConfigError, match="'cat' is not one of the model's class labels"):
        plan(files["model"], data, output=tmp_path / "o", n_jobs=1, plots=False)
    with pytest.raises(ConfigError, match="grid lrs"):
        _plan(files, tmp_path / "o", grid=Grid(lrs=(-1.0,)))
    with pytest.raises(ConfigError, match="unknown assumptions preset"):
        _plan(files, tmp_path / "o", assumptions="nope")


def test_all_assumptions_says_whether_the_recommendation_changes(files, tmp_path):
    from updatable_coreml.runtime.assumptions import PRESETS

    grid = Grid(lrs=(0.1,), epochs=(4,), batches=(4,), trainable=("last",), ks=(), weightings=())
    result = _plan(files, tmp_path / "p", n_jobs=1, grid=grid, assumptions="all")
    assert result.assumptions == "espresso"
    assert set(result.robustness) == set(PRESETS)
    assert "under every preset" in result.summary() or "CHANGES" in result.summary()
    # the ml-compute preset trains on short last batches: its numbers are its own
    alone = _plan(files, tmp_path / "q", n_jobs=1, grid=grid, assumptions="ml-compute")
    assert result.robustness["ml-compute"]["score"] == alone.recommendation["score"]


def test_cli_runs_a_plan(files, tmp_path):
    result = _cli(
        files["model"],
        "--data",
        files["users"],
        "--shared",
        files["shared"],
        "--shots",
        "1,3",
        "--lr",
        "0.1",
        "--epochs",
        "4",
        "--batch-size",
        "4",
        "--trainable",
        "last",
        "--k",
        "1",
        "--weighting",
        "uniform",
        "--no-plots",
        "-j",
        "1",
        "-o",
        tmp_path / "out",
        "--write",
        tmp_path / "best.mlmodel",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "runtime assumptions: espresso" in result.stdout
    assert "recommended:" in result.stdout and "written:" in result.stdout
    assert (tmp_path / "out" / "plan.csv").is_file() and (tmp_path / "best.mlmodel").is_file()


def test_argument_parsing_lives_in_the_cli_package():
    """The library is called from Python; only ``cli/`` modules may build parsers."""
    package = Path(__file__).resolve().parents[1] / "updatable_coreml"
    offenders = []
    for path in package.rglob("*.py"):
        if "cli" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if "argparse" in names:
                offenders.append(str(path.relative_to(package)))
    assert offenders == []


# -- CSV input -------------------------------------------------------------------------------

TINY = Grid(lrs=(0.1,), epochs=(2,), batches=(4,), trainable=("all",), ks=(1,), weightings=())


def test_feature_csv_plans_exactly_like_the_npz(files, tmp_path):
    users = npz_to_csv(files["users"], tmp_path / "users.csv")
    shared = npz_to_csv(files["shared"], tmp_path / "shared.csv", users=False)
    # a shared CSV may keep a user column (the same export as the users'): never a feature
    lines = shared.read_text().splitlines()
    shared.write_text("\n".join(["user," + lines[0]] + ["-," + line for line in lines[1:]]) + "\n")
    from_csv = plan(
        files["model"],
        users,
        shared=shared,
        output=tmp_path / "a",
        shots=(1, 3),
        grid=SMALL,
        n_jobs=1,
        plots=False,
    )
    assert from_csv.rows == _plan(files, tmp_path / "b", n_jobs=1).rows
    assert len(from_csv.rows) == len(from_csv.candidates) * 4 * 2


def test_image_csv_plans_exactly_like_user_folders(tmp_path):
    data = image_users(tmp_path)
    model = image_model(tmp_path / "Colors.mlmodel")
    options = dict(shots=(1, 2), grid=TINY, plots=False)
    folders = plan(
        model,
        users_dir=data["users_dir"],
        shared=data["shared_npz"],
        output=tmp_path / "a",
        n_jobs=1,
        **options,
    )
    from_csv = plan(
        model,
        data["csv"],
        shared=data["shared_csv"],
        output=tmp_path / "b",
        n_jobs=2,
        backend="loky",
        write=tmp_path / "best.mlmodel",
        **options,
    )
    assert from_csv.rows == folders.rows
    assert {r["user"] for r in from_csv.rows} == {"u0", "u1", "u2"}
    # the written file, fed the decoded images by predict(), gives the plan's numbers
    assert from_csv.verification["max_difference"] == 0.0


def test_bad_csv_is_one_line_and_exit_2(files, tmp_path):
    users = npz_to_csv(files["users"], tmp_path / "users.csv")
    text = users.read_text().splitlines()
    broken = tmp_path / "broken.csv"
    cells = text[3].split(",")
    cells[5] = "n/a"
    broken.write_text("\n".join(text[:3] + [",".join(cells)] + text[4:]) + "\n")
    data = image_users(tmp_path / "img")
    missing = tmp_path / "img" / "missing.csv"
    missing.write_text(data["csv"].read_text().replace("users/u1/red/2.png", "users/u1/red/9.png"))
    image = image_model(tmp_path / "Colors.mlmodel")
    cases = {
        "non-numeric": (files["model"], [broken], "line 4: feature column 'f3' holds 'n/a'"),
        "unknown label column": (
            files["model"],
            [users, "--label", "who"],
            "no label column 'who'",
        ),
        "unknown feature": (
            files["model"],
            [users, "--features", "f0,zz"],
            "no feature column 'zz'",
        ),
        "missing image": (
            image,
            [missing],
            "image 'users/u1/red/9.png' (column 'image') not found",
        ),
        "no such file": (files["model"], [tmp_path / "nope.csv"], "nope.csv: no such file"),
    }
    for name, (model, data_args, expected) in cases.items():
        result = _cli(
            model,
            "--data",
            *data_args,
            "--no-plots",
            "-j",
            "1",
            "-o",
            tmp_path / "out",
            cwd=tmp_path,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr)
        assert len(lines) == 1 and expected in lines[0], (name, result.stderr)
        assert not (tmp_path / "out").exists()


# -- replay against forgetting ---------------------------------------------------------------

REPLAY = Grid(
    lrs=(0.1,),
    epochs=(20,),
    batches=(4,),
    trainable=("all",),
    ks=(1,),
    weightings=("uniform",),
    replays=(0, 20),
)


def test_replay_is_deterministic_and_keeps_the_other_classes(files, tmp_path):
    serial = _plan(files, tmp_path / "a", n_jobs=1, grid=REPLAY)
    assert serial.rows == _plan(files, tmp_path / "b", n_jobs=2, backend="loky", grid=REPLAY).rows
    data = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert data["replay_store"] == 20 and data["shared_examples"] == 120 - 20
    header = (tmp_path / "a" / "plan.csv").read_text().splitlines()[0].split(",")
    assert "replay" in header
    rest = {}
    for line in serial.table:
        rest.setdefault((line["kind"], line["replay"]), []).append(line["rest_accuracy_mean"])
    # users teach digits 0-4 only: without replay the head forgets 5-9, the k-NN never had them
    for kind in ("head", "knn"):
        assert np.mean(rest[(kind, 20)]) > np.mean(rest[(kind, 0)]) + 0.1, rest
    # the store only changes the runs that replay: the others score the users as without it
    plain = _plan(files, tmp_path / "c", n_jobs=1, grid=replace(REPLAY, replays=(0,)))

    def user_scores(result, replay):
        names = {i: c.name for i, c in enumerate(result.candidates) if c.replay == replay}
        return sorted(
            (names[r["candidate"]], r["user"], r["shots"], r["user_accuracy"])
            for r in result.rows
            if r["candidate"] in names
        )

    assert user_scores(plain, 0) == user_scores(serial, 0)


def test_replay_recommendation_ships_its_store_and_simulates_to_the_table(files, tmp_path):
    grid = replace(REPLAY, ks=(), replays=(20,))
    out = tmp_path / "best.mlmodel"
    result = _plan(files, tmp_path / "p", n_jobs=1, grid=grid, max_forgetting=0.0, write=out)
    assert result.recommendation["setup"]["replay"] == 20
    assert any("stored examples" in reason for reason in result.recommendation["reasons"])
    with np.load(result.files["replay"]) as store:
        assert store["x"].shape == (20, 64) and len(set(store["y"].tolist())) == 10
    assert is_valid(validate(out)) and result.verification["max_difference"] == 0.0


def test_replaying_knn_is_written_holding_its_store(files, tmp_path):
    grid = Grid(lrs=(), epochs=(), batches=(), ks=(1,), weightings=("uniform",), replays=(20,))
    out = tmp_path / "knn.mlmodel"
    result = _plan(files, tmp_path / "p", n_jobs=1, grid=grid, max_forgetting=0.0, write=out)
    assert result.recommendation["name"] == "k-NN k=1 uniform replay=20"
    knn = load(out).spec.pipeline.models[-1].kNearestNeighborsClassifier
    assert len(knn.nearestNeighborsIndex.floatSamples) == 20
    # the user's examples added to the seeded file give the plan's numbers, and the store
    # answers for digits users never taught (an unseeded k-NN scores exactly 0 on them)
    assert result.verification["max_difference"] == 0.0
    assert result.recommendation["rest_score"] > 0.1


def test_bad_replay_is_one_line_and_exit_2(files, tmp_path):
    for value, expected in (
        ("0,x", "--replay: expected a comma list of ints"),
        ("500", "replay 500 needs more than 500 shared examples (it has 120)"),
    ):
        result = _cli(
            files["model"],
            "--data",
            files["users"],
            "--shared",
            files["shared"],
            "--replay",
            value,
            "--no-plots",
            "-j",
            "1",
            "-o",
            tmp_path / "out",
            cwd=tmp_path,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and expected in lines[0], result.stderr
        assert not (tmp_path / "out").exists()


# -- Optuna search ---------------------------------------------------------------------------


def test_optuna_search_is_deterministic_and_stays_in_the_grid_bounds(files, tmp_path):
    pytest.importorskip("optuna")
    grid = Grid(lrs=(0.01, 0.3), epochs=(2, 6), batches=(4, 8), ks=(1, 3), replays=(0, 10))
    options = dict(grid=grid, search="optuna", trials=8)
    serial = _plan(files, tmp_path / "a", n_jobs=1, **options)
    again = _plan(files, tmp_path / "b", n_jobs=2, backend="loky", **options)
    assert serial.candidates == again.candidates and serial.rows == again.rows
    tried = serial.candidates[2:]
    assert serial.candidates[0].shipped and serial.candidates[1].kind == "none"
    assert 1 <= len(tried) <= 8
    for c in tried:
        assert c.replay in (0, 10)
        if c.kind == "head":
            assert 0.01 <= c.lr <= 0.3 and 2 <= c.epochs <= 6 and c.batch in (4, 8)
        else:
            assert c.kind == "knn" and 1 <= c.k <= 3
    other = _plan(files, tmp_path / "c", n_jobs=1, seed=1, **options)
    assert other.candidates != serial.candidates
    data = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert data["search"] == "optuna (8 trials)"
    best = max(range(len(serial.candidates)), key=lambda i: (search_score(serial.rows, i), -i))
    assert serial.recommendation["score"] == pytest.approx(search_score(serial.rows, best))


def test_unknown_search_is_one_line_and_exit_2(files, tmp_path):
    result = _cli(
        files["model"],
        "--data",
        files["users"],
        "--search",
        "random",
        "--no-plots",
        "-o",
        tmp_path / "out",
        cwd=tmp_path,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "--search" in lines[0], result.stderr
    with pytest.raises(ConfigError, match="unknown search 'random'"):
        _plan(files, tmp_path / "o", search="random")


def test_search_without_optuna_names_the_extra(files, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "optuna" else find_spec(name, *a),
    )
    with pytest.raises(ConfigError, match=r"updatable-coreml\[optuna\]"):
        _plan(files, tmp_path / "o", search="optuna")
    assert not (tmp_path / "o").exists()
