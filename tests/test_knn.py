"""Updatable k-NN pipelines: export, validation, prediction against scikit-learn, updates.

Feature extractors: a builder-made NeuralNetwork ``.mlmodel`` (no framework needed), a small
Keras CNN and a torch CNN, all on scikit-learn's bundled digits (8x8 grayscale).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

from updatable_coreml import validate
from updatable_coreml.errors import ConfigError
from updatable_coreml.knn import (
    export_knn,
    few_shot_indices,
    knn_learning_curve,
    plot_learning_curve,
)
from updatable_coreml.runtime import load
from updatable_coreml.validator import is_valid


@pytest.fixture(scope="module")
def digits():
    """Images (N, 1, 8, 8) in [0, 1] and integer labels."""
    data = load_digits()
    return (data.images / 16.0).astype(np.float32)[:, None], data.target


def builder_cnn():
    """conv -> relu -> pool -> conv -> relu -> global pool ('features') -> fc -> softmax."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(0)
    w = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)  # noqa: E731
    builder = NeuralNetworkBuilder(
        [("digit", datatypes.Array(1, 8, 8))], [("probs", None)], mode="classifier"
    )
    builder.add_convolution(
        "conv1",
        1,
        8,
        3,
        3,
        1,
        1,
        "same",
        1,
        w(3, 3, 1, 8),
        w(8),
        True,
        input_name="digit",
        output_name="c1",
    )
    builder.add_activation("relu1", "RELU", "c1", "r1")
    builder.add_pooling("pool1", 2, 2, 2, 2, "MAX", "VALID", "r1", "p1")
    builder.add_convolution(
        "conv2",
        8,
        16,
        3,
        3,
        1,
        1,
        "same",
        1,
        w(3, 3, 8, 16),
        w(16),
        True,
        input_name="p1",
        output_name="c2",
    )
    builder.add_activation("relu2", "RELU", "c2", "r2")
    builder.add_pooling("features", 1, 1, 1, 1, "AVERAGE", "VALID", "r2", "pooled", is_global=True)
    builder.add_flatten("flatten", 0, "pooled", "flat")
    builder.add_inner_product("fc", w(10, 16), w(10), 16, 10, True, "flat", "logits")
    builder.add_softmax("softmax", "logits", "probs")
    builder.set_class_labels([str(i) for i in range(10)], predicted_feature_name="digitLabel")
    return builder.spec


def keras_cnn():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="digit")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="features")(h)
    h = keras.layers.Dropout(0.3, name="dropout")(h)
    outputs = keras.layers.Dense(10, activation="softmax", name="classifier")(h)
    return keras.Model(inputs, outputs)


def torch_cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def export_from(kind: str, path, **options):
    if kind == "mlmodel":
        return export_knn(builder_cnn(), path, feature_layer="features", **options)
    if kind == "keras":
        return export_knn(keras_cnn(), path, feature_layer="features", **options)
    import torch

    return export_knn(
        torch_cnn(), path, feature_layer="6", example_inputs=torch.zeros(1, 1, 8, 8), **options
    )


def features_of(model, x: np.ndarray) -> np.ndarray:
    """Feature vectors computed by the pipeline's first (frozen) model, through our runtime."""
    extractor = model.models[0]
    name = extractor.description.output[0].name
    out = extractor.predict({extractor.description.input[0].name: x})[name]
    return np.asarray(out, dtype=np.float64).reshape(len(x), -1)


def decided_rows(
    train: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int, inverse: bool
) -> np.ndarray:
    """Queries whose answer does not hinge on a tie: the k-th and (k+1)-th neighbors are at
    different distances, no neighbor is an exact match, and no two labels get the same vote."""
    distances = ((queries[:, None, :] - train[None]) ** 2).sum(-1)
    order = np.argsort(distances, axis=1, kind="stable")
    near = np.take_along_axis(distances, order, axis=1)
    keep = (~np.isclose(near[:, k - 1], near[:, k], rtol=1e-9, atol=0)) & (near[:, 0] > 0)
    for row in np.flatnonzero(keep):
        votes: dict = {}
        for index, distance in zip(order[row, :k], near[row, :k]):
            votes[labels[index]] = votes.get(labels[index], 0.0) + (
                1 / distance if inverse else 1.0
            )
        top = sorted(votes.values(), reverse=True)
        keep[row] = len(top) == 1 or not np.isclose(top[0], top[1], rtol=1e-9, atol=0)
    return keep


