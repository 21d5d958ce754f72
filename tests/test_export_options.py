"""One options object for every export entry point (issue 12 item 6, issue 15 items 14-16):
one default batch size everywhere, string forms never iterated into characters, errors that
name the CLI flag and the Python keyword, readable output names."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from updatable_coreml.errors import ConfigError
from updatable_coreml.options import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, ExportOptions
from updatable_coreml.spec_io import load_spec, neural_network
from updatable_coreml.training import Loss, TrainingConfig


def update_params(path):
    return neural_network(load_spec(path)).updateParams


def written_batch_size(path) -> int:
    return written_batch_size_of(load_spec(path))


def test_strings_are_not_iterated():
    options = ExportOptions(
        trainable="fc", class_labels="cat, dog,bird", input_names="image", output_names="scores"
    )
    assert options.trainable == ["fc"]
    assert options.class_labels == ["cat", "dog", "bird"]
    assert options.input_names == ["image"] and options.output_names == ["scores"]
    assert ExportOptions(trainable="all").trainable == "all"
    assert ExportOptions(class_labels=[3, 1, 2]).class_labels == [3, 1, 2]


def test_errors_name_the_flag_and_the_keyword():
    with pytest.raises(ConfigError, match=r"--batch-size \(batch_size=\)"):
        ExportOptions(batch_size=0)
    with pytest.raises(ConfigError, match=r"--class-labels \(class_labels=\): empty name"):
        ExportOptions(class_labels="a,,b")
    with pytest.raises(ConfigError, match=r"--backbone \(backbone=\)"):
        ExportOptions(backbone="mine")
    with pytest.raises(ConfigError, match=r"'epoch'.*did you mean 'epochs'"):
        ExportOptions.build(epoch=3)


def test_one_default_batch_size():
    defaults = inspect.signature(TrainingConfig).parameters
    assert defaults["batch_size"].default == DEFAULT_BATCH_SIZE
    assert defaults["epochs"].default == DEFAULT_EPOCHS
    assert TrainingConfig(Loss("cce", "probs")).batch_size.default == DEFAULT_BATCH_SIZE
    options = ExportOptions()
    assert (options.resolved("batch_size"), options.resolved("epochs")) == (
        DEFAULT_BATCH_SIZE,
        DEFAULT_EPOCHS,
    )
    assert any("batch size 8" in note for note in options.default_notes())
    assert ExportOptions(batch_size=4, epochs=2).default_notes() == []


def test_every_frontend_writes_the_same_defaults(tmp_path):
    """Keras and ONNX used 32, torch and make_updatable 8 (issue 12)."""
    keras = pytest.importorskip("keras")
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from onnx import helper

    import onnx_helpers
    from updatable_coreml.exporters.keras import export_keras
    from updatable_coreml.exporters.onnx import export_onnx
    from updatable_coreml.exporters.torch import export_torch

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    keras_report = export_keras(model, tmp_path / "k.mlmodel")
    export_torch(
        torch.nn.Sequential(torch.nn.Linear(4, 3)),
        torch.zeros(1, 4),
        tmp_path / "t.mlmodel",
        loss="mse",
    )
    built = onnx_helpers.model([helper.make_node("Relu", ["x"], ["features"])], (4,))
    onnx_report = export_onnx(built, tmp_path / "o.mlmodel", loss="mse", trainable="head")
    for name in ("k", "t", "o"):
        assert written_batch_size(tmp_path / f"{name}.mlmodel") == DEFAULT_BATCH_SIZE, name
        assert update_params(tmp_path / f"{name}.mlmodel").epochs.defaultValue == DEFAULT_EPOCHS
    assert any("batch size 8" in note for note in keras_report.assumptions)
    # export_onnx: the same optimizer default as the others, and a string is one name
    assert any("no optimizer given" in note for note in onnx_report.assumptions)
    assert onnx_report.trainable == ["head"]


def test_python_string_forms_through_an_export(tmp_path):
    torch = pytest.importorskip("torch")
    from updatable_coreml.exporters.torch import export_torch
    from updatable_coreml.runtime import load

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    report = export_torch(
        model,
        torch.zeros(1, 4),
        tmp_path / "m.mlmodel",
        loss="cross_entropy",
        trainable="2",
        class_labels="a,b,c",
    )
    assert report.trainable == ["2"]
    outputs = load(tmp_path / "m.mlmodel").predict({"input": np.zeros((1, 4), np.float32)})
    assert set(outputs["probabilities"][0]) == {"a", "b", "c"}


def test_onnx_logits_output_is_named_for_what_it_holds(tmp_path):
    """After the appended softmax an output called "logits" holds probabilities (issue 15)."""
    pytest.importorskip("onnx")
    from onnx import helper

    import onnx_helpers
    from updatable_coreml.exporters.onnx import export_onnx

    built = onnx_helpers.model(
        [helper.make_node("Relu", ["x"], ["features"])], (4,), output="logits"
    )
    report = export_onnx(built, tmp_path / "m.mlmodel", loss="cce", class_labels=[0, 1, 2, 3, 4])
    assert "probabilities" in report.outputs and "logits" not in report.outputs
    assert any("'logits' named 'probabilities'" in change for change in report.changes)


def test_keras_trainable_typo_suggests_the_layer_and_refusals_name_the_flag(tmp_path):
    keras = pytest.importorskip("keras")
    from updatable_coreml.errors import UnsupportedError
    from updatable_coreml.exporters.keras import export_keras

    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, nesterov=True, momentum=0.5),
        loss="sparse_categorical_crossentropy",
    )
    with pytest.raises(
        ConfigError, match=r"--trainable \(trainable=\).*'haed'.*did you mean 'head'"
    ):
        export_keras(model, tmp_path / "m.mlmodel", trainable="haed")
    with pytest.raises(UnsupportedError, match=r"nesterov.*--allow-unsupported"):
        export_keras(model, tmp_path / "m.mlmodel")
    report = export_keras(model, tmp_path / "m.mlmodel", allow_unsupported=True)
    assert any("nesterov" in w and "[allow_unsupported:" in w for w in report.warnings)


def test_make_updatable_takes_one_layer_name_as_a_string():
    """``layers="fc"`` used to be iterated into layers 'f' and 'c' (issue 15)."""
    pytest.importorskip("coremltools")
    from models import squeezenet_like
    from updatable_coreml import make_updatable

    spec = make_updatable(squeezenet_like(), layers="fc")
    layers = neural_network(spec).layers
    assert [layer.name for layer in layers if layer.isUpdatable] == ["fc"]
    assert written_batch_size_of(spec) == DEFAULT_BATCH_SIZE


def written_batch_size_of(spec) -> int:
    optimizer = neural_network(spec).updateParams.optimizer
    return getattr(optimizer, optimizer.WhichOneof("OptimizerType")).miniBatchSize.defaultValue


def test_every_frontend_takes_the_cli_words_for_loss_and_optimizer(tmp_path):
    """'cce'/'mse' and 'sgd'/'adam', the command line's words, work in every Python entry
    point (torch used to want 'cross_entropy' and a torch.optim object, ONNX an SGD/Adam
    object); an unknown word names the choices."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from onnx import helper

    import onnx_helpers
    from updatable_coreml.exporters.onnx import export_onnx
    from updatable_coreml.exporters.torch import export_torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    export_torch(model, torch.zeros(1, 4), tmp_path / "t.mlmodel", loss="cce", optimizer="adam")
    built = onnx_helpers.model([helper.make_node("Relu", ["x"], ["features"])], (4,))
    export_onnx(built, tmp_path / "o.mlmodel", loss="cce", optimizer="adam", trainable="head")
    for name in ("t", "o"):
        params = update_params(tmp_path / f"{name}.mlmodel")
        assert params.optimizer.WhichOneof("OptimizerType") == "adamOptimizer", name
        assert params.optimizer.adamOptimizer.learningRate.defaultValue == pytest.approx(0.001)
        assert params.lossLayers[0].WhichOneof("LossLayerType") == (
            "categoricalCrossEntropyLossLayer"
        )
    with pytest.raises(ConfigError, match="'rmsprop'.*'sgd' or 'adam'"):
        export_torch(
            model, torch.zeros(1, 4), tmp_path / "x.mlmodel", loss="mse", optimizer="rmsprop"
        )
