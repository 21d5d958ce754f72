"""Assumption presets, the unknowns' combinations, and export reports naming the source form."""

from __future__ import annotations

import pytest

from updatable_coreml.errors import ConfigError
from updatable_coreml.runtime.assumptions import (
    DEFAULT,
    ML_COMPUTE,
    PRESETS,
    Assumptions,
    framework_form_note,
    relevant_unknowns,
    resolve,
    variants,
)


def test_presets_and_resolve():
    assert resolve(None) is DEFAULT and resolve("espresso") is DEFAULT
    assert (
        resolve("ml-compute")
        == ML_COMPUTE
        == DEFAULT.replace(partial_batch="short", epoch_loss="mean")
    )
    assert (PRESETS["keras"].momentum, PRESETS["keras"].adam) == ("keras", "keras")
    custom = Assumptions(adam="uncorrected")
    assert resolve(custom) is custom
    with pytest.raises(ConfigError, match="unknown assumptions 'all'"):
        resolve("all")  # 'all' is many runs, not one Assumptions: simulate handles it
    with pytest.raises(ConfigError, match="shuffle_order='libstdc\\+\\+' is not one of"):
        Assumptions(shuffle_order="libstdc++")


def test_core_ml_defaults_are_what_was_seen():
    assert DEFAULT.shuffle_order == "coreml" and DEFAULT.shuffle_when_absent is False
    assert (DEFAULT.partial_batch, DEFAULT.epoch_loss) == ("wrap", "last")


@pytest.mark.parametrize(
    "optimizer,loss,momentum,fields,count",
    [
        ("sgd", "cce", False, ("batch_reduction",), 2),
        ("sgd", "cce", True, ("momentum", "batch_reduction"), 4),
        ("sgd", "mse", True, ("momentum", "batch_reduction", "mse_reduction"), 8),
        ("adam", "cce", False, ("adam", "batch_reduction"), 6),
        ("adam", "mse", False, ("adam", "batch_reduction", "mse_reduction"), 12),
    ],
)
def test_only_the_unknowns_that_matter_are_varied(optimizer, loss, momentum, fields, count):
    assert relevant_unknowns(optimizer, loss, momentum) == fields
    combos = variants(DEFAULT, fields)
    assert combos[0] == DEFAULT and len(combos) == len(set(combos)) == count
    assert {c.partial_batch for c in combos} == {"wrap"}  # known behaviour stays fixed


def test_variants_start_from_the_given_base():
    combos = variants(PRESETS["keras"], ("adam",))
    assert combos[0] == PRESETS["keras"] and [c.adam for c in combos] == [
        "keras",
        "torch",
        "uncorrected",
    ]


def test_form_notes_name_both_frameworks():
    torch_sgd = framework_form_note("torch", "sgd", 0.9)
    assert torch_sgd.startswith(
        "SGD momentum in PyTorch's form (v = m*v + g; w -= lr*v; Keras's: v = m*v - lr*g; w += v)"
    )
    assert "--assumptions torch" in torch_sgd and "--assumptions all" in torch_sgd
    assert framework_form_note("torch", "sgd", 0.0) == ""
    keras_adam = framework_form_note("keras", "adam")
    assert keras_adam.startswith("Adam in Keras's form (eps added to sqrt(v)")
    assert "--assumptions keras" in keras_adam


def test_torch_export_report_names_torch_forms(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("coremltools")
    from updatable_coreml.exporters.torch import export_torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    for optimizer, needle in (
        (
            torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            "SGD momentum in PyTorch's form",
        ),
        (torch.optim.Adam(model.parameters(), lr=0.01), "Adam in PyTorch's form"),
    ):
        report = export_torch(
            model,
            torch.randn(1, 4),
            tmp_path / "m.mlmodel",
            loss=torch.nn.CrossEntropyLoss(),
            optimizer=optimizer,
        )
        assert any(note.startswith(needle) for note in report.assumptions), report.assumptions
        assert needle in report.summary()


def test_keras_export_report_names_keras_forms(tmp_path):
    keras = pytest.importorskip("keras")
    from updatable_coreml.exporters.keras import export_keras

    for optimizer, needle in (
        (keras.optimizers.SGD(0.01, momentum=0.9), "SGD momentum in Keras's form"),
        (keras.optimizers.Adam(0.001), "Adam in Keras's form"),
    ):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer)
        report = export_keras(model, tmp_path / "m.mlmodel")
        assert any(note.startswith(needle) for note in report.assumptions), report.assumptions
