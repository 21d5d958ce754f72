"""Frozen-backbone pipelines: a frozen backbone + an updatable network head in one pipeline.

Small CNNs (frozen convolutions, trainable dense head) from Keras and torch, exported as
pipelines by our frontends and, for a backbone with an op we refuse, through coremltools.
Each pipeline validates, predicts like its source, and trains its head exactly like the
single-network export of the same model does.
"""

from __future__ import annotations

import numpy as np
import pytest

from updatable_coreml import validate
from updatable_coreml.errors import ConfigError, UnsupportedError
from updatable_coreml.frameworks import quiet_import
from updatable_coreml.runtime import load
from updatable_coreml.spec_io import load_spec, neural_network
from updatable_coreml.validator import is_valid

LABELS = [0, 1, 2, 3]
TRAINING = dict(batch_size=4, epochs=2, shuffle=False)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """12 channel-first (1, 8, 8) examples."""
    return np.random.default_rng(0).normal(size=(12, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def targets() -> np.ndarray:
    return np.arange(12) % 4


def keras_cnn(activation: str = "relu"):
    keras = quiet_import("keras")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="digit")
    h = keras.layers.Conv2D(8, 3, padding="same", activation=activation, name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(16, activation="relu", name="fc1")(h)
    outputs = keras.layers.Dense(4, activation="softmax", name="fc2")(h)
    model = keras.Model(inputs, outputs)
    for name in ("conv1", "conv2"):
        model.get_layer(name).trainable = False
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.5), loss="sparse_categorical_crossentropy"
    )
    return model


def torch_cnn(activation=None):
    torch = quiet_import("torch")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        (activation or nn.ReLU)(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(256, 16),
        nn.ReLU(),
        nn.Linear(16, 4),
    )
    for parameter in list(model.parameters())[:4]:  # the two convolutions
        parameter.requires_grad_(False)
    return model


def export_keras_model(model, path, **options):
    from updatable_coreml.exporters.keras import export_keras

    return export_keras(model, path, class_labels=LABELS, **TRAINING, **options)


def export_torch_model(model, path, **options):
    torch = quiet_import("torch")
    from updatable_coreml.exporters.torch import export_torch

    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.5
    )
    return export_torch(
        model,
        torch.zeros(1, 1, 8, 8),
        path,
        loss=torch.nn.CrossEntropyLoss(),
        optimizer=optimizer,
        class_labels=LABELS,
        **TRAINING,
        **options,
    )


def keras_probabilities(model, x: np.ndarray) -> np.ndarray:
    return model.predict(x.transpose(0, 2, 3, 1), verbose=0)


def torch_probabilities(model, x: np.ndarray) -> np.ndarray:
    torch = quiet_import("torch")
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


FRAMEWORKS = {
    "keras": (keras_cnn, export_keras_model, keras_probabilities, "digit", ["fc1", "fc2"]),
    "torch": (torch_cnn, export_torch_model, torch_probabilities, "input", ["6", "8"]),
}


def predicted_probabilities(path, input_name: str, x: np.ndarray) -> np.ndarray:
    model = load(path)
    outputs = model.predict({input_name: x})
    rows = outputs[model.description.predictedProbabilitiesName]
    return np.array([[row[label] for label in LABELS] for row in rows])


