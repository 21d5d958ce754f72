"""Swift glue generator: golden files for three model kinds, CLI contract, and a parse check.

The expected Swift files live in tests/golden/. After an intended change to the generator,
regenerate them and review the diff:

    UPDATE_GOLDEN=1 python -m pytest tests/test_swift.py

When ``swiftc`` is on PATH the generated files are also parsed (``swiftc -parse``); Core ML
is not available on Linux, so that checks syntax only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from updatable_coreml._proto import FeatureTypes_pb2, Model_pb2
from updatable_coreml.cli import main
from updatable_coreml.errors import ConfigError, NotUpdatableError
from updatable_coreml.surgery import make_updatable
from updatable_coreml.swift import _identifier, generate_swift
from updatable_coreml.swift.render import render, template

GOLDEN = Path(__file__).parent / "golden"
FLOAT32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32


def digits_classifier():
    """Grayscale 8x8 image -> flatten -> fc -> softmax, String labels; fc trains with SGD."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(0)
    builder = NeuralNetworkBuilder(
        [("image", datatypes.Array(1, 8, 8))], [("labelProbs", None)], mode="classifier"
    )
    builder.add_flatten("flatten", 0, "image", "flat")
    builder.add_inner_product(
        "fc",
        rng.normal(0, 0.1, (4, 64)).astype(np.float32),
        np.zeros(4, np.float32),
        64,
        4,
        True,
        "flat",
        "logits",
    )
    builder.add_softmax("softmax", "logits", "labelProbs")
    builder.set_class_labels(
        ["zero", "one", "two", "three"],
        predicted_feature_name="label",
        prediction_blob="labelProbs",
    )
    image = builder.spec.description.input[0]
    image.type.imageType.width = image.type.imageType.height = 8
    image.type.imageType.colorSpace = FeatureTypes_pb2.ImageFeatureType.GRAYSCALE
    return make_updatable(builder.spec, layers=["fc"], lr=0.01, batch_size=8, epochs=10, seed=1)