# -- export and validation --------------------------------------------------------------------


def test_pipeline_structure_and_validation(tmp_path, digits):
    x, y = digits
    path = tmp_path / "knn.mlmodel"
    report = export_knn(
        builder_cnn(),
        path,
        feature_layer="features",
        k=5,
        k_range=(1, 20),
        labels="int",
        default_label=-1,
        input_name="image",
        initial_examples=(x[:30], y[:30]),
    )
    assert validate(path) == []
    spec = load(path).spec
    assert spec.WhichOneof("Type") == "pipeline" and spec.isUpdatable
    assert spec.specificationVersion >= 4
    extractor, knn = spec.pipeline.models
    assert not extractor.isUpdatable and knn.isUpdatable
    assert not any(layer.isUpdatable for layer in extractor.neuralNetwork.layers)
    assert [layer.name for layer in extractor.neuralNetwork.layers][-1] == "features"
    classifier = knn.kNearestNeighborsClassifier
    assert classifier.numberOfNeighbors.defaultValue == 5
    allowed = classifier.numberOfNeighbors.range
    assert (allowed.minValue, allowed.maxValue) == (1, 20)
    assert len(classifier.nearestNeighborsIndex.floatSamples) == 30
    assert list(classifier.int64ClassLabels.vector) == list(y[:30])
    training = {t.name: t.type.WhichOneof("Type") for t in spec.description.trainingInput}
    assert training == {"image": "multiArrayType", "classLabel": "int64Type"}
    assert report.trainable == ["knn"] and "features" in report.frozen
    assert "initial examples: 30 of 10 class(es)" in report.training


def test_validator_catches_label_type_and_wiring(tmp_path):
    from updatable_coreml._proto import Model_pb2

    export_knn(builder_cnn(), tmp_path / "knn.mlmodel", feature_layer="features")
    spec = Model_pb2.Model()
    spec.ParseFromString((tmp_path / "knn.mlmodel").read_bytes())
    wrong_label = Model_pb2.Model()
    wrong_label.CopyFrom(spec)
    wrong_label.description.trainingInput[-1].type.int64Type.SetInParent()
    # Apple checks no k-NN training input: a warning, not an error (validator/knn.py).
    label_findings = validate(wrong_label)
    assert {f.code for f in label_findings} == {"KNN_TRAINING_LABEL_TYPE"} and is_valid(
        label_findings
    )
    unwired = Model_pb2.Model()
    unwired.CopyFrom(spec)
    unwired.description.output[0].name = "nowhere"
    assert "PIPELINE_WIRING" in {f.code for f in validate(unwired)}
    both = Model_pb2.Model()
    both.CopyFrom(spec)
    both.pipeline.models[0].isUpdatable = True
    assert "PIPELINE_UPDATABLE_POSITION" in {f.code for f in validate(both)}


def test_refusals_leave_no_file(tmp_path):
    path = tmp_path / "knn.mlmodel"
    with pytest.raises(ConfigError, match="feature_layer 'nope'"):
        export_knn(builder_cnn(), path, feature_layer="nope")
    with pytest.raises(ConfigError, match="outside its allowed range"):
        export_knn(builder_cnn(), path, feature_layer="features", k=12, k_range=(1, 10))
    with pytest.raises(ConfigError, match="default_label"):
        export_knn(builder_cnn(), path, feature_layer="features", labels="int", default_label="x")
    assert list(tmp_path.iterdir()) == []


# -- prediction: same labels as scikit-learn, linear == kd-tree --------------------------------