def trained_weights(path, input_name: str, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Updatable weights (by layer name) after an update on ``(x, y)`` in our runtime."""
    model = load(path)
    updated = model.update({input_name: x, model.description.predictedFeatureName: y}).model
    layers = neural_network(updated.trainable().spec).layers
    return {
        f"{layer.name}.{field}": np.array(getattr(layer.innerProduct, field).floatValue)
        for layer in layers
        if layer.isUpdatable
        for field in ("weights", "bias")
    }


def assert_valid_pipeline(path, backbone: str, report) -> None:
    findings = validate(path)
    assert is_valid(findings), findings
    spec = load_spec(path)
    assert spec.WhichOneof("Type") == "pipeline" and spec.isUpdatable
    first, last = spec.pipeline.models
    assert not first.isUpdatable and last.isUpdatable
    assert [t.name for t in spec.description.trainingInput][
        -1
    ] == spec.description.predictedFeatureName
    assert report.model_type == "pipeline" and report.backbone == backbone
    assert f"backbone made by {backbone}" in report.summary()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_pipeline_predicts_and_trains_like_the_single_network(framework, tmp_path, images, targets):
    build, export, source_probabilities, input_name, head = FRAMEWORKS[framework]
    model = build()
    single = tmp_path / "single.mlmodel"
    pipeline = tmp_path / "pipeline.mlmodel"
    export(model, single)
    report = export(model, pipeline, pipeline=True)
    assert_valid_pipeline(pipeline, "frontend", report)
    assert report.trainable == head

    expected = source_probabilities(model, images)
    assert np.abs(predicted_probabilities(pipeline, input_name, images) - expected).max() <= 1e-4

    # 2 epochs of 3 mini-batches: the head must end with the single network's weights.
    split = trained_weights(pipeline, input_name, images, targets)
    whole = trained_weights(single, input_name, images, targets)
    assert split.keys() == whole.keys() and len(split) == 4
    for name, weights in whole.items():
        initial = np.abs(weights).max()
        assert np.abs(split[name] - weights).max() <= 1e-5 * initial, name


def test_torch_backbone_with_a_refused_op_goes_through_coremltools(tmp_path, images, targets):
    torch = quiet_import("torch")
    model = torch_cnn(torch.nn.Mish)
    with pytest.raises(UnsupportedError, match="mish"):
        export_torch_model(model, tmp_path / "refused.mlmodel")
    path = tmp_path / "fallback.mlmodel"
    report = export_torch_model(model, path, pipeline=True)
    assert_valid_pipeline(path, "coremltools", report)
    assert any("mish" in change and "coremltools" in change for change in report.changes)
    assert report.trainable == ["6", "8"]

    probabilities = predicted_probabilities(path, "input", images)
    assert np.abs(probabilities - torch_probabilities(model, images)).max() <= 1e-4
    updated = load(path).update({"input": images, "classLabel": targets}).model
    assert updated.modified


def test_coremltools_backbone_trains_like_our_own(tmp_path, images, targets):
    """The same Keras model with its backbone from coremltools and from our frontend."""
    model = keras_cnn()
    ours, theirs = tmp_path / "ours.mlmodel", tmp_path / "theirs.mlmodel"
    export_keras_model(model, ours, pipeline=True)
    report = export_keras_model(model, theirs, pipeline=True, backbone="coremltools")
    assert_valid_pipeline(theirs, "coremltools", report)
    expected = keras_probabilities(model, images)
    assert np.abs(predicted_probabilities(theirs, "digit", images) - expected).max() <= 1e-4
    converted = trained_weights(theirs, "digit", images, targets)
    # Keras flattens (H, W, C); our backbone flattens (C, H, W) and reorders fc1's columns.
    converted["fc1.weights"] = converted["fc1.weights"].reshape(16, 4, 4, 16).transpose(0, 3, 1, 2)
    for name, weights in trained_weights(ours, "digit", images, targets).items():
        difference = np.abs(converted[name].ravel() - weights).max()
        assert difference <= 1e-5 * np.abs(weights).max(), name


def test_coremltools_backbone_export_is_deterministic(tmp_path):
    model = torch_cnn()
    first = export_torch_model(model, tmp_path / "a.mlmodel", pipeline=True, backbone="coremltools")
    second = export_torch_model(
        model, tmp_path / "b.mlmodel", pipeline=True, backbone="coremltools"
    )
    assert first.sha256 == second.sha256


def test_refusals_name_the_fix(tmp_path):
    quiet_import("torch")
    from torch import nn

    model = torch_cnn()
    with pytest.raises(ConfigError, match="pipeline=True"):
        export_torch_model(model, tmp_path / "x.mlmodel", backbone="coremltools")
    with pytest.raises(ConfigError, match="backbone="):
        export_torch_model(model, tmp_path / "x.mlmodel", pipeline=True, backbone="mine")
    with pytest.raises(UnsupportedError, match="mish"):
        export_torch_model(
            torch_cnn(nn.Mish), tmp_path / "x.mlmodel", pipeline=True, backbone="frontend"
        )
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    with pytest.raises(ConfigError, match="no frozen backbone"):
        export_torch_model(model, tmp_path / "x.mlmodel", pipeline=True)

    with pytest.raises(ConfigError, match="'0' reads the model input.*no frozen backbone"):
        export_torch_model(model, tmp_path / "x.mlmodel", pipeline=True, backbone="coremltools")
    with pytest.raises(ConfigError, match="no parameter that trains"):
        export_torch_model(
            model, tmp_path / "x.mlmodel", pipeline=True, backbone="coremltools", trainable=[]
        )
    assert not list(tmp_path.iterdir())


def test_keras_backbone_with_a_refused_activation_goes_through_coremltools(tmp_path, images):
    model = keras_cnn("mish")
    path = tmp_path / "fallback.mlmodel"
    report = export_keras_model(model, path, pipeline=True)
    assert_valid_pipeline(path, "coremltools", report)
    expected = keras_probabilities(model, images)
    assert np.abs(predicted_probabilities(path, "digit", images) - expected).max() <= 1e-4


def test_a_backbone_coremltools_cannot_convert_is_a_clear_error(tmp_path):
    torch = quiet_import("torch")
    from torch import nn

    class Erfinv(nn.Module):  # neither our frontend nor coremltools converts it
        def forward(self, x):
            return torch.special.erfinv(torch.tanh(x))

    model = torch_cnn(Erfinv)
    with pytest.raises(UnsupportedError, match="coremltools could not convert.*erfinv"):
        export_torch_model(model, tmp_path / "x.mlmodel", pipeline=True)
    assert not list(tmp_path.iterdir())


def blobs_made_once(spec) -> None:
    """Core ML: each blob of a network is produced once; an input counts as produced."""
    made = [feature.name for feature in spec.description.input]
    made += [blob for layer in neural_network(spec).layers for blob in layer.output]
    assert len(made) == len(set(made)), sorted(b for b in set(made) if made.count(b) > 1)


def test_a_coremltools_blob_named_like_the_input_is_moved_aside(tmp_path, images):
    """coremltools names the blob of a backbone-ending Mish 'input', the name
    nn.Sequential's forward gives the pipeline input (issue 14: Core ML "Layer 'input'
    produces an output named 'input' which is also an output produced by the layer
    '__input'")."""
    torch = quiet_import("torch")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Mish(), nn.Conv2d(4, 4, 8), nn.Flatten()
    )
    for parameter in model[0].parameters():
        parameter.requires_grad_(False)
    path = tmp_path / "pipeline.mlmodel"
    report = export_torch_model(model, path, pipeline=True)
    assert_valid_pipeline(path, "coremltools", report)
    backbone = load_spec(path).pipeline.models[0]
    assert [feature.name for feature in backbone.description.input] == ["input"]
    blobs_made_once(backbone)
    expected = torch_probabilities(model, images)
    assert np.abs(predicted_probabilities(path, "input", images) - expected).max() <= 1e-4


