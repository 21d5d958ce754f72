"""Input shapes: the runtime refuses every MultiArray shape Core ML refuses (never a silent
reshape), honours flexible shapes, and takes one training example the way predict does."""

from __future__ import annotations

import numpy as np
import pytest

nnb = pytest.importorskip("coremltools.models.neural_network")

from updatable_coreml import runtime  # noqa: E402
from updatable_coreml.errors import ConfigError, InputShapeError  # noqa: E402
from updatable_coreml.runtime.simulate import simulate  # noqa: E402

LABELS = ["a", "b", "c"]


def classifier_spec(seed: int = 0):
    """(3, 8, 8) MultiArray -> valid 3x3 conv -> relu -> global average pool -> fc -> softmax."""
    from coremltools.models import datatypes

    rng = np.random.default_rng(seed)
    b = nnb.NeuralNetworkBuilder(
        [("image", datatypes.Array(3, 8, 8))],
        [("probs", datatypes.Array(len(LABELS)))],
        mode="classifier",
    )
    b.add_convolution(
        "conv",
        3,
        4,
        3,
        3,
        1,
        1,
        "valid",
        1,
        rng.normal(size=(3, 3, 3, 4)).astype(np.float32),
        None,
        False,
        input_name="image",
        output_name="c",
    )
    b.add_activation("relu", "RELU", "c", "r")
    b.add_pooling("gap", 1, 1, 1, 1, "AVERAGE", "VALID", "r", "p", is_global=True)
    b.add_flatten("flat", 0, "p", "f")
    b.add_inner_product(
        "fc",
        rng.normal(size=(len(LABELS), 4)).astype(np.float32),
        np.zeros(len(LABELS), np.float32),
        4,
        len(LABELS),
        True,
        "f",
        "logits",
    )
    b.add_softmax("softmax", "logits", "probs")
    b.set_class_labels(LABELS, predicted_feature_name="label", prediction_blob="probs")
    b.make_updatable(["fc"])
    b.set_categorical_cross_entropy_loss("loss", "probs")
    b.set_sgd_optimizer(nnb.SgdParams(lr=0.1, batch=2, momentum=0.0))
    b.set_epochs(1)
    return b.spec


def input_type(spec):
    return spec.description.input[0].type.multiArrayType


@pytest.fixture(scope="module")
def model():
    return runtime.load(classifier_spec())


def test_channel_last_example_is_refused_with_the_helper_named(model):
    x = np.random.default_rng(1).random((8, 8, 3))
    with pytest.raises(InputShapeError) as info:
        model.predict({"image": x})
    message = str(info.value)
    assert "(3, 8, 8)" in message and "(8, 8, 3)" in message
    assert "channel-last" in message and "to_channel_first" in message


def test_channel_last_batch_is_refused(model):
    x = np.random.default_rng(2).random((5, 8, 8, 3))
    with pytest.raises(InputShapeError, match="channel-last"):
        model.predict({"image": x})


def test_to_channel_first_gives_the_channel_first_prediction(model):
    x = np.random.default_rng(3).random((4, 3, 8, 8))
    nhwc = x.transpose(0, 2, 3, 1)
    want = model.predict({"image": x})["probs"]
    assert model.predict({"image": runtime.to_channel_first(nhwc)})["probs"] == want
    one = model.predict({"image": runtime.to_channel_first(nhwc[0])})["probs"]
    assert one == pytest.approx(want[0], abs=0)


def test_to_channel_first_refuses_a_vector():
    with pytest.raises(ConfigError, match="to_channel_first"):
        runtime.to_channel_first(np.zeros(5))


def test_other_size_with_equal_rank_is_refused_without_a_layout_hint(model):
    x = np.zeros((3, 16, 16))
    with pytest.raises(InputShapeError) as info:
        model.predict({"image": x})
    assert "(3, 16, 16)" in str(info.value) and "channel-last" not in str(info.value)


def test_same_element_count_is_not_reshaped(model):
    """192 values as (3, 4, 16) once ran as (3, 8, 8); Core ML refuses it."""
    with pytest.raises(InputShapeError, match=r"\(3, 4, 16\)"):
        model.predict({"image": np.zeros((3, 4, 16))})
    with pytest.raises(InputShapeError):
        model.predict({"image": np.zeros((2, 192))})


def test_update_refuses_a_wrong_shape(model):
    x = np.random.default_rng(4).random((4, 8, 8, 3))
    with pytest.raises(InputShapeError, match="to_channel_first"):
        model.update({"image": x, "label": ["a", "b", "c", "a"]})
    with pytest.raises(InputShapeError, match="to_channel_first"):
        model.update([{"image": row, "label": "a"} for row in x])