@pytest.mark.parametrize("kind", ["mlmodel", "keras", "torch"])
@pytest.mark.parametrize("weighting", ["inverse_distance", "uniform"])
def test_predicts_like_sklearn(kind, weighting, tmp_path, digits):
    x, y = digits
    train, queries = np.arange(0, 300), np.arange(1000, 1400)
    path = tmp_path / "knn.mlmodel"
    export_from(
        kind, path, k=3, weighting=weighting, initial_examples=(x[train], y[train].astype(str))
    )
    model = load(path)
    predicted = model.predict({model.description.input[0].name: x[queries]})["classLabel"]
    features = features_of(model, x)
    inverse = weighting == "inverse_distance"
    # Core ML weighs by 1 / (squared Euclidean distance), the distance its index computes.
    sklearn = KNeighborsClassifier(
        3,
        weights=(lambda d: 1 / d**2) if inverse else "uniform",
        algorithm="brute",
        metric="euclidean",
    )
    sklearn.fit(features[train], y[train].astype(str))
    expected = sklearn.predict(features[queries])
    decided = decided_rows(features[train], y[train].astype(str), features[queries], 3, inverse)
    assert decided.mean() > 0.75  # uniform k=3 over 10 classes has 1-1-1 vote ties
    assert np.array_equal(predicted[decided], expected[decided])


def test_kd_tree_equals_linear_with_ties():
    from updatable_coreml.runtime.knn import build_kd_tree, kd_tree_neighbors, linear_neighbors

    rng = np.random.default_rng(1)
    samples = rng.integers(0, 3, size=(200, 4)).astype(np.float64)  # many exact ties
    queries = rng.integers(0, 3, size=(60, 4)).astype(np.float64) + rng.choice([0, 0.5], (60, 4))
    for leaf_size in (1, 3, 30, 500):
        tree = build_kd_tree(samples, leaf_size)
        for k in (1, 3, 7):
            linear = linear_neighbors(queries, samples, k)
            tree_answer = kd_tree_neighbors(tree, samples, queries, k)
            np.testing.assert_array_equal(linear[0], tree_answer[0])
            np.testing.assert_array_equal(linear[1], tree_answer[1])


def test_kd_tree_pipeline_predicts_like_linear(tmp_path, digits):
    x, y = digits
    examples = (x[:400], y[:400].astype(str))
    export_from("mlmodel", tmp_path / "linear.mlmodel", initial_examples=examples)
    export_from(
        "mlmodel",
        tmp_path / "tree.mlmodel",
        index="kd_tree",
        leaf_size=8,
        initial_examples=examples,
    )
    batch = {"digit": x[1000:1300]}
    linear, tree = load(tmp_path / "linear.mlmodel"), load(tmp_path / "tree.mlmodel")
    assert np.array_equal(linear.predict(batch)["classLabel"], tree.predict(batch)["classLabel"])
    assert linear.predict(batch)["classLabelProbs"] == tree.predict(batch)["classLabelProbs"]


def test_voting_rules():
    from updatable_coreml.runtime.knn import vote

    # inverse distance: one close "a" (1/1) beats two far "b" (1/4 + 1/4)
    assert vote(["a", "b", "b"], np.array([1.0, 4.0, 4.0]), True)[0] == "a"
    assert vote(["a", "b", "b"], np.array([1.0, 4.0, 4.0]), False)[0] == "b"
    # a tie between labels goes to the one with the nearest voter
    assert vote(["b", "a"], np.array([1.0, 2.0]), False) == ("b", {"b": 0.5, "a": 0.5})
    # exact matches alone vote
    assert vote(["a", "b", "b"], np.array([2.0, 0.0, 5.0]), True) == ("b", {"a": 0.0, "b": 1.0})


# -- updates --------------------------------------------------------------------------------------