def test_keras_sequence_backbone_through_coremltools(tmp_path):
    """A (steps, channels) input with a frozen Conv1D and a trainable Dense, the backbone
    converted by coremltools: it reads the sequence as it is (issue 14: it crashed in a
    transpose). Our own frontend converts Conv1D too, so the backbone is asked for."""
    keras = quiet_import("keras")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 3), name="signal")
    h = keras.layers.Conv1D(4, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten(name="flat")(h)
    outputs = keras.layers.Dense(4, activation="softmax", name="fc")(h)
    model = keras.Model(inputs, outputs)
    model.get_layer("conv").trainable = False
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    path = tmp_path / "pipeline.mlmodel"
    report = export_keras_model(model, path, pipeline=True, backbone="coremltools")
    assert_valid_pipeline(path, "coremltools", report)
    assert report.trainable == ["fc"]
    x = np.random.default_rng(1).normal(size=(5, 10, 3)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    assert np.abs(predicted_probabilities(path, "signal", x) - expected).max() <= 1e-4


def test_a_backbone_tensorflow_cannot_trace_is_a_typed_error(tmp_path, monkeypatch):
    tf = quiet_import("tensorflow")

    def refuse(*args, **kwargs):
        raise ValueError("cannot trace this")

    monkeypatch.setattr(tf, "function", refuse)
    with pytest.raises(UnsupportedError, match="TensorFlow could not trace.*cannot trace this"):
        export_keras_model(
            keras_cnn(), tmp_path / "x.mlmodel", pipeline=True, backbone="coremltools"
        )
    assert not list(tmp_path.iterdir())


# -- torch modules with their own forward: the captured graph is cut -------------------------


def torch_features_classifier(activation=None):
    """torchvision's VGG/AlexNet shape: ``features``, ``torch.flatten`` in forward, then a
    ``classifier`` whose first layer (dropout) is frozen; forward checks the input's shape,
    which torch.export specializes but torch.fx could not trace."""
    torch = quiet_import("torch")
    from torch import nn

    class FeaturesClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                (activation or nn.ReLU)(),
                nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1),
                nn.ReLU(),
            )
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 4)
            )

        def forward(self, x):
            if x.shape[1] != 1:
                raise ValueError("expected one channel")
            return self.classifier(torch.flatten(self.features(x), 1))

    torch.manual_seed(0)
    return freeze_all_but(FeaturesClassifier(), "classifier.")


