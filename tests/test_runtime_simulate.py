"""simulate(): datasets from folders and .npz, per-epoch rows, plot and output model."""

from __future__ import annotations

import numpy as np
import pytest

nnb = pytest.importorskip("coremltools.models.neural_network")
Image = pytest.importorskip("PIL.Image")

from models import image_classifier_builder  # noqa: E402
from updatable_coreml import runtime  # noqa: E402
from updatable_coreml.errors import ConfigError, ModelFileError  # noqa: E402
from updatable_coreml.runtime.simulate import simulate  # noqa: E402

RNG = np.random.default_rng(9)
LABELS = ["blue", "red"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """8x8 RGB image -> conv -> relu -> global average pool -> flatten -> dense -> softmax."""
    b = image_classifier_builder(LABELS, RNG)
    b.set_sgd_optimizer(nnb.SgdParams(lr=0.5, batch=4, momentum=0.9))
    b.set_epochs(2, allowed_set=[1, 2, 3])
    b.set_shuffle(seed=3)
    path = tmp_path_factory.mktemp("model") / "Classifier.mlmodel"
    runtime.load(b.spec).save(path)
    return path


def colored(label: str, size=(12, 10)) -> np.ndarray:
    """A noisy image dominated by the label's color (W x H = size)."""
    pixels = RNG.integers(0, 80, size=(size[1], size[0], 3), dtype=np.uint8)
    pixels[:, :, 2 if label == "blue" else 0] += 170
    return pixels


def image_folder(root, per_label=5, labels=LABELS):
    for label in labels:
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            Image.fromarray(colored(label)).save(root / label / f"{i}.png")
    return root


def test_folder_training_with_validation_plot_and_output(model_path, tmp_path):
    train = image_folder(tmp_path / "train")
    val = image_folder(tmp_path / "val", per_label=3)
    seen_rows, kinds = [], []
    result = simulate(
        model_path,
        train,
        val=val,
        epochs=3,
        plot=tmp_path / "loss.png",
        out=tmp_path / "Updated.mlmodel",
        on_epoch=seen_rows.append,
        progress=lambda event: kinds.append(event.kind),
    )
    assert [row.epoch for row in result.rows] == [1, 2, 3] and seen_rows == result.rows
    assert all(0 <= row.val_accuracy <= 1 and row.val_loss > 0 for row in result.rows)
    assert result.train_examples == 10 and result.val_examples == 6
    assert kinds[0] == "training_begin" and kinds[-1] == "completion"
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    updated = runtime.load(tmp_path / "Updated.mlmodel")
    assert updated.predict({"image": colored("red", (8, 8))})["label"] in LABELS
    assert result.rows[-1].val_accuracy == 1.0  # the colors are trivially separable


def test_npz_dataset_matches_folder_semantics(model_path, tmp_path):
    x = np.stack([colored(label, (8, 8)) for label in LABELS * 4])
    np.savez(tmp_path / "train.npz", x=x, y=np.asarray(LABELS * 4))
    result = simulate(
        model_path, tmp_path / "train.npz", epochs=1, lr=0.1, batch_size=4, shuffle=False
    )
    assert len(result.rows) == 1 and result.rows[0].val_loss is None
    assert result.parameters["learningRate"] == 0.1 and result.parameters["shuffle"] is False


def test_bad_inputs_are_one_line_errors(model_path, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images found"):
        simulate(model_path, tmp_path / "empty")
    unknown = image_folder(tmp_path / "unknown", per_label=1, labels=["red", "green"])
    with pytest.raises(ConfigError, match="folder 'green' is not one of the model's class labels"):
        simulate(model_path, unknown)
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((2, 8, 8, 3)))
    with pytest.raises(ConfigError, match="must hold arrays 'x'.*'y'"):
        simulate(model_path, tmp_path / "nolabels.npz")
    train = image_folder(tmp_path / "train", per_label=1)
    with pytest.raises(ConfigError, match="epochs=7 is not allowed"):
        simulate(model_path, train, epochs=7)
    with pytest.raises(ModelFileError, match="would overwrite the input"):
        simulate(model_path, train, out=model_path)
    with pytest.raises(ConfigError, match="no such file"):
        simulate(model_path, tmp_path / "missing")


def test_non_updatable_model_is_refused(model_path, tmp_path):
    spec = runtime.load(model_path).spec
    spec.isUpdatable = False
    frozen = tmp_path / "Frozen.mlmodel"
    runtime.load(spec).save(frozen)
    with pytest.raises(ModelFileError, match="not updatable"):
        simulate(frozen, image_folder(tmp_path / "train", per_label=1))


def test_every_combination_of_the_unknowns_reports_its_spread(model_path, tmp_path):
    train = image_folder(tmp_path / "train")
    val = image_folder(tmp_path / "val", per_label=2)
    single = simulate(model_path, train, val=val)
    result = simulate(model_path, train, val=val, assumptions="all")
    spread = result.spread
    assert spread.fields == ("momentum", "batch_reduction")  # SGD with momentum, CCE
    assert spread.evaluated_on == "validation" and len(spread.outcomes) == 4
    labels = [o.label for o in spread.outcomes]
    assert labels[0] == "momentum=torch batch_reduction=mean" and len(set(labels)) == 4
    # rows come from the default run, which is the first outcome
    assert [r.train_loss for r in result.rows] == [r.train_loss for r in single.rows]
    assert spread.outcomes[0].train_loss == result.rows[-1].train_loss
    assert spread.outcomes[0].loss == pytest.approx(result.rows[-1].val_loss)
    by_label = {o.label: o for o in spread.outcomes}
    # the momentum forms agree while the learning rate is constant; summing does not
    assert by_label["momentum=keras batch_reduction=mean"].train_loss == pytest.approx(
        by_label["momentum=torch batch_reduction=mean"].train_loss, rel=1e-5
    )
    assert by_label["momentum=torch batch_reduction=sum"].train_loss != pytest.approx(
        by_label["momentum=torch batch_reduction=mean"].train_loss, rel=1e-3
    )
    low, high = spread.span("train_loss")
    assert low <= spread.outcomes[0].train_loss <= high and high > low
    lines = spread.summary_lines()
    assert lines[0].startswith("unknown Core ML formulas (momentum, batch_reduction): 4")
    assert lines[-1].startswith("spread: final training loss") and "accuracy" in lines[-1]
    assert spread.to_dict()["outcomes"][3]["assumptions"] == {
        "momentum": "keras",
        "batch_reduction": "sum",
    }


def test_adam_mse_unknowns_and_presets(tmp_path):
    """An Adam regressor: Adam's three forms x batch reduction x MSE formula."""
    from coremltools.models import datatypes

    rng = np.random.default_rng(4)
    b = nnb.NeuralNetworkBuilder(
        [("x", datatypes.Array(3))], [("y", datatypes.Array(2))], mode="regressor"
    )
    b.add_inner_product("fc", rng.normal(size=(2, 3)), rng.normal(size=2), 3, 2, True, "x", "y")
    b.make_updatable(["fc"])
    b.set_mean_squared_error_loss("loss", ("y", datatypes.Array(2)))
    b.set_adam_optimizer(nnb.AdamParams(lr=0.01, batch=4, beta1=0.9, beta2=0.999, eps=1e-8))
    b.set_epochs(2)
    path = tmp_path / "Regressor.mlmodel"
    runtime.load(b.spec).save(path)
    np.savez(tmp_path / "data.npz", x=rng.normal(size=(10, 3)), y=rng.normal(size=(10, 2)))
    result = simulate(path, tmp_path / "data.npz", assumptions="all")
    spread = result.spread
    assert spread.fields == ("adam", "batch_reduction", "mse_reduction")
    assert len(spread.outcomes) == 12 and spread.evaluated_on == "training"
    assert spread.span("accuracy") is None and "accuracy" not in spread.summary_lines()[-1]
    keras = simulate(path, tmp_path / "data.npz", assumptions="keras")
    expected = next(
        o
        for o in spread.outcomes
        if o.label == "adam=keras batch_reduction=mean mse_reduction=mean"
    )
    assert keras.rows[-1].train_loss == pytest.approx(expected.train_loss, rel=1e-12)
    with pytest.raises(ConfigError, match="unknown assumptions 'pytorch'"):
        simulate(path, tmp_path / "data.npz", assumptions="pytorch")


def test_overrides_core_ml_ignores_are_warnings(model_path, tmp_path):
    spec = runtime.load(model_path).spec
    spec.neuralNetworkClassifier.updateParams.ClearField("seed")
    unseeded = tmp_path / "Unseeded.mlmodel"
    runtime.load(spec).save(unseeded)
    result = simulate(unseeded, image_folder(tmp_path / "train", per_label=2), seed=4)
    assert any(w.startswith("seed=4: the model declares no seed") for w in result.warnings)
    assert result.report_lines() == [f"warning: {w}" for w in result.warnings]


def test_report_lines_hold_warnings_then_the_spread(model_path, tmp_path):
    from updatable_coreml.runtime.simulate import ASSUMPTION_CHOICES

    assert ASSUMPTION_CHOICES == ("espresso", "ml-compute", "torch", "keras", "all")
    train = image_folder(tmp_path / "train", per_label=2)
    plain = simulate(model_path, train, epochs=1)
    assert plain.report_lines() == []
    result = simulate(model_path, train, epochs=1, lr=0.25, assumptions="all")
    lines = result.report_lines()
    assert lines[0].startswith("unknown Core ML formulas") and lines[-1].startswith("spread:")


def test_cli_assumptions_flag(model_path, tmp_path, capsys):
    from updatable_coreml.cli import build_parser, main
    from updatable_coreml.runtime.simulate import ASSUMPTION_CHOICES

    simulate_help = build_parser()._subparsers._group_actions[0].choices["simulate"].format_help()
    flat = " ".join(simulate_help.split())
    assert all(name in flat for name in ASSUMPTION_CHOICES)
    train = image_folder(tmp_path / "train", per_label=2)
    assert (
        main(
            [
                "simulate",
                str(model_path),
                "--train",
                str(train),
                "--epochs",
                "1",
                "--assumptions",
                "all",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "unknown Core ML formulas (momentum, batch_reduction): 4 combinations" in out
    assert "spread: final training loss" in out
    assert main(["simulate", str(model_path), "--train", str(train), "--assumptions", "typo"]) == 2
    assert "unknown assumptions 'typo'" in capsys.readouterr().err
