"""The bad-input corpus: every command and API entry point, fed damaged, hostile or
unsupported input, must fail cleanly.

Each row of ``CASES`` is one input. It must give
  * CLI: exit code 2 (1 for ``validate`` on an invalid model) and exactly one line on
    stderr, ``updatable-coreml: error: ...``, no traceback;
  * API: the expected ``UpdatableCoreMLError`` subclass;
  * a message holding every word of the row: the offending layer/option/file and the fix;
and leave no output file (the output folder stays empty), every input file byte-identical
(sha256 of the whole corpus before/after), and no marker file from code that must never
run (a Keras Lambda, a pickled ``__reduce__`` in a torch checkpoint or a ``.pt2``).

The files are built once by ``bad_input_files.build_corpus``. The CLI runs in-process
(``cli.main``) for speed; ``test_cli_contract_in_a_real_process`` re-runs a few rows as real
processes to check the stderr contract at the file-descriptor level.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from bad_input_files import build_corpus
from updatable_coreml.cli import main
from updatable_coreml.errors import (
    ConfigError,
    ModelFileError,
    NotUpdatableError,
    RuntimeLayerError,
    UnsupportedError,
    UpdatableCoreMLError,
)

pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("PIL")


@dataclass(frozen=True)
class Case:
    id: str
    words: tuple[str, ...]  # each must appear in the message (case-insensitive)
    argv: Optional[str] = None  # CLI: arguments, {d} = corpus folder, {o} = output folder
    call: Optional[Callable] = None  # API: call(d, o) must raise ``error``
    error: type = UpdatableCoreMLError
    exit: int = 2


def cli(id: str, argv: str, *words: str, exit: int = 2) -> Case:
    return Case(id, words, argv=argv, exit=exit)


def api(id: str, error: type, call: Callable, *words: str) -> Case:
    return Case(id, words, call=call, error=error)


# -- API calls (imports stay inside: heavy frameworks load only when the row runs) --------------


def _keras_mlp(optimizer=None, loss="sparse_categorical_crossentropy"):
    import keras

    x = keras.Input((8,), name="x")
    h = keras.layers.Dense(6, activation="relu", name="hidden")(x)
    model = keras.Model(x, keras.layers.Dense(3, activation="softmax", name="head")(h))
    model.compile(loss=loss, optimizer=optimizer or "sgd")
    return model


def _export_keras(o, **options):
    from updatable_coreml.exporters.keras import export_keras

    model = _keras_mlp(
        options.pop("optimizer", None), options.pop("loss", "sparse_categorical_crossentropy")
    )
    return export_keras(model, o / "m.mlmodel", **options)


def _torch_net(frozen_bias=False):
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    if frozen_bias:
        net[0].requires_grad_(False)
        net[2].bias.requires_grad_(False)
    return net


def _export_torch(o, net=None, loss=None, optimizer=None, **options):
    import torch

    from updatable_coreml.exporters.torch import export_torch

    net = net if net is not None else _torch_net()
    opt = optimizer(net.parameters()) if optimizer else None
    return export_torch(
        net,
        torch.zeros(1, 8),
        o / "m.mlmodel",
        loss=loss or torch.nn.CrossEntropyLoss(),
        optimizer=opt,
        **options,
    )


def _torch_module(kind: str):
    import torch

    class Sorts(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(torch.sort(x, dim=1).values)

    class GeluBetween(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = torch.nn.Linear(8, 6), torch.nn.Linear(6, 3)

        def forward(self, x):
            return self.head(torch.nn.functional.gelu(self.body(x)))

    return {"sort": Sorts, "gelu": GeluBetween}[kind]()


def _ce(**options):
    import torch

    if "weight" in options:
        options["weight"] = torch.ones(3)
    return torch.nn.CrossEntropyLoss(**options)


def _sgd(**options):
    import torch

    return lambda params: torch.optim.SGD(params, lr=0.1, **options)


def _adam(**options):
    import torch

    return lambda params: torch.optim.Adam(params, **options)


def _export_onnx(source, o, **options):
    from updatable_coreml.exporters.onnx import export_onnx
    from updatable_coreml.training import SGD

    options.setdefault("loss", "mse")
    return export_onnx(str(source), o / "m.mlmodel", optimizer=SGD(), trainable=["head"], **options)


def _export_knn(source, o, **options):
    from updatable_coreml.knn import export_knn

    return export_knn(str(source), o / "k.mlmodel", **options)


def _load(source):
    from updatable_coreml.runtime import load

    return load(source)


def _image_update(d, **parameters):
    batch = {"image": np.zeros((4, 8, 8, 3), np.uint8), "label": ["red", "blue", "red", "blue"]}
    return _load(d / "image_classifier.mlmodel").update(batch, parameters=parameters)


def _make_updatable(source, o, **options):
    from updatable_coreml import make_updatable

    return make_updatable(str(source), o / "m.mlmodel", **options)


S = "simulate {d}/image_classifier.mlmodel"  # the updatable image classifier, with overrides
K = "--example-shape 8 --loss cce -o {o}/m.mlmodel"  # a torch factory export's usual flags

CASES = [
    # ---- inspect / validate: unreadable model files --------------------------------------
    cli(
        "inspect-empty",
        "inspect {d}/empty.mlmodel",
        "empty.mlmodel",
        "is empty",
        "Core ML .mlmodel",
    ),
    cli("inspect-missing", "inspect {d}/nowhere.mlmodel", "nowhere.mlmodel", "no such file"),
    cli(
        "inspect-directory",
        "inspect {d}/folder.mlmodel",
        "folder.mlmodel",
        "is a directory",
        "expected an .mlmodel",
    ),
    cli("inspect-truncated", "inspect {d}/truncated.mlmodel", "truncated.mlmodel", "truncated"),
    cli("inspect-not-protobuf", "inspect {d}/junk.mlmodel", "junk.mlmodel", "not a Core ML model"),
    cli(
        "inspect-mlpackage",
        "inspect {d}/Model.mlpackage",
        "Model.mlpackage",
        "ML Program",
        "convert_to='neuralnetwork'",
    ),
    cli(
        "inspect-mlpackage-bad-manifest",
        "inspect {d}/BadManifest.mlpackage",
        "Manifest.json",
        "not a valid package manifest",
        "damaged",
    ),
    cli(
        "inspect-mlpackage-path-leaves-package",
        "inspect {d}/Escaping.mlpackage",
        "Manifest.json",
        "../../../junk.mlmodel",
        "leaves the package",
    ),
    cli(
        "inspect-mlpackage-without-its-model",
        "inspect {d}/NoModel.mlpackage",
        "NoModel.mlpackage",
        "cannot read the root model",
        "damaged",
    ),
    cli(
        "validate-not-protobuf",
        "validate {d}/plain.mlmodel {d}/junk.mlmodel",
        "junk.mlmodel",
        "not a Core ML model",
    ),
    cli(
        "validate-ml-program",
        "validate {d}/program.mlmodel",
        "ML_PROGRAM",
        "convert_to='neuralnetwork'",
        exit=1,
    ),
    cli(
        "validate-plain-network",
        "validate {d}/plain.mlmodel",
        "NOT_UPDATABLE",
        "make-updatable",
        exit=1,
    ),
    # ---- make-updatable ------------------------------------------------------------------
    cli(
        "make-updatable-ml-program",
        "make-updatable {d}/program.mlmodel -o {o}/m.mlmodel --trainable fc",
        "program.mlmodel",
        "mlProgram",
        "convert_to='neuralnetwork'",
    ),
    cli(
        "make-updatable-softmax-nd-over-batch-axis",
        "make-updatable {d}/softmax_nd.mlmodel -o {o}/m.mlmodel --trainable fc",
        "'softmax'",
        "softmaxND over axis 0",
        "class axis",
    ),
    cli(
        "make-updatable-activation-layer",
        "make-updatable {d}/plain.mlmodel -o {o}/m.mlmodel --trainable relu10",
        "relu10",
        "activation",
        "only convolution and innerProduct",
    ),
    cli(
        "make-updatable-concat-on-trainable-path",
        "make-updatable {d}/plain.mlmodel -o {o}/m.mlmodel --trainable fire2/squeeze",
        "fire2/concat",
        "fire2/squeeze",
    ),
    cli(
        "make-updatable-quantized-weights",
        "make-updatable {d}/quantized.mlmodel -o {o}/m.mlmodel --trainable fc",
        "fc",
        "quantized",
        "fp32",
    ),
    cli(
        "make-updatable-unknown-layer",
        "make-updatable {d}/plain.mlmodel -o {o}/m.mlmodel --trainable fc7",
        "fc7",
        "layers are",
        "conv10",
    ),
    cli(
        "make-updatable-lr-outside-range",
        "make-updatable {d}/plain.mlmodel -o {o}/m.mlmodel "
        "--trainable fc --lr 0.1 --lr-range 0.2,0.5",
        "learning rate",
        "0.2..0.5",
    ),
    cli(
        "make-updatable-epochs-not-allowed",
        "make-updatable {d}/plain.mlmodel -o {o}/m.mlmodel "
        "--trainable fc --epochs 5 --allowed-epochs 1,2",
        "epochs",
        "[1, 2]",
        "add it to the set",
    ),
    cli(
        "make-updatable-adam-option-on-sgd",
        "make-updatable {d}/plain.mlmodel -o {o}/m.mlmodel --trainable fc --beta1 0.8",
        "beta1",
        "Adam",
        "SGD takes --lr and --momentum",
    ),
    cli(
        "make-updatable-fewer-classes",
        "make-updatable {d}/plain.mlmodel -o {o}/m.mlmodel --trainable fc --extra-class-slots 0",
        "--extra-class-slots 0",
        "1 or more spare classes",
    ),
    cli(
        "make-updatable-spare-classes-without-labels",
        "make-updatable {d}/mlp.mlmodel -o {o}/m.mlmodel "
        "--trainable out --loss mse --extra-class-slots 2",
        "--extra-class-slots",
        "needs a neural network classifier",
    ),
    cli(
        "make-updatable-no-trainable-layers",
        "make-updatable {d}/plain.mlmodel -o {o}/m.mlmodel",
        "choose the layers to train",
        "--trainable",
    ),
    cli(
        "export-adam-option-without-optimizer",
        "export {d}/good.onnx --loss cce --beta1 0.8 -o {o}/m.mlmodel",
        "--beta1",
        "add --optimizer adam",
    ),
    cli(
        "make-updatable-missing-folder",
        "make-updatable {d}/plain.mlmodel -o {o}/nowhere/m.mlmodel --trainable fc",
        "nowhere",
        "does not exist",
        "create it",
    ),
    cli(
        "make-updatable-folder-is-a-file",
        "make-updatable {d}/plain.mlmodel -o {d}/a_file/m.mlmodel --trainable fc",
        "a_file",
        "is not a folder",
    ),
    cli(
        "make-updatable-read-only-folder",
        "make-updatable {d}/plain.mlmodel -o {ro}/m.mlmodel --trainable fc",
        "m.mlmodel",
        "cannot write",
    ),
    cli(
        "make-updatable-overwrites-input",
        "make-updatable {d}/plain.mlmodel -o {d}/plain.mlmodel --trainable fc",
        "plain.mlmodel",
        "overwrite the input",
        "another path",
    ),
    # ---- simulate ------------------------------------------------------------------------
    cli(
        "simulate-not-updatable",
        "simulate {d}/plain.mlmodel --train {d}/ok.npz",
        "plain.mlmodel",
        "not updatable",
        "make-updatable",
    ),
    cli(
        "simulate-ml-program",
        "simulate {d}/program.mlmodel --train {d}/ok.npz",
        "program.mlmodel",
        "ML Program",
        "convert_to='neuralnetwork'",
    ),
    cli(
        "simulate-empty-training-folder",
        S + " --train {d}/train_empty",
        "train_empty",
        "no images found",
        "one subfolder of images per label",
    ),
    cli(
        "simulate-label-not-in-classifier",
        S + " --train {d}/train_unknown_label",
        "train_unknown_label",
        "'green'",
        "class labels",
        "blue, red",
    ),
    cli(
        "simulate-truncated-image",
        S + " --train {d}/train_corrupt",
        "blue/0.png",
        "cannot read the image",
        "replace or remove",
    ),
    cli(
        "simulate-decompression-bomb",
        S + " --train {d}/train_bomb",
        "blue/0.png",
        "900000000 pixels",
        "replace or remove",
    ),
    cli(
        "simulate-images-of-wrong-size",
        S + " --train {d}/wrong_size.npz",
        "'image'",
        "5x5",
        "expects 8x8",
        "resize",
    ),
    cli(
        "simulate-images-of-wrong-mode",
        S + " --train {d}/wrong_mode.npz",
        "'image'",
        "(8, 8, 4)",
        "H x W x 3 (RGB)",
    ),
    cli(
        "simulate-grayscale-for-rgb",
        S + " --train {d}/gray_for_rgb.npz",
        "'image'",
        "(8, 8)",
        "H x W x 3 (RGB)",
    ),
    cli(
        "simulate-npz-label-not-in-classifier",
        S + " --train {d}/unknown_label.npz",
        "'green'",
        "class labels",
        "'blue', 'red'",
    ),
    cli(
        "simulate-npz-with-pickled-objects",
        S + " --train {d}/objects.npz",
        "objects.npz",
        "allow_pickle=False",
        "numpy.savez",
    ),
    cli(
        "simulate-truncated-npz",
        S + " --train {d}/truncated.npz",
        "truncated.npz",
        "cannot read the .npz",
        "numpy.savez",
    ),
    cli("simulate-no-such-data", S + " --train {d}/nowhere", "nowhere", "no such file or folder"),
    cli(
        "simulate-epochs-not-allowed",
        S + " --train {d}/ok.npz --epochs 7",
        "epochs=7",
        "allowed: {1, 2, 3}",
    ),
    cli(
        "simulate-lr-outside-range",
        S + " --train {d}/ok.npz --lr 5",
        "learningRate=5",
        "allowed: 0..1",
    ),
    cli(
        "simulate-batch-size-not-allowed",
        S + " --train {d}/ok.npz --batch-size 3",
        "miniBatchSize=3",
        "allowed: {4}",
    ),
    cli(
        "simulate-out-missing-folder",
        S + " --train {d}/ok.npz -o {o}/nowhere/u.mlmodel",
        "nowhere",
        "does not exist",
        "create it",
    ),
    cli(
        "simulate-out-overwrites-model",
        S + " --train {d}/ok.npz -o {d}/image_classifier.mlmodel",
        "image_classifier.mlmodel",
        "overwrite the input",
    ),
    cli(
        "simulate-plot-under-a-file",
        S + " --train {d}/ok.npz --plot {d}/a_file/loss.png",
        "a_file",
        "is not a folder",
    ),
    # ---- swift ---------------------------------------------------------------------------
    cli(
        "swift-not-updatable",
        "swift {d}/plain.mlmodel -o {o}/T.swift",
        "plain.mlmodel",
        "not updatable",
        "make-updatable",
    ),
    cli(
        "swift-ml-program",
        "swift {d}/program.mlmodel -o {o}/T.swift",
        "program.mlmodel",
        "ML Program",
        "convert_to='neuralnetwork'",
    ),
    cli(
        "swift-bad-class-name",
        "swift {d}/updatable.mlmodel -o {o}/T.swift --class-name 9lives",
        "9lives",
        "not a Swift type name",
    ),
    cli(
        "swift-missing-folder",
        "swift {d}/updatable.mlmodel -o {o}/nowhere/T.swift",
        "nowhere",
        "does not exist",
    ),
    cli(
        "swift-truncated-model",
        "swift {d}/truncated.mlmodel -o {o}/T.swift",
        "truncated.mlmodel",
        "truncated",
    ),
    # ---- export: Keras files -------------------------------------------------------------
    cli(
        "export-keras-lambda-not-run",
        "export {d}/lambda.keras -o {o}/m.mlmodel",
        "lambda.keras",
        "Lambda",
        "replace it with built-in layers",
    ),
    cli(
        "export-h5-lambda-not-run",
        "export {d}/lambda.h5 -o {o}/m.mlmodel",
        "lambda.h5",
        "Lambda",
        "replace it with built-in layers",
    ),
    cli(
        "export-keras-unsupported-op",
        "export {d}/unitnorm.keras -o {o}/m.mlmodel",
        "'norm'",
        "UnitNormalization",
        "no Core ML converter",
        "trainable path",
        "supported-ops",
    ),
    cli(
        "export-keras-gelu-on-trainable-path",
        "export {d}/gelu_on_path.keras -o {o}/m.mlmodel",
        "'gelu'",
        "hidden",
        "freeze",
    ),
    cli(
        "export-keras-label-smoothing",
        "export {d}/smoothing.keras -o {o}/m.mlmodel",
        "label_smoothing=0.1",
        "compile without it",
    ),
    cli(
        "export-keras-nesterov",
        "export {d}/nesterov.keras -o {o}/m.mlmodel",
        "nesterov=True",
        "plain momentum",
        "allow_unsupported",
    ),
    cli(
        "export-keras-truncated",
        "export {d}/truncated.keras -o {o}/m.mlmodel",
        "truncated.keras",
        "truncated",
        "model.save",
    ),
    cli("export-keras-empty", "export {d}/empty.keras -o {o}/m.mlmodel", "empty.keras", "empty"),
    cli(
        "export-keras-directory",
        "export {d}/folder.keras -o {o}/m.mlmodel",
        "folder.keras",
        "is a directory",
    ),
    cli(
        "export-keras-missing",
        "export {d}/nowhere.keras -o {o}/m.mlmodel",
        "nowhere.keras",
        "no such file",
    ),
    cli(
        "export-class-label-count",
        "export {d}/good.keras -o {o}/m.mlmodel --class-labels a,b",
        "2 class labels",
        "'head'",
        "(3,)",
        "one label per output unit",
    ),
    cli(
        "export-duplicate-class-labels",
        "export {d}/good.keras -o {o}/m.mlmodel --class-labels a,b,a",
        "unique",
        "'a'",
        "its own label",
    ),
    cli(
        "export-lr-outside-range",
        "export {d}/good.keras -o {o}/m.mlmodel --optimizer sgd --lr 0.1 --lr-range 0.5,0.9",
        "learning rate 0.1",
        "0.5..0.9",
    ),
    cli(
        "export-overwrites-source",
        "export {d}/good.keras -o {d}/good.keras",
        "good.keras",
        "overwrite the input",
    ),
    cli(
        "export-missing-output-folder",
        "export {d}/good.keras -o {o}/nowhere/m.mlmodel",
        "nowhere",
        "does not exist",
    ),
    cli(
        "export-read-only-output-folder",
        "export {d}/good.keras -o {ro}/m.mlmodel",
        "m.mlmodel",
        "cannot write",
    ),
    cli(
        "export-report-under-a-file",
        "export {d}/good.keras -o {o}/m.mlmodel --report {d}/a_file/r.json",
        "a_file",
        "is not a folder",
    ),
    cli(
        "export-config-unknown-key",
        "export {d}/good.keras -o {o}/m.mlmodel --config {d}/unknown_key.toml",
        "unknown_key.toml",
        "'lossy'",
        "settings are",
    ),
    cli(
        "export-unknown-source-type",
        "export {d}/a_file -o {o}/m.mlmodel",
        "a_file",
        "unknown source type",
        ".keras",
    ),
    # ---- export: torch sources -----------------------------------------------------------
    cli(
        "export-torch-pickle-runs-code",
        "export {d}/net.py:build --weights {d}/evil_state.pt " + K,
        "evil_state.pt",
        "weights_only=True",
        "state_dict()",
    ),
    cli(
        "export-torch-whole-module-pickle",
        "export {d}/net.py:build --weights {d}/whole_module.pt " + K,
        "whole_module.pt",
        "weights_only=True",
        "state_dict()",
    ),
    cli(
        "export-torch-state-dict-mismatch",
        "export {d}/net.py:build --weights {d}/other_arch.pt " + K,
        "other_arch.pt",
        "fc.weight",
        "same architecture",
    ),
    cli(
        "export-torch-pt2-untrusted",
        "export {d}/evil.pt2 --loss cce -o {o}/m.mlmodel",
        "evil.pt2",
        "can run code",
        "--trust-source",
        "ONNX",
    ),
    cli(
        "export-torch-pt2-trusted-but-truncated",
        "export {d}/truncated.pt2 --trust-source --loss cce -o {o}/m.mlmodel",
        "truncated.pt2",
        "not a torch.export program",
    ),
    cli(
        "export-torch-no-loss",
        "export {d}/net.py:build --example-shape 8 -o {o}/m.mlmodel",
        "no loss",
        "--loss cce|mse",
    ),
    cli(
        "export-torch-wrong-example-shape",
        "export {d}/net.py:build --example-shape 5 --loss cce -o {o}/m.mlmodel",
        "example_inputs",
        "[1, 5]",
    ),
    cli(
        "export-torch-no-factory",
        "export {d}/net.py:make --example-shape 8 --loss cce -o {o}/m.mlmodel",
        "net.py",
        "'make'",
    ),
    # ---- export: ONNX files --------------------------------------------------------------
    cli(
        "export-onnx-external-data-missing",
        "export {d}/external.onnx --loss mse -o {o}/m.mlmodel",
        "external.onnx.data",
        "not found next to the model",
    ),
    cli(
        "export-onnx-external-data-escapes",
        "export {d}/escape.onnx --loss mse -o {o}/m.mlmodel",
        "../../etc/passwd",
        "outside the model's folder",
    ),
    cli(
        "export-onnx-unsupported-op",
        "export {d}/einsum.onnx --loss mse -o {o}/m.mlmodel",
        "'outer'",
        "Einsum",
        "no Core ML converter",
        "supported op",
    ),
    cli(
        "export-onnx-not-protobuf",
        "export {d}/junk.onnx --loss mse -o {o}/m.mlmodel",
        "junk.onnx",
        "not an ONNX model",
    ),
    cli("export-onnx-no-loss", "export {d}/good.onnx -o {o}/m.mlmodel", "ONNX", "--loss cce|mse"),
    cli(
        "export-onnx-unknown-trainable",
        "export {d}/good.onnx --loss mse --trainable haed -o {o}/m.mlmodel",
        "'haed'",
        "did you mean",
        "head",
    ),
    cli(
        "export-onnx-adam-beta-range",
        "export {d}/good.onnx --loss mse --optimizer adam --beta1 1.5 -o {o}/m.mlmodel",
        "beta1",
        "[0, 1]",
        "1.5",
    ),
    # ---- API: export_keras ---------------------------------------------------------------
    api(
        "export_keras-weight-decay",
        UnsupportedError,
        lambda d, o: _export_keras(
            o, optimizer=__import__("keras").optimizers.Adam(weight_decay=0.01)
        ),
        "weight_decay=0.01",
        "compile without it",
    ),
    api(
        "export_keras-amsgrad",
        UnsupportedError,
        lambda d, o: _export_keras(o, optimizer=__import__("keras").optimizers.Adam(amsgrad=True)),
        "amsgrad=True",
        "allow_unsupported",
    ),
    api(
        "export_keras-hinge-loss",
        UnsupportedError,
        lambda d, o: _export_keras(o, loss="hinge"),
        "'hinge'",
        "categorical cross-entropy and mean squared error",
    ),
    api(
        "export_keras-unknown-trainable",
        ConfigError,
        lambda d, o: _export_keras(o, trainable=["haed"]),
        "'haed'",
        "did you mean",
        "head",
    ),
    api(
        "export_keras-extra-slots-negative",
        ConfigError,
        lambda d, o: _export_keras(o, class_labels=["a", "b", "c"], extra_class_slots=-1),
        "extra_class_slots",
        ">= 0",
    ),
    # ---- API: export_torch ---------------------------------------------------------------
    api(
        "export_torch-weight-trains-bias-frozen",
        NotUpdatableError,
        lambda d, o: _export_torch(o, _torch_net(frozen_bias=True)),
        "'2'",
        "bias",
        "train both or neither",
    ),
    api(
        "export_torch-class-weights",
        UnsupportedError,
        lambda d, o: _export_torch(o, loss=_ce(weight=1)),
        "weight=",
        "no class weights",
        "rebalance",
    ),
    api(
        "export_torch-label-smoothing",
        UnsupportedError,
        lambda d, o: _export_torch(o, loss=_ce(label_smoothing=0.1)),
        "label_smoothing=0.1",
    ),
    api(
        "export_torch-nesterov",
        UnsupportedError,
        lambda d, o: _export_torch(o, optimizer=_sgd(momentum=0.9, nesterov=True)),
        "nesterov=True",
        "classical",
    ),
    api(
        "export_torch-weight-decay",
        UnsupportedError,
        lambda d, o: _export_torch(o, optimizer=_sgd(weight_decay=1e-4)),
        "weight_decay=0.0001",
        "set it to 0",
    ),
    api(
        "export_torch-amsgrad",
        UnsupportedError,
        lambda d, o: _export_torch(o, optimizer=_adam(amsgrad=True)),
        "amsgrad=True",
        "AMSGrad",
    ),
    api(
        "export_torch-unsupported-op",
        UnsupportedError,
        lambda d, o: _export_torch(o, _torch_module("sort")),
        "'sort'",
        "no Core ML converter",
        "replace it",
    ),
    api(
        "export_torch-gelu-on-trainable-path",
        NotUpdatableError,
        lambda d, o: _export_torch(o, _torch_module("gelu")),
        "'gelu'",
        "'body'",
        "freeze",
    ),
    api(
        "export_torch-duplicate-int-labels",
        ConfigError,
        lambda d, o: _export_torch(o, class_labels=[1, 1, 2]),
        "unique",
        "1",
        "its own label",
    ),
    api(
        "export_torch-batch-size-not-allowed",
        ConfigError,
        lambda d, o: _export_torch(o, batch_size=4, allowed_batch_sizes=[1, 2]),
        "batch size",
        "[1, 2]",
        "add it to the set",
    ),
    api(
        "export_torch-lr-range-above-one",
        ConfigError,
        lambda d, o: _export_torch(o, lr_range=(0, 5)),
        "learning rate range",
        "[0, 1]",
    ),
    # ---- API: export_onnx, export_knn ----------------------------------------------------
    api(
        "export_onnx-external-data-missing",
        ModelFileError,
        lambda d, o: _export_onnx(d / "external.onnx", o),
        "external.onnx.data",
        "not found",
    ),
    api(
        "export_onnx-class-label-count",
        ConfigError,
        lambda d, o: _export_onnx(d / "good.onnx", o, loss="cce", class_labels=["a", "b"]),
        "2 class labels",
        "one label per output unit",
    ),
    api(
        "export_knn-ml-program",
        UnsupportedError,
        lambda d, o: _export_knn(d / "program.mlmodel", o),
        "mlProgram",
        "NeuralNetwork",
    ),
    api(
        "export_knn-unknown-feature-layer",
        ConfigError,
        lambda d, o: _export_knn(d / "plain.mlmodel", o, feature_layer="fc7"),
        "'fc7'",
        "layers:",
        "conv10",
    ),
    api(
        "export_knn-k-outside-range",
        ConfigError,
        lambda d, o: _export_knn(
            d / "plain.mlmodel", o, feature_layer="flat", k=20, k_range=(1, 10)
        ),
        "20",
        "1..10",
    ),
    api(
        "export_knn-truncated-extractor",
        ModelFileError,
        lambda d, o: _export_knn(d / "truncated.mlmodel", o),
        "truncated.mlmodel",
        "truncated",
    ),
    api(
        "make_updatable-ml-program",
        NotUpdatableError,
        lambda d, o: _make_updatable(d / "program.mlmodel", o, layers=["fc"]),
        "mlProgram",
        "convert_to='neuralnetwork'",
    ),
    # ---- API: runtime --------------------------------------------------------------------
    api(
        "runtime.load-ml-program",
        ModelFileError,
        lambda d, o: _load(d / "program.mlmodel"),
        "program.mlmodel",
        "ML Program",
        "convert_to='neuralnetwork'",
    ),
    api(
        "runtime.load-absurd-input-shape",
        ModelFileError,
        lambda d, o: _load(d / "huge_input.mlmodel"),
        "huge_input.mlmodel",
        "'x'",
        "1,099,511,627,776",
        "fix the shape",
    ),
    api(
        "runtime.load-truncated-bytes",
        ModelFileError,
        lambda d, o: _load((d / "truncated.mlmodel").read_bytes()),
        "<bytes>",
        "truncated",
    ),
    api(
        "runtime.load-compute-dtype",
        ConfigError,
        lambda d, o: __import__("updatable_coreml.runtime", fromlist=["load"]).load(
            d / "updatable.mlmodel", dtype=np.int32
        ),
        "dtype",
        "float32 or float64",
    ),
    api(
        "runtime.predict-absurd-upsample",
        RuntimeLayerError,
        lambda d, o: _load(d / "huge_upsample.mlmodel").predict(
            {"x": np.zeros((1, 4, 4), np.float32)}
        ),
        "'blowup'",
        "upsample",
        "check the layer's parameters",
    ),
    api(
        "runtime.predict-missing-input",
        ConfigError,
        lambda d, o: _load(d / "updatable.mlmodel").predict({"picture": np.zeros((3, 16, 16))}),
        "'image'",
        "the model takes",
    ),
    api(
        "runtime.predict-strings-for-numbers",
        ConfigError,
        lambda d, o: _load(d / "updatable.mlmodel").predict({"image": np.full((3, 16, 16), "a")}),
        "'image'",
        "must be numeric",
    ),
    api(
        "runtime.update-label-not-in-classifier",
        ConfigError,
        lambda d, o: _load(d / "image_classifier.mlmodel").update(
            {"image": np.zeros((2, 8, 8, 3), np.uint8), "label": ["green", "red"]}
        ),
        "'green'",
        "class labels",
        "'blue', 'red'",
    ),
    api(
        "runtime.update-epochs-not-allowed",
        ConfigError,
        lambda d, o: _image_update(d, epochs=1000),
        "epochs=1000",
        "allowed: {1, 2, 3}",
    ),
    api(
        "runtime.update-parameter-not-a-number",
        ConfigError,
        lambda d, o: _image_update(d, learningRate="fast"),
        "learningRate",
        "must be a number",
    ),
    api(
        "runtime.update-not-updatable",
        ModelFileError,
        lambda d, o: _load(d / "plain.mlmodel").update(
            {"image": np.zeros((2, 3, 16, 16)), "classLabel": ["class0", "class1"]}
        ),
        "not updatable",
        "export it with updatable layers",
    ),
    api(
        "runtime.save-missing-folder",
        ModelFileError,
        lambda d, o: _load(d / "updatable.mlmodel").save(o / "nowhere" / "m.mlmodel"),
        "nowhere",
        "does not exist",
    ),
]


# -- the corpus, its markers, a read-only folder --------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    marker = root.parent / f"{root.name}-CODE-RAN"
    data = build_corpus(root / "corpus", marker)
    shutil.copytree(data, root / "pristine")
    read_only = _read_only_folder(root / "locked")
    yield data, marker, read_only
    if read_only is not None and read_only.is_relative_to(root):
        subprocess.run(["chattr", "-i", str(read_only)], capture_output=True)


def _read_only_folder(path: Path) -> Optional[Path]:
    """A folder nobody can create files in, even root (tests run as root): ``chattr +i``, else
    a read-only system folder; None when neither exists."""
    path.mkdir()
    if (
        shutil.which("chattr")
        and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    ):
        try:
            (path / "probe").touch()
        except OSError:
            return path
    for candidate in (Path("/sys"), Path("/proc/sys")):
        try:
            (candidate / "updatable-coreml-probe").touch()
        except OSError:
            return candidate
    return None


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: file -> sha256, folder -> 'dir'."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        found[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _left_clean(data: Path, before: dict, marker: Path) -> None:
    """Assert the corpus is unchanged and no code ran; repair both first, so one failing row
    does not fail the rows after it."""
    changed = _snapshot(data) != before
    if changed:
        shutil.rmtree(data)
        shutil.copytree(data.parent / "pristine", data)
    ran = marker.exists()
    marker.unlink(missing_ok=True)
    assert not ran, "code from an untrusted file ran"
    assert not changed, "an input file was changed, or a file was left behind"


def _message_has(message: str, words: tuple[str, ...]) -> None:
    missing = [w for w in words if w.lower() not in message.lower()]
    assert not missing, f"message lacks {missing}: {message}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_cleanly(case, corpus, tmp_path, capsys):
    data, marker, read_only = corpus
    if "{ro}" in (case.argv or "") and read_only is None:
        pytest.skip("no folder that root cannot write to (no chattr, no read-only /sys)")
    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot(data)
    if case.argv is not None:
        argv = case.argv.format(d=data, o=out, ro=read_only).split()
        try:
            code = main(argv)
        finally:
            captured = capsys.readouterr()
            _left_clean(data, before, marker)
        assert code == case.exit, f"exit {code}: {captured.err}"
        if case.exit == 2:
            lines = captured.err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("updatable-coreml: error: "), (
                captured.err
            )
            message = lines[0]
        else:  # validate: the findings are the report, on stdout
            assert captured.err == ""
            message = captured.out
        assert "Traceback" not in captured.err + captured.out
    else:
        with pytest.raises(UpdatableCoreMLError) as info:
            try:
                case.call(data, out)
            finally:
                _left_clean(data, before, marker)
        assert isinstance(info.value, case.error), f"{type(info.value).__name__}: {info.value}"
        message = str(info.value)
        assert "\n" not in message.strip(), "an error message must be one line"
    _message_has(message, case.words)
    assert os.listdir(out) == [], "an output file was created"
    if read_only is not None and read_only.name == "locked":
        assert os.listdir(read_only) == []


def test_corpus_covers_every_entry_point():
    commands = {c.argv.split()[0] for c in CASES if c.argv}
    assert commands >= {"inspect", "validate", "make-updatable", "simulate", "swift", "export"}
    calls = " ".join(c.id for c in CASES if c.call)
    for entry in (
        "export_keras",
        "export_torch",
        "export_onnx",
        "export_knn",
        "runtime.load",
        "runtime.predict",
        "runtime.update",
    ):
        assert entry in calls, entry
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)


# -- the same contract in real processes ---------------------------------------------------------

REAL_PROCESS = [
    "inspect-not-protobuf",
    "simulate-decompression-bomb",
    "export-torch-pickle-runs-code",
    "export-torch-pt2-untrusted",
    "export-keras-lambda-not-run",
]


@pytest.mark.parametrize("case_id", REAL_PROCESS)
def test_cli_contract_in_a_real_process(case_id, corpus, tmp_path):
    data, marker, read_only = corpus
    case = next(c for c in CASES if c.id == case_id)
    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot(data)
    argv = case.argv.format(d=data, o=out, ro=read_only).split()
    result = subprocess.run(
        [sys.executable, "-m", "updatable_coreml.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("updatable-coreml: error: "), result.stderr
    _left_clean(data, before, marker)
    _message_has(lines[0], case.words)
    assert os.listdir(out) == []


# -- the failure-modes page documents every error type and validator code ----------------------


def test_failure_modes_page_is_current_and_complete():
    import importlib.util
    import inspect

    from updatable_coreml import errors
    from updatable_coreml.validator import CODES

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("gen_docs", root / "docs" / "gen_docs.py")
    gen_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_docs)
    page = gen_docs.failure_modes_page()  # a new error class without causes fails here
    assert (root / "docs" / "failure-modes.md").read_text(encoding="utf-8") == page, (
        "docs/failure-modes.md is stale: run python docs/gen_docs.py"
    )
    for name, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.UpdatableCoreMLError) and cls is not errors.UpdatableCoreMLError:
            assert f"### {name}" in page
    for code in CODES:
        assert f"[`{code}`](validator-findings.md#{code.lower()})" in page
    assert "--trust-source" in page


def test_trust_source_is_the_only_way_to_load_a_pt2(corpus, tmp_path, capsys):
    data, marker, _ = corpus
    out = tmp_path / "m.mlmodel"
    assert main(["export", str(data / "clean.pt2"), "--loss", "cce", "-o", str(out)]) == 2
    assert "--trust-source" in capsys.readouterr().err and not out.exists()
    assert (
        main(["export", str(data / "clean.pt2"), "--trust-source", "--loss", "cce", "-o", str(out)])
        == 0
    )
    assert out.exists() and not marker.exists()
    (tmp_path / "trust.toml").write_text("trust_source = true\n")  # a config file cannot grant it
    assert (
        main(
            [
                "export",
                str(data / "clean.pt2"),
                "--config",
                str(tmp_path / "trust.toml"),
                "--loss",
                "cce",
                "-o",
                str(tmp_path / "n.mlmodel"),
            ]
        )
        == 2
    )
    assert "unknown setting 'trust_source'" in capsys.readouterr().err