def torch_resnet(activation=None):
    """A ResNet's top level: stem, residual blocks (batch norm, an add), adaptive average
    pooling, ``torch.flatten`` and a trainable ``fc``."""
    torch = quiet_import("torch")
    from torch import nn

    class Block(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.act = (activation or nn.ReLU)()
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x):
            return torch.relu(x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.layer1 = nn.Sequential(Block(8), Block(8))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            x = self.layer1(torch.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(0)
    return freeze_all_but(ResNet(), "fc.")


def freeze_all_but(model, head: str):
    """Only parameters under ``head`` train; batch-norm statistics are made non-trivial so a
    wrong (training-mode) normalization would show."""
    torch = quiet_import("torch")
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.randn(shape, generator=generator))
            module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(head))
    return model.eval()


#: builder, the layers that train, where the coremltools path cuts the graph
CUSTOM_FORWARD = {
    "features_classifier": (
        torch_features_classifier,
        ["classifier.1", "classifier.3"],
        "cut at the output of 'classifier.0', the tensor the first trainable layer "
        "'classifier.1' reads",
    ),
    "resnet": (torch_resnet, ["fc"], "cut at the output of 'flatten'"),
}


@pytest.mark.parametrize("name", CUSTOM_FORWARD)
def test_custom_forward_pipelines_train_like_the_single_network(name, tmp_path, images, targets):
    """Both backbones of a module with its own forward: the one our frontend cuts from its
    translation and the one coremltools converts from the cut torch graph."""
    build, head, cut = CUSTOM_FORWARD[name]
    model = build()
    single = tmp_path / "single.mlmodel"
    export_torch_model(model, single)
    whole = trained_weights(single, "x", images, targets)
    assert len(whole) == 2 * len(head)
    expected = torch_probabilities(model, images)
    for backbone in ("frontend", "coremltools"):
        pipeline = tmp_path / f"{backbone}.mlmodel"
        report = export_torch_model(model, pipeline, pipeline=True, backbone=backbone)
        assert_valid_pipeline(pipeline, backbone, report)
        assert report.trainable == head
        assert any(cut in change for change in report.changes) == (backbone == "coremltools")
        probabilities = predicted_probabilities(pipeline, "x", images)
        assert np.abs(probabilities - expected).max() <= 1e-4, backbone
        split = trained_weights(pipeline, "x", images, targets)
        assert split.keys() == whole.keys(), backbone
        for key, weights in whole.items():
            difference = np.abs(split[key] - weights).max()
            assert difference <= 1e-5 * np.abs(weights).max(), (backbone, key)


