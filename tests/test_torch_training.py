"""Training parity: the exported model, updated by the reference runtime's MLUpdateTask
emulation, ends with the weights torch's own optimizer reaches on the same mini-batches
(shuffle off), within 1e-4 relative; and the reference architectures export as specified."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from test_torch_translate import load_example  # noqa: E402
from updatable_coreml.errors import NotUpdatableError  # noqa: E402
from updatable_coreml.exporters.torch import export_torch  # noqa: E402
from updatable_coreml.runtime.model import load  # noqa: E402

RELATIVE = 1e-4
BATCH, EPOCHS = 4, 2


def small_cnn(log_softmax: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(36, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    ]
    return nn.Sequential(*layers, *([nn.LogSoftmax(1)] if log_softmax else [])).eval()


def data(n: int, shape: tuple[int, ...], classes: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=generator), torch.randint(
        0, classes, (n,), generator=generator
    )


def train_torch(model: nn.Module, optimizer, loss_fn, x: torch.Tensor, y: torch.Tensor) -> None:
    """What MLUpdateTask does with shuffle off: EPOCHS passes over the batches in order."""
    for _ in range(EPOCHS):
        for start in range(0, len(x), BATCH):
            optimizer.zero_grad()
            loss_fn(model(x[start : start + BATCH]), y[start : start + BATCH]).backward()
            optimizer.step()


def runtime_update(model: nn.Module, optimizer, loss_fn, x, y, tmp_path, **kwargs):
    path = tmp_path / "model.mlmodel"
    report = export_torch(
        model,
        x[:1],
        path,
        loss=loss_fn,
        optimizer=optimizer,
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        **kwargs,
    )
    runtime = load(path)
    target = (
        {"classLabel": np.asarray(kwargs["class_labels"])[y.numpy()]}
        if "class_labels" in kwargs
        else {f"{runtime.description.output[0].name}_true": y.numpy()}
    )
    result = runtime.update({runtime.description.input[0].name: x.numpy(), **target})
    return report, result.model


def predict(path, x: torch.Tensor) -> dict:
    runtime = load(path)
    return runtime.predict({runtime.description.input[0].name: x.numpy()})


def layer_weights(runtime, name: str) -> dict[str, np.ndarray]:
    index = next(i for i, layer in enumerate(runtime.layers) if layer.name == name)
    get = runtime.weight_getter(index)
    return {"weight": get("weights"), "bias": get("bias")}


def assert_same_update(before: nn.Module, after: nn.Module, runtime, names: list[str]) -> float:
    """The runtime's weight change matches torch's, relative to torch's change; returns the
    worst relative difference."""
    worst = 0.0
    modules_before, modules_after = dict(before.named_modules()), dict(after.named_modules())
    for name in names:
        got = layer_weights(runtime, name)
        for role in ("weight", "bias"):
            start = getattr(modules_before[name], role).detach().numpy().ravel()
            step_torch = getattr(modules_after[name], role).detach().numpy().ravel() - start
            step_runtime = got[role].ravel() - start
            relative = np.abs(step_runtime - step_torch).max() / np.abs(step_torch).max()
            worst = max(worst, float(relative))
            assert relative <= RELATIVE, f"{name}.{role}: relative difference {relative:.2e}"
    return worst


OPTIMIZERS = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01, betas=(0.8, 0.99), eps=1e-7),
}


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_training_parity_cross_entropy(optimizer_name, tmp_path):
    model = small_cnn()
    trained = copy.deepcopy(model)
    x, y = data(12, (3, 8, 8), 3)
    make = OPTIMIZERS[optimizer_name]
    _, runtime = runtime_update(
        model,
        make(model.parameters()),
        nn.CrossEntropyLoss(),
        x,
        y,
        tmp_path,
        class_labels=[0, 1, 2],
    )
    train_torch(trained, make(trained.parameters()), nn.CrossEntropyLoss(), x, y)
    assert_same_update(model, trained, runtime, ["0", "4", "6"])


def test_training_parity_nll_after_log_softmax_trains_only_optimizer_params(tmp_path):
    model = small_cnn(log_softmax=True)
    trained = copy.deepcopy(model)
    x, y = data(12, (3, 8, 8), 3)
    report, runtime = runtime_update(
        model,
        torch.optim.SGD(model[4:].parameters(), lr=0.1, momentum=0.5),
        nn.NLLLoss(),
        x,
        y,
        tmp_path,
        class_labels=["a", "b", "c"],
    )
    assert report.trainable == ["4", "6"]
    train_torch(
        trained, torch.optim.SGD(trained[4:].parameters(), lr=0.1, momentum=0.5), nn.NLLLoss(), x, y
    )
    assert_same_update(model, trained, runtime, ["4", "6"])
    frozen = layer_weights(runtime, "0")["weight"]
    assert np.array_equal(frozen, model[0].weight.detach().numpy().ravel())


def test_training_parity_mse_adam(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    trained = copy.deepcopy(model)
    x = torch.randn(8, 6)
    y = torch.randn(8, 2)
    make = OPTIMIZERS["adam"]
    _, runtime = runtime_update(model, make(model.parameters()), nn.MSELoss(), x, y, tmp_path)
    train_torch(trained, make(trained.parameters()), nn.MSELoss(), x, y)
    assert_same_update(model, trained, runtime, ["0", "2"])


# -- the reference architectures ---------------------------------------------------------


@pytest.fixture(scope="module")
def architectures():
    return load_example("torch_squeezenet_resnet")


def test_squeezenet_conv10_trains_and_predicts(architectures, tmp_path):
    torch.manual_seed(0)
    model = architectures.SqueezeNet11(num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / "squeezenet.mlmodel"
    report = export_torch(
        model,
        x,
        path,
        loss=nn.CrossEntropyLoss(),
        trainable=["classifier.1"],
        class_labels=list("abcde"),
    )
    assert report.trainable == ["classifier.1"]
    out = predict(path, x)
    probs = np.array([[row[k] for k in "abcde"] for row in out[report.outputs[-1]]])
    assert np.abs(probs - torch.softmax(model(x), 1).detach().numpy()).max() <= 1e-4


def test_squeezenet_layer_before_concat_is_refused(architectures, tmp_path):
    model = architectures.SqueezeNet11(num_classes=5).eval()
    with pytest.raises(
        NotUpdatableError, match=r"'features\.12\.cat'.*concat.*features\.12\.expand3x3"
    ):
        export_torch(
            model,
            torch.randn(1, 3, 64, 64),
            tmp_path / "refused.mlmodel",
            loss=nn.CrossEntropyLoss(),
            trainable=["features.12.expand3x3", "classifier.1"],
        )
    assert not list(tmp_path.iterdir())


def test_resnet18_frozen_backbone_trains_fc_like_torch(architectures, tmp_path):
    model, optimizer = architectures.frozen_backbone_resnet(num_classes=4)
    trained = copy.deepcopy(model)
    x, y = data(8, (3, 32, 32), 4)
    report, runtime = runtime_update(
        model, optimizer, nn.CrossEntropyLoss(), x, y, tmp_path, class_labels=[0, 1, 2, 3]
    )
    assert report.trainable == ["fc"]
    assert "layer4.1.conv2" in report.frozen
    before = predict(tmp_path / "model.mlmodel", x)
    probs = np.array([[row[k] for k in range(4)] for row in before["fc"]])
    assert np.abs(probs - torch.softmax(model(x), 1).detach().numpy()).max() <= 1e-4
    train_torch(
        trained,
        torch.optim.SGD(trained.fc.parameters(), lr=0.01, momentum=0.9),
        nn.CrossEntropyLoss(),
        x,
        y,
    )
    assert_same_update(model, trained, runtime, ["fc"])
