"""Models exported to ONNX from torch: forward parity of a full small CNN against onnxruntime,
and training parity: the exported model updated by the reference runtime ends with the
weights torch's own optimizer reaches on the same mini-batches (shuffle off)."""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from torch import nn  # noqa: E402

from onnx_helpers import onnxruntime_run  # noqa: E402
from test_torch_training import BATCH, EPOCHS, RELATIVE, data, layer_weights, small_cnn, train_torch  # noqa: E402
from updatable_coreml.exporters.onnx import export_onnx  # noqa: E402
from updatable_coreml.runtime import load  # noqa: E402
from updatable_coreml.training import SGD, Adam  # noqa: E402


def to_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """The classic (TorchScript) exporter, dynamic batch: what most repos ship."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            buffer,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return buffer.getvalue()


class BigCNN(nn.Module):
    """Conv + batch norm + pooling + a flattening view + dropout + two dense layers."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(8, 8, 3, stride=2, groups=2),
            nn.LeakyReLU(0.1),
            nn.AvgPool2d(2, padding=1),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.2), nn.Linear(8 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, 5)
        )

    def forward(self, x):
        x = self.features(x)
        return torch.softmax(self.classifier(x.view(x.size(0), -1)), dim=1)


def randomized(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics, so folding them is tested."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(module.num_features, generator=generator))
    return model.eval()


def test_full_small_cnn_forward_parity(tmp_path):
    torch.manual_seed(0)
    onnx_bytes = to_onnx(randomized(BigCNN()), torch.zeros(1, 3, 13, 13))
    path = tmp_path / "cnn.mlmodel"
    report = export_onnx(
        onnx_bytes,
        path,
        loss="cce",
        optimizer=SGD(),
        trainable=["classifier"],
        class_labels=list("abcde"),
        seed=0,
    )
    assert len(report.trainable) == 2
    x = np.random.default_rng(0).normal(size=(6, 3, 13, 13)).astype(np.float32)
    got = load(path).predict({"x": x})["y"]
    probabilities = np.array([[row[label] for label in "abcde"] for row in got])
    assert np.abs(probabilities - onnxruntime_run(onnx_bytes, {"x": x})).max() <= 1e-4


OPTIMIZERS = {
    "sgd_momentum": (lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9), SGD(0.05, 0.9)),
    "adam": (
        lambda params: torch.optim.Adam(params, lr=0.01, betas=(0.8, 0.99), eps=1e-7),
        Adam(0.01, 0.8, 0.99, 1e-7),
    ),
}


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_training_parity_against_torch(optimizer_name, tmp_path):
    """Every conv/dense layer trains (named by torch module path, as the initializers are)."""
    model = small_cnn()
    trained = copy.deepcopy(model)
    x, y = data(12, (3, 8, 8), 3)
    make_torch, optimizer = OPTIMIZERS[optimizer_name]
    path = tmp_path / "m.mlmodel"
    report = export_onnx(
        to_onnx(model, x[:1]),
        path,
        loss="cce",
        optimizer=optimizer,
        trainable=["0", "4", "6"],
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
    )
    result = load(path).update({"x": x.numpy(), "y_true": y.numpy()})
    train_torch(trained, make_torch(trained.parameters()), nn.CrossEntropyLoss(), x, y)
    modules = {
        "0": (model[0], trained[0]),
        "4": (model[4], trained[4]),
        "6": (model[6], trained[6]),
    }
    for layer, (before, after) in zip(report.trainable, modules.values()):
        got = layer_weights(result.model, layer)
        for role in ("weight", "bias"):
            start = getattr(before, role).detach().numpy().ravel()
            step_torch = getattr(after, role).detach().numpy().ravel() - start
            step_runtime = got[role].ravel() - start
            relative = np.abs(step_runtime - step_torch).max() / np.abs(step_torch).max()
            assert relative <= RELATIVE, f"{layer}.{role}: relative difference {relative:.2e}"