def test_simulate_refuses_a_channel_last_npz(tmp_path, model):
    path = tmp_path / "m.mlmodel"
    model.save(path)
    x = np.random.default_rng(5).random((6, 8, 8, 3)).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x, y=np.array(["a", "b", "c"] * 2))
    with pytest.raises(InputShapeError, match="channel-last"):
        simulate(path, tmp_path / "train.npz")
    np.savez(
        tmp_path / "train_cf.npz", x=runtime.to_channel_first(x), y=np.array(["a", "b", "c"] * 2)
    )
    assert simulate(path, tmp_path / "train_cf.npz").rows


def test_shape_range_is_honoured():
    spec = classifier_spec()
    ranges = input_type(spec).shapeRange.sizeRanges
    for low, high in ((3, 3), (4, 16), (4, -1)):
        ranges.add(lowerBound=low, upperBound=high)
    model = runtime.load(spec)
    x = np.random.default_rng(6).random((3, 4, 16))
    fixed = classifier_spec()
    del input_type(fixed).shape[:]
    input_type(fixed).shape.extend([3, 4, 16])
    want = runtime.load(fixed).predict({"image": x})["probs"]
    assert model.predict({"image": x})["probs"] == pytest.approx(want, abs=0)
    assert model.predict({"image": np.zeros((3, 9, 40))})["label"] in LABELS  # unbounded width
    with pytest.raises(InputShapeError, match=r"\(3, 4\.\.16, 4\.\.\)"):
        model.predict({"image": np.zeros((3, 17, 8))})
    with pytest.raises(InputShapeError):
        model.predict({"image": np.zeros((2, 8, 8))})


def test_enumerated_shapes_are_honoured():
    spec = classifier_spec()
    shapes = input_type(spec).enumeratedShapes.shapes
    for shape in ((3, 8, 8), (3, 10, 12)):
        shapes.add().shape.extend(shape)
    model = runtime.load(spec)
    assert model.predict({"image": np.zeros((2, 3, 10, 12))})["label"].shape == (2,)
    with pytest.raises(InputShapeError, match=r"one of \(3, 8, 8\), \(3, 10, 12\)"):
        model.predict({"image": np.zeros((3, 12, 10))})


def test_update_takes_one_example_as_a_dict(model):
    x = np.random.default_rng(7).random((3, 8, 8))
    one = model.update({"image": x, "label": "b"})
    listed = model.update([{"image": x, "label": "b"}])
    assert one.epoch_losses == listed.epoch_losses and len(one.epoch_losses) == 1
    after = one.model.predict({"image": x})["probs"]
    assert after == listed.model.predict({"image": x})["probs"]
    assert after != model.predict({"image": x})["probs"]


def test_simulate_layout_nhwc_converts_a_channel_last_npz(tmp_path, model):
    """Stating the layout converts the arrays; the result equals the channel-first run."""
    path = tmp_path / "m.mlmodel"
    model.save(path)
    x = np.random.default_rng(7).random((6, 8, 8, 3)).astype(np.float32)
    y = np.array(["a", "b", "c"] * 2)
    np.savez(tmp_path / "hwc.npz", x=x, y=y)
    np.savez(tmp_path / "chw.npz", x=runtime.to_channel_first(x), y=y)
    stated = simulate(path, tmp_path / "hwc.npz", layout="nhwc")
    converted = simulate(path, tmp_path / "chw.npz")
    assert [r.train_loss for r in stated.rows] == [r.train_loss for r in converted.rows]
    with pytest.raises(ConfigError, match="layout 'hwc'"):
        simulate(path, tmp_path / "hwc.npz", layout="hwc")


def test_cli_simulate_layout_nhwc(tmp_path, model):
    """The CLI flag named by the InputShapeError message exists and works end to end."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "m.mlmodel"
    model.save(path)
    x = np.random.default_rng(8).random((6, 8, 8, 3)).astype(np.float32)
    np.savez(tmp_path / "hwc.npz", x=x, y=np.array(["a", "b", "c"] * 2))
    script = shutil.which("updatable-coreml", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "updatable_coreml.cli"]
    args = [*command, "simulate", str(path), "--train", str(tmp_path / "hwc.npz"), "-q"]
    refused = subprocess.run(args, capture_output=True, text=True, env=os.environ)
    assert refused.returncode == 2 and "--layout nhwc" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    done = subprocess.run([*args, "--layout", "nhwc"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