def test_default_label_then_updates_learn_new_classes(tmp_path, digits):
    x, y = digits
    path = tmp_path / "knn.mlmodel"
    export_from("mlmodel", path, labels="string", default_label="nothing yet", k=1)
    empty = load(path)
    out = empty.predict({"digit": x[0]})
    assert out == {"classLabel": "nothing yet", "classLabelProbs": {}}
    known = few_shot_indices(y[:900], 5, seed=0)
    first = empty.update({"digit": x[known], "classLabel": [f"digit {v}" for v in y[known]]}).model
    assert first.predict({"digit": x[known[0]]})["classLabel"] == f"digit {y[known[0]]}"
    # a class the app never shipped with, learned from three examples
    second = first.update([{"digit": x[i], "classLabel": "mine"} for i in (900, 901, 902)]).model
    assert second.predict({"digit": x[901]})["classLabel"] == "mine"
    saved = second.save(tmp_path / "updated.mlmodel")
    assert validate(saved) == []
    stored = load(saved).spec.pipeline.models[-1].kNearestNeighborsClassifier
    assert len(stored.nearestNeighborsIndex.floatSamples) == len(known) + 3
    assert list(stored.stringClassLabels.vector)[-3:] == ["mine"] * 3
    queries = {"digit": x[1000:1100]}
    assert np.array_equal(
        load(saved).predict(queries)["classLabel"], second.predict(queries)["classLabel"]
    )
    shipped = load(path).spec.pipeline.models[-1].kNearestNeighborsClassifier
    assert len(shipped.nearestNeighborsIndex.floatSamples) == 0  # the file is never modified


def test_update_refuses_wrong_label_type(tmp_path, digits):
    x, _ = digits
    export_from("mlmodel", tmp_path / "knn.mlmodel", labels="int")
    model = load(tmp_path / "knn.mlmodel")
    with pytest.raises(ConfigError, match="Int64 labels"):
        model.update({"digit": x[:2], "classLabel": ["a", "b"]})
    with pytest.raises(ConfigError, match="takes no parameters"):
        model.update({"digit": x[:2], "classLabel": [1, 2]}, parameters={"epochs": 3})


def test_learning_curve_and_plot(tmp_path, digits):
    x, y = digits
    path = tmp_path / "knn.mlmodel"
    export_from("mlmodel", path, labels="int")
    rows = knn_learning_curve(
        path, x[:1000], y[:1000], x[1000:1400], y[1000:1400], shots=(1, 5, 20)
    )
    assert [r["shots"] for r in rows] == [1, 5, 20]
    assert [r["examples"] for r in rows] == [10, 50, 200]
    assert rows[-1]["accuracy"] > rows[0]["accuracy"] > 0.2
    png = plot_learning_curve({"k-NN": rows}, tmp_path / "curve.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_keras_extractor_matches_keras_features(tmp_path, digits):
    import keras

    x, _ = digits
    model = keras_cnn()
    export_knn(model, tmp_path / "knn.mlmodel", feature_layer="features")
    ours = features_of(load(tmp_path / "knn.mlmodel"), x[:20])
    cut = keras.Model(model.inputs[0], model.get_layer("features").output)
    theirs = cut(x[:20].transpose(0, 2, 3, 1))
    assert np.abs(ours - keras.ops.convert_to_numpy(theirs)).max() < 1e-4


def test_simulate_cli_prints_the_learning_curve(tmp_path, digits, capsys):
    from updatable_coreml.cli import main

    x, y = digits
    path = tmp_path / "knn.mlmodel"
    export_from("mlmodel", path, labels="string")
    np.savez(tmp_path / "train.npz", x=x[:600], y=y[:600].astype(str))
    np.savez(tmp_path / "val.npz", x=x[600:900], y=y[600:900].astype(str))
    assert (
        main(
            [
                "simulate",
                str(path),
                "--train",
                str(tmp_path / "train.npz"),
                "--val",
                str(tmp_path / "val.npz"),
                "--plot",
                str(tmp_path / "curve.png"),
                "-o",
                str(tmp_path / "updated.mlmodel"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "examples/class" in out and "accuracy plot" in out
    assert [line.split()[0] for line in out.splitlines()[1:6]] == ["1", "2", "5", "10", "20"]
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    updated = load(tmp_path / "updated.mlmodel")
    assert updated.predict({"digit": x[900]})["classLabel"] in {str(d) for d in range(10)}
    assert (
        len(
            updated.spec.pipeline.models[
                -1
            ].kNearestNeighborsClassifier.nearestNeighborsIndex.floatSamples
        )
        == 600
    )
    assert (
        main(["simulate", str(path), "--train", str(tmp_path / "train.npz"), "--epochs", "3"]) == 2
    )
    assert "no epochs" in capsys.readouterr().err