def train_like_the_runtime(model, x: np.ndarray, y: np.ndarray):
    """torch training the layers that require grad as the export configures Core ML: SGD
    (lr 0.1, momentum 0.5), batches of 4 in order, 2 epochs, eval mode (no dropout)."""
    import copy

    torch = quiet_import("torch")
    model = copy.deepcopy(model).eval()
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.5
    )
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(TRAINING["epochs"]):
        for start in range(0, len(x), TRAINING["batch_size"]):
            optimizer.zero_grad()
            batch = slice(start, start + TRAINING["batch_size"])
            torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
    return model


@pytest.mark.parametrize("name", CUSTOM_FORWARD)
def test_custom_forward_with_a_refused_op_exports_only_as_a_pipeline(
    name, tmp_path, images, targets
):
    """Mish in the backbone: our frontend refuses the single network, the pipeline's
    backbone comes from coremltools, and the head trains like torch trains it."""
    torch = quiet_import("torch")
    build, head, cut = CUSTOM_FORWARD[name]
    model = build(torch.nn.Mish)
    with pytest.raises(UnsupportedError, match="mish"):
        export_torch_model(model, tmp_path / "refused.mlmodel")
    path = tmp_path / "pipeline.mlmodel"
    report = export_torch_model(model, path, pipeline=True)
    assert_valid_pipeline(path, "coremltools", report)
    assert report.trainable == head
    assert any(cut in change for change in report.changes), report.changes
    expected = torch_probabilities(model, images)
    assert np.abs(predicted_probabilities(path, "x", images) - expected).max() <= 1e-4

    trained = dict(train_like_the_runtime(model, images, targets).named_modules())
    updated = trained_weights(path, "x", images, targets)
    assert len(updated) == 2 * len(head)
    for key, weights in updated.items():
        layer, field = key.rsplit(".", 1)
        role = {"weights": "weight", "bias": "bias"}[field]
        source = getattr(trained[layer], role).detach().numpy().ravel()
        assert np.abs(weights - source).max() <= 1e-5 * np.abs(source).max(), key


def test_a_cut_needing_two_frozen_tensors_is_refused_naming_the_layers(tmp_path):
    """A frozen ``skip`` projection joins the trainable ``fc`` after it: the head would need
    the backbone's output and the skip's, which a pipeline cannot hand it."""
    torch = quiet_import("torch")
    from torch import nn

    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.act = nn.Mish()
            self.skip = nn.Linear(128, 4)
            self.fc = nn.Linear(128, 4)

        def forward(self, x):
            h = torch.flatten(self.act(self.conv(x)), 1)
            return self.fc(h) + self.skip(h)

    torch.manual_seed(0)
    model = freeze_all_but(Skip(), "fc.")
    with pytest.raises(UnsupportedError, match="'fc'.*2 tensors.*'skip'"):
        export_torch_model(model, tmp_path / "x.mlmodel", pipeline=True)
    assert not list(tmp_path.iterdir())


def test_cli_exports_a_torch_factory_with_its_own_forward_as_a_pipeline(tmp_path):
    import json

    from updatable_coreml.cli import main

    factory = tmp_path / "net.py"
    factory.write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Mish())\n"
        "        self.fc = nn.Linear(144, 3)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.flatten(self.features(x), 1))\n\n\n"
        "def make():\n"
        "    return Net()\n"
    )
    out, report = tmp_path / "P.mlmodel", tmp_path / "r.json"
    arguments = [f"{factory}:make", "--example-shape", "1,8,8", "-o", str(out), "--loss", "cce"]
    arguments += ["--trainable", "fc", "--pipeline", "--report", str(report)]
    assert main(["export", *arguments]) == 0
    assert is_valid(validate(out)) and load_spec(out).WhichOneof("Type") == "pipeline"
    document = json.loads(report.read_text())
    assert document["export"]["backbone"] == "coremltools"  # ours refuses Mish
    assert document["export"]["trainable"] == ["fc"]


