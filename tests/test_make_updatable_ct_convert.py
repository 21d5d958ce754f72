"""``make-updatable`` on classifiers that coremltools' own converter makes
(``ct.convert(..., convert_to="neuralnetwork")``): they end in a ``softmaxND`` over a rank-2
blob, which ``softmax_surgery`` turns into the classic softmax Core ML's cross-entropy needs.
Checked by forward parity with the source framework, by our validator, and by training the
chosen layers against the same steps in torch."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")

from updatable_coreml import runtime  # noqa: E402
from updatable_coreml.errors import NotUpdatableError  # noqa: E402
from updatable_coreml.surgery import make_updatable  # noqa: E402
from updatable_coreml.validator import validate  # noqa: E402
from updatable_coreml.validator.ranks import infer_ranks  # noqa: E402

TOLERANCE = 1e-4
SCRIPT = str(Path(sys.executable).parent / "updatable-coreml")  # the installed console script
LABELS = ["cat", "dog", "fox"]


def kinds(spec) -> Counter:
    return Counter(layer.WhichOneof("layer") for layer in spec.neuralNetworkClassifier.layers)


def torch_classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 8),
        nn.Tanh(),
        nn.Linear(8, 3),
        nn.Softmax(dim=1),
    ).eval()


@pytest.fixture(scope="module")
def torch_converted(tmp_path_factory):
    """A torch classifier as ct.convert writes it (input ``x`` of shape (1, 3, 8, 8))."""
    model = torch_classifier()
    x = torch.randn(1, 3, 8, 8)
    converted = ct.convert(
        torch.jit.trace(model, x),
        inputs=[ct.TensorType(name="x", shape=x.shape)],
        convert_to="neuralnetwork",
        classifier_config=ct.ClassifierConfig(LABELS),
    )
    path = tmp_path_factory.mktemp("ct") / "torch.mlmodel"
    converted.save(str(path))
    return model, path


def probabilities(loaded, x: np.ndarray) -> np.ndarray:
    probs = loaded.description.predictedProbabilitiesName
    rows = [loaded.predict({"x": row[None]})[probs] for row in x]
    return np.array([[row[label] for label in LABELS] for row in rows])


def test_torch_classifier_ending_in_softmax_nd_becomes_updatable(torch_converted, tmp_path):
    model, path = torch_converted
    before = ct.utils.load_spec(str(path))
    assert kinds(before)["softmaxND"] == 1 and "softmax" not in kinds(before)
    changes: list[str] = []
    spec = make_updatable(path, tmp_path / "up.mlmodel", layers=["linear_1"], changes=changes)
    assert any("softmaxND" in line for line in changes), changes
    assert any("expandDims" in line for line in changes), changes
    after = kinds(spec)
    assert after["softmax"] == 1 and "softmaxND" not in after and after["expandDims"] == 1
    assert not [f for f in validate(spec) if f.severity == "error"]
    x = np.random.default_rng(1).normal(size=(6, 3, 8, 8)).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()
    got = probabilities(runtime.load(tmp_path / "up.mlmodel"), x)
    assert np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.parametrize("layers", [["linear_1"], ["linear_0", "linear_1"]])
def test_made_updatable_ct_classifier_trains_like_torch(torch_converted, tmp_path, layers):
    model, path = torch_converted
    make_updatable(path, tmp_path / "up.mlmodel", layers=layers, lr=0.1, batch_size=4, epochs=2)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=8)
    loaded = runtime.load(tmp_path / "up.mlmodel")
    label = loaded.description.predictedFeatureName  # a classifier trains on its labels
    result = loaded.update(
        {"x": x[:, None], label: np.asarray(LABELS)[y]}, parameters={"shuffle": False}
    )
    reference = torch_classifier()
    modules = {"linear_0": reference[4], "linear_1": reference[6]}
    trained = [p for name in layers for p in modules[name].parameters()]
    for param in reference.parameters():
        param.requires_grad_(any(param is p for p in trained))
    optimizer = torch.optim.SGD(trained, lr=0.1)
    for _ in range(2):
        for start in (0, 4):
            optimizer.zero_grad()
            probs = reference(torch.from_numpy(x[start : start + 4]))
            torch.nn.functional.nll_loss(
                torch.log(probs), torch.from_numpy(y[start : start + 4])
            ).backward()
            optimizer.step()
    network = result.model.trainable()
    for name in layers:
        index = next(i for i, item in enumerate(network.layers) if item.name == name)
        got = network.weight_getter(index)("weights")
        expected = modules[name].weight.detach().numpy()
        assert np.abs(expected - model_weight(model, name)).max() > 1e-3  # it did train
        assert np.abs(got.reshape(expected.shape) - expected).max() <= TOLERANCE


def model_weight(model, name: str) -> np.ndarray:
    return {"linear_0": model[4], "linear_1": model[6]}[name].weight.detach().numpy()


def test_keras_classifier_from_ct_convert_becomes_updatable_and_trains_like_keras(tmp_path):
    """ct.convert writes a Keras Dense as a batchedMatmul (and drops a zero bias): it becomes
    an innerProduct with a bias, and the head trains as Keras trains it."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3), name="x")
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(8, activation="relu", name="hidden")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(h))
    x = np.random.default_rng(0).normal(size=(1, 6, 6, 3)).astype(np.float32)
    converted = ct.convert(
        model,
        inputs=[ct.TensorType(name="x", shape=x.shape)],
        convert_to="neuralnetwork",
        classifier_config=ct.ClassifierConfig(LABELS),
    )
    path = tmp_path / "keras.mlmodel"
    converted.save(str(path))
    spec = ct.utils.load_spec(str(path))
    (head,) = [
        layer.name
        for layer in spec.neuralNetworkClassifier.layers
        if layer.WhichOneof("layer") == "batchedMatmul" and "head" in layer.name
    ]
    assert kinds(spec)["softmaxND"] == 1
    changes: list[str] = []
    made = make_updatable(
        path,
        tmp_path / "up.mlmodel",
        layers=[head],
        lr=0.1,
        batch_size=4,
        epochs=1,
        changes=changes,
    )
    assert kinds(made)["softmax"] == 1 and kinds(made)["innerProduct"] == 1
    assert any("batchedMatmul" in line for line in changes), changes
    assert not [f for f in validate(made) if f.severity == "error"]
    batch = np.random.default_rng(3).normal(size=(8, 6, 6, 3)).astype(np.float32)
    loaded = runtime.load(tmp_path / "up.mlmodel")
    got = probabilities(loaded, batch)  # ct.convert keeps the Keras (N)HWC input
    assert np.abs(got - np.asarray(model(batch, training=False))).max() <= TOLERANCE

    y = np.random.default_rng(4).integers(0, 3, size=8)
    label = loaded.description.predictedFeatureName
    result = loaded.update(
        {"x": batch[:, None], label: np.asarray(LABELS)[y]}, parameters={"shuffle": False}
    )
    for layer in model.layers:
        layer.trainable = layer.name == "head"
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    before = model.get_layer("head").get_weights()[0].copy()
    model.fit(batch, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    kernel, bias = model.get_layer("head").get_weights()
    network = result.model.trainable()
    index = next(i for i, item in enumerate(network.layers) if item.name == head)
    weights = network.weight_getter(index)
    assert np.abs(kernel - before).max() > 1e-3  # the head did train
    assert np.abs(weights("weights").reshape(3, 8) - kernel.T).max() <= TOLERANCE
    assert np.abs(weights("bias").ravel() - bias).max() <= TOLERANCE


def test_classic_softmax_appended_to_a_rank_2_blob_gets_its_rank_change(tmp_path):
    """coremltools' own updatable torch examples append a classic softmax to ct.convert's
    rank-2 logits; NeuralNetwork.proto needs rank >= 3 there, so make-updatable widens the
    blob in front of the trained layer, and the validator's rank warning goes away."""
    model = torch_classifier()[:-1]  # logits
    x = torch.randn(1, 3, 8, 8)
    converted = ct.convert(
        torch.jit.trace(model, x),
        inputs=[ct.TensorType(name="x", shape=x.shape)],
        convert_to="neuralnetwork",
    )
    spec = converted.get_spec()
    logits = spec.description.output[0].name
    softmax = spec.neuralNetwork.layers.add()
    softmax.softmax.SetInParent()
    softmax.name = "probs"
    softmax.input.append(logits)
    softmax.output.append("probs")
    spec.description.output[0].name = "probs"
    assert infer_ranks(spec, spec.neuralNetwork)[logits] == 2
    changes: list[str] = []
    made = make_updatable(spec, tmp_path / "up.mlmodel", layers=["linear_1"], changes=changes)
    assert len(changes) == 1 and "expandDims" in changes[0], changes
    assert infer_ranks(made, made.neuralNetwork)[logits] == 4
    assert "CLASSIC_SOFTMAX_RANK" not in {f.code for f in validate(made)}
    assert not [f for f in validate(made) if f.severity == "error"]
    batch = np.random.default_rng(5).normal(size=(4, 3, 8, 8)).astype(np.float32)
    loaded = runtime.load(tmp_path / "up.mlmodel")
    got = np.array([np.asarray(loaded.predict({"x": row[None]})["probs"]).ravel() for row in batch])
    expected = torch.softmax(model(torch.from_numpy(batch)), dim=1).detach().numpy()
    assert np.abs(got - expected).max() <= TOLERANCE


def test_softmax_nd_over_another_axis_is_refused_naming_the_layer(torch_converted, tmp_path):
    _, path = torch_converted
    spec = ct.utils.load_spec(str(path))
    for layer in spec.neuralNetworkClassifier.layers:
        if layer.WhichOneof("layer") == "softmaxND":
            layer.softmaxND.axis = 0
            name = layer.name
    with pytest.raises(NotUpdatableError, match=f"'{name}'.*axis 0"):
        make_updatable(spec, layers=["linear_1"])


def test_layer_between_that_cannot_carry_rank_4_is_refused(torch_converted):
    _, path = torch_converted
    with pytest.raises(NotUpdatableError, match="reshapeStatic"):
        make_updatable(path, layers=["linear_1", "input.3"])


def test_cli_reports_the_changes(torch_converted, tmp_path):
    _, path = torch_converted
    out = tmp_path / "cli.mlmodel"
    run = subprocess.run(
        [
            SCRIPT,
            "make-updatable",
            str(path),
            "-o",
            str(out),
            "--trainable",
            "linear_1",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "softmaxND" in run.stdout and "expandDims" in run.stdout
    assert out.exists()
