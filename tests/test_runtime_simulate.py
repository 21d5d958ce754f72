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
    result = simulate(model_path, train, val=val, epochs=3, plot=tmp_path / "loss.png",
                      out=tmp_path / "Updated.mlmodel", on_epoch=seen_rows.append,
                      progress=lambda event: kinds.append(event.kind))
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
    result = simulate(model_path, tmp_path / "train.npz", epochs=1, lr=0.1, batch_size=4,
                      shuffle=False)
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