def test_an_example_batch_is_cut_on_one_example(tmp_path, images):
    """``view(x.size(0), -1)`` is captured with the example's batch size baked in; the
    backbone coremltools converts reads one example, so the cut is captured on one too."""
    torch = quiet_import("torch")
    from torch import nn

    from updatable_coreml.exporters.torch import export_torch

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.act = nn.Mish()
            self.fc = nn.Linear(144, 4)

        def forward(self, x):
            h = self.act(self.conv(x))
            return self.fc(h.view(h.size(0), -1))

    torch.manual_seed(0)
    model = freeze_all_but(Net(), "fc.")
    path = tmp_path / "pipeline.mlmodel"
    report = export_torch(
        model,
        torch.from_numpy(images[:5]),  # 144 values per example do not split into 5 rows
        path,
        loss=nn.CrossEntropyLoss(),
        trainable=["fc"],
        class_labels=LABELS,
        pipeline=True,
    )
    assert_valid_pipeline(path, "coremltools", report)
    expected = torch_probabilities(model, images)
    assert np.abs(predicted_probabilities(path, "x", images) - expected).max() <= 1e-4


@pytest.mark.parametrize(
    "target, message",
    [
        (  # rebuilding the two halves as fx modules (torch's own fx classes cannot be
            # patched: torch.export checks isinstance against them)
            "updatable_coreml.exporters.torch.backbone._rebuild",
            "cannot be cut at '5'.*cannot rebuild this",
        ),
        ("torch.jit.trace", "torch.jit.trace could not trace.*cannot rebuild this"),
    ],
)
def test_a_torch_failure_while_cutting_is_a_typed_error(tmp_path, monkeypatch, target, message):
    def refuse(*args, **kwargs):
        raise RuntimeError("cannot rebuild this")

    monkeypatch.setattr(target, refuse)
    with pytest.raises(UnsupportedError, match=message):
        export_torch_model(
            torch_cnn(), tmp_path / "x.mlmodel", pipeline=True, backbone="coremltools"
        )
    assert not list(tmp_path.iterdir())


def test_an_exported_program_is_cut_like_its_module(tmp_path, images):
    """``export_torch`` also takes a ``torch.export`` program; its graph is cut the same way
    (what trains is named, since a program has no optimizer of its own)."""
    torch = quiet_import("torch")
    from torch import nn

    from updatable_coreml.exporters.torch import export_torch

    model = torch_features_classifier(nn.Mish)
    program = torch.export.export(model, (torch.zeros(1, 1, 8, 8),))
    path = tmp_path / "pipeline.mlmodel"
    report = export_torch(
        program,
        torch.zeros(1, 1, 8, 8),
        path,
        loss=nn.CrossEntropyLoss(),
        trainable=["classifier"],
        class_labels=LABELS,
        pipeline=True,
    )
    assert_valid_pipeline(path, "coremltools", report)
    assert report.trainable == ["classifier.1", "classifier.3"]
    expected = torch_probabilities(model, images)
    assert np.abs(predicted_probabilities(path, "x", images) - expected).max() <= 1e-4


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_coremltools_backbone_takes_an_image_input(framework, tmp_path):
    """image_input on the coremltools path: the pipeline takes a grayscale image whose pixels
    become ``scale * pixel + bias`` (described by the backend's own describe_input, as in a
    single-network export) and predicts like the source on those values; the single network
    with the same image_input predicts the same."""
    make, export, probabilities, name, _ = FRAMEWORKS[framework]
    model = make()
    pixels = np.random.default_rng(1).integers(0, 256, size=(6, 8, 8, 1)).astype(np.uint8)
    image = {"color": "grayscale", "scale": 1 / 64, "bias": -2.0}
    path = tmp_path / "image.mlmodel"
    report = export(model, path, pipeline=True, backbone="coremltools", image_input=image)
    assert_valid_pipeline(path, "coremltools", report)
    (feature,) = load_spec(path).description.input
    assert feature.type.WhichOneof("Type") == "imageType"
    assert feature.type.imageType.colorSpace == 10  # GRAYSCALE
    x = (pixels.astype(np.float32) / 64 - 2.0).transpose(0, 3, 1, 2)
    got = predicted_probabilities(path, name, pixels)
    assert np.abs(got - probabilities(model, x)).max() <= 1e-4
    single = tmp_path / "single.mlmodel"
    export(model, single, image_input=image)
    assert np.abs(got - predicted_probabilities(single, name, pixels)).max() <= 1e-4