def mse_regressor():
    """A torch-style input name ('input.1') into a 2-layer MLP regressor trained with Adam."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(0)
    builder = NeuralNetworkBuilder(
        [("input.1", datatypes.Array(4))], [("y", datatypes.Array(2))], mode="regressor"
    )
    builder.add_inner_product(
        "hidden",
        rng.normal(0, 0.5, (8, 4)).astype(np.float32),
        np.zeros(8, np.float32),
        4,
        8,
        True,
        "input.1",
        "h",
    )
    builder.add_activation("relu", "RELU", "h", "h_act")
    builder.add_inner_product(
        "out",
        rng.normal(0, 0.5, (2, 8)).astype(np.float32),
        np.zeros(2, np.float32),
        8,
        2,
        True,
        "h_act",
        "y",
    )
    return make_updatable(
        builder.spec,
        layers=["hidden", "out"],
        loss="mse",
        optimizer="adam",
        lr=0.01,
        lr_range=(0.0001, 0.1),
        batch_size=4,
        allowed_batch_sizes=[2, 4],
        epochs=5,
        allowed_epochs=[1, 5, 10],
        shuffle=False,
    )


def _array_feature(feature, name: str, size: int) -> None:
    feature.name = name
    feature.type.multiArrayType.dataType = FLOAT32
    feature.type.multiArrayType.shape.append(size)


def _int64_feature(feature, name: str) -> None:
    feature.name = name
    feature.type.int64Type.SetInParent()


def knn_pipeline():
    """Frozen embedding network (64 -> 16) + updatable k-NN with Int64 labels, by hand."""
    rng = np.random.default_rng(0)
    spec = Model_pb2.Model(specificationVersion=4, isUpdatable=True)
    _array_feature(spec.description.input.add(), "pixels", 64)
    _int64_feature(spec.description.output.add(), "digit")
    spec.description.predictedFeatureName = "digit"
    _array_feature(spec.description.trainingInput.add(), "pixels", 64)
    _int64_feature(spec.description.trainingInput.add(), "digit")

    embed = spec.pipelineClassifier.pipeline.models.add()
    embed.specificationVersion = 4
    _array_feature(embed.description.input.add(), "pixels", 64)
    _array_feature(embed.description.output.add(), "embedding", 16)
    layer = embed.neuralNetwork.layers.add(name="embed", input=["pixels"], output=["embedding"])
    layer.innerProduct.inputChannels, layer.innerProduct.outputChannels = 64, 16
    layer.innerProduct.weights.floatValue.extend(rng.normal(0, 0.1, 16 * 64).astype(np.float32))

    knn_model = spec.pipelineClassifier.pipeline.models.add(
        specificationVersion=4, isUpdatable=True
    )
    _array_feature(knn_model.description.input.add(), "embedding", 16)
    _int64_feature(knn_model.description.output.add(), "digit")
    knn_model.description.predictedFeatureName = "digit"
    _array_feature(knn_model.description.trainingInput.add(), "embedding", 16)
    _int64_feature(knn_model.description.trainingInput.add(), "digit")
    knn = knn_model.kNearestNeighborsClassifier
    knn.numberOfNeighbors.defaultValue = 3
    knn.numberOfNeighbors.range.minValue, knn.numberOfNeighbors.range.maxValue = 1, 10
    knn.uniformWeighting.SetInParent()
    index = knn.nearestNeighborsIndex
    index.numberOfDimensions = 16
    index.linearIndex.SetInParent()
    index.squaredEuclideanDistance.SetInParent()
    for label in (0, 1):
        index.floatSamples.add().vector.extend(rng.normal(0, 1, 16).astype(np.float32))
        knn.int64ClassLabels.vector.append(label)
    return spec


CASES = {
    "DigitsTrainer.swift": (digits_classifier, "Digits.mlmodel", None),
    "RegressorTrainer.swift": (mse_regressor, "Regressor.mlmodel", None),
    "PersonalTrainer.swift": (knn_pipeline, "DigitsKNN.mlmodel", "PersonalTrainer"),
}


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return {
        golden: generate_swift(build(), class_name=name, source_name=source)
        for golden, (build, source, name) in CASES.items()
    }


@pytest.mark.parametrize("golden", sorted(CASES))
def test_matches_golden(generated, golden):
    path = GOLDEN / golden
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(generated[golden])
    assert path.exists(), (
        f"{path} missing; run UPDATE_GOLDEN=1 python -m pytest tests/test_swift.py"
    )
    assert generated[golden] == path.read_text(), (
        f"{golden} differs from the golden file; if intended, regenerate with UPDATE_GOLDEN=1"
    )


def test_uses_the_models_real_training_inputs(generated):
    digits, regressor, knn = (generated[g] for g in CASES)
    assert "func example(image: CGImage, label: String)" in digits
    assert "MLFeatureValue(cgImage: image, constraint: self.imageConstraint" in digits
    assert "func example(input1: MLMultiArray, yTrue: MLMultiArray)" in regressor
    assert '"input.1": try InputBuilder.checked(input1, input: "input.1", shape: [4])' in regressor
    assert "static let allowedEpochs: Set<Int> = [1, 5, 10]" in regressor
    assert "static let allowedLearningRates: ClosedRange<Double> = 0.0001...0.1" in regressor
    assert "func example(pixels: MLMultiArray, digit: Int64)" in knn
    assert "MLUpdateTask(forModelAt: modelURL, trainingData: examples" in knn
    assert "annealEvery" not in knn


def test_cli_writes_the_file_with_the_default_class_name(tmp_path):
    model = tmp_path / "Digits.mlmodel"
    model.write_bytes(digits_classifier().SerializeToString())
    out = tmp_path / "Trainer.swift"
    assert main(["swift", str(model), "-o", str(out)]) == 0
    assert out.read_text() == (GOLDEN / "DigitsTrainer.swift").read_text()


def test_cli_refuses_a_model_that_is_not_updatable(tmp_path, capsys):
    model = tmp_path / "Plain.mlmodel"
    spec = digits_classifier()
    spec.isUpdatable = False
    model.write_bytes(spec.SerializeToString())
    out = tmp_path / "Trainer.swift"
    assert main(["swift", str(model), "-o", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "not updatable" in error[0] and "make-updatable" in error[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Plain.mlmodel"]


def test_refuses_an_invalid_model_and_a_bad_class_name():
    spec = digits_classifier()
    del spec.description.trainingInput[:]
    with pytest.raises(NotUpdatableError, match="TRAINING_INPUTS_MISSING"):
        generate_swift(spec)
    with pytest.raises(ConfigError, match="Swift type name"):
        generate_swift(digits_classifier(), class_name="my-trainer")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("input.1", "input1"),
        ("y_true", "yTrue"),
        ("classLabel", "classLabel"),
        ("Image", "image"),
        ("1st", "_1st"),
        ("class", "classValue"),
        ("self", "selfValue"),
        ("---", "input"),
    ],
)
def test_feature_names_become_valid_swift_identifiers(name, expected):
    assert _identifier(name) == expected


@pytest.mark.skipif(shutil.which("swiftc") is None, reason="no Swift toolchain (swiftc) on PATH")
@pytest.mark.parametrize("golden", sorted(CASES))
def test_swiftc_parses_the_output(generated, golden, tmp_path):
    source = tmp_path / golden
    source.write_text(generated[golden])
    result = subprocess.run(
        ["swiftc", "-parse", str(source)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# -- resume semantics: Core ML changes only the learning rate inside a task ---------------------


@pytest.mark.parametrize("golden", ["DigitsTrainer.swift", "RegressorTrainer.swift"])
def test_only_the_learning_rate_changes_inside_a_task(generated, golden):
    """COREML_EVIDENCE.md: ``resume(withParameters:)`` changes only learningRate; epochs,
    batch size, momentum, betas and eps are read once, at task start. So the trainer runs one
    task and passes nothing but ``.learningRate`` to ``resume(withParameters:)``."""
    import re

    text = generated[golden]
    resumes = re.findall(r"resume\(withParameters: \[(.*)\]\)\s*$", text, re.MULTILINE)
    assert resumes, "the learning-rate schedule must use resume(withParameters:)"
    for arguments in resumes:
        assert re.findall(r"\.(\w+):", arguments) == ["learningRate"], arguments
    assert text.count("MLUpdateTask(forModelAt:") == 1 and "forModelAt: modelURL" in text
    assert text.count(".epochs") == 1  # the configuration the task starts with
    assert "annealEvery" not in text and "miniBatchSize" not in text


def test_templates_are_package_data_and_strictly_filled():
    from importlib import resources

    names = sorted(
        p.name for p in resources.files("updatable_coreml.swift").joinpath("templates").iterdir()
    )
    assert "network_trainer.swift.tmpl" in names and "knn_trainer.swift.tmpl" in names
    assert "$0" in template("array_factory.swift.tmpl")  # Swift's own $ stays Swift's
    with pytest.raises(KeyError, match="placeholders"):
        render("errors.swift.tmpl", cases="")  # a missing value
    with pytest.raises(KeyError, match="placeholders"):
        render("save_and_emit.swift.tmpl", stray="x")  # a value no placeholder takes
