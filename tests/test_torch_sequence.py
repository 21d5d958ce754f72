"""torch sequence and sensor models: Conv1d (trainable), pooling over width, Embedding,
EmbeddingBag(mean), LSTM and GRU, exported and run or trained by the reference runtime.

Layouts: a ``(N, C, L)`` map is Core ML's ``(C, 1, L)`` (an input read by a Conv1d is declared
so); a ``(N, L, C)`` sequence travels in Core ML's rank-5 layout, one example as
``[Seq, 1, C]`` (token ids ``[Seq, 1, 1]``). Forward parity: max abs diff <= 1e-4 against the
module; training parity: the runtime's weight change within 1e-4 of torch's, relative.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from test_torch_parity import Lambda  # noqa: E402
from test_torch_training import assert_same_update  # noqa: E402
from updatable_coreml.errors import NotUpdatableError, UnsupportedError  # noqa: E402
from updatable_coreml.exporters.torch import export_torch  # noqa: E402
from updatable_coreml.runtime.model import load  # noqa: E402

TOLERANCE = 1e-4
# torch.export notes that nn.LSTM/GRU assign their flat weight list during capture
pytestmark = pytest.mark.filterwarnings("ignore:The tensor attributes self:UserWarning")
BATCH, EPOCHS = 4, 2
CHANNELS, STEPS = 3, 50


def width_layout(x: torch.Tensor) -> np.ndarray:
    """torch (N, C, L) -> Core ML's (N, C, 1, L)."""
    return x.numpy()[:, :, None, :]


def sensor_model(seed: int) -> nn.Sequential:
    """3 channels x 50 steps: a frozen Conv1d, a trainable Conv1d, pooled, a trainable head."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv1d(CHANNELS, 8, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(8, 6, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()
    for parameter in model[0].parameters():
        parameter.requires_grad_(False)
    return model


def sensor_data(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, CHANNELS, STEPS, generator=generator), torch.randint(
        0, 4, (n,), generator=generator
    )


def probabilities(runtime, feed: np.ndarray, classes: int) -> np.ndarray:
    out = runtime.predict({runtime.description.input[0].name: feed})
    rows = out[runtime.description.predictedProbabilitiesName]
    return np.array([[row[k] for k in range(classes)] for row in rows])


# -- Conv1d: forward ------------------------------------------------------------------------


def test_sensor_model_predicts_like_torch_and_declares_a_height_1_input(tmp_path):
    model = sensor_model(0)
    x, _ = sensor_data(6)
    path = tmp_path / "sensor.mlmodel"
    report = export_torch(model, x[:1], path, loss=nn.CrossEntropyLoss(), class_labels=[0, 1, 2, 3])
    runtime = load(path)
    assert list(runtime.description.input[0].type.multiArrayType.shape) == [CHANNELS, 1, STEPS]
    # the app is told the layout (Xcode shows the shortDescription)
    assert (
        f"[{CHANNELS}, 1, {STEPS}] (channels, 1, steps)"
        in runtime.description.input[0].shortDescription
    )
    assert report.trainable == ["3", "7"]
    want = torch.softmax(model(x), 1).detach().numpy()
    assert np.abs(probabilities(runtime, width_layout(x), 4) - want).max() <= TOLERANCE


CONV1D_CASES = {
    "stride_dilation_no_bias": nn.Sequential(
        nn.Conv1d(3, 4, 3, stride=2, dilation=2, bias=False), nn.Flatten(), nn.Linear(4 * 10, 2)
    ),
    "groups_same": nn.Sequential(
        nn.Conv1d(3, 6, 4, groups=3, padding="same"), nn.Flatten(), nn.Linear(6 * 24, 2)
    ),
    "batch_norm_avg_pool_ceil": nn.Sequential(
        nn.Conv1d(3, 4, 3, padding=1),
        nn.BatchNorm1d(4),
        nn.AvgPool1d(5, 5, ceil_mode=True, count_include_pad=False),
        nn.Flatten(),
        nn.Linear(4 * 5, 2),
    ),
    "mean_and_max_over_length": nn.Sequential(
        nn.Conv1d(3, 4, 3),
        Lambda(lambda x: torch.cat([x.mean(2), x.amax(-1), x.max(dim=2)[0]], 1)),
        nn.Linear(12, 2),
    ),
    "adaptive_max_to_1": nn.Sequential(
        nn.Conv1d(3, 4, 3), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(4, 2)
    ),
    "batch_norm_and_activation_before_the_first_conv": nn.Sequential(
        nn.BatchNorm1d(3), nn.Tanh(), nn.Conv1d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 22, 2)
    ),
    "pool_first_adaptive_to_4": nn.Sequential(
        nn.MaxPool1d(3, 2, padding=1),
        nn.Conv1d(3, 4, 1),
        nn.AdaptiveAvgPool1d(4),
        nn.Flatten(),
        nn.Linear(16, 2),
    ),
}


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", sorted(CONV1D_CASES))
def test_conv1d_variants_predict_like_torch(case, tmp_path):
    torch.manual_seed(1)
    model = CONV1D_CASES[case].eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 1.5)
    x = torch.randn(3, 3, 24)
    path = tmp_path / "conv1d.mlmodel"
    export_torch(model, x[:1], path, loss=nn.MSELoss(), trainable=[str(len(model) - 1)])
    runtime = load(path)
    got = runtime.predict({"input": width_layout(x)})[runtime.description.output[0].name]
    want = model(x).detach().numpy()
    assert np.abs(np.asarray(got).reshape(want.shape) - want).max() <= TOLERANCE


# -- Conv1d: training -----------------------------------------------------------------------

OPTIMIZERS = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01, betas=(0.8, 0.99), eps=1e-7),
}


def train_both(model: nn.Module, x: torch.Tensor, feed: np.ndarray, y, make, tmp_path):
    """Update the export through the runtime and a copy in torch on the same mini-batches
    (shuffle off); returns the export's report and the updated runtime model."""
    trained = copy.deepcopy(model)
    path = tmp_path / "model.mlmodel"
    report = export_torch(
        model,
        x[:1],
        path,
        loss=nn.CrossEntropyLoss(),
        optimizer=make([p for p in model.parameters() if p.requires_grad]),
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        class_labels=[0, 1, 2, 3],
    )
    assert not [f for f in report.findings if f.startswith("ERROR")]
    runtime = load(path)
    result = runtime.update({runtime.description.input[0].name: feed, "classLabel": y.numpy()})
    optimizer = make([p for p in trained.parameters() if p.requires_grad])
    for _ in range(EPOCHS):
        for start in range(0, len(x), BATCH):
            optimizer.zero_grad()
            rows = slice(start, start + BATCH)
            nn.CrossEntropyLoss()(trained(x[rows]), y[rows]).backward()
            optimizer.step()
    return report, trained, result.model


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_training_a_conv1d_and_its_head_matches_torch(optimizer_name, tmp_path):
    model = sensor_model(2)
    x, y = sensor_data(12, seed=3)
    report, trained, runtime = train_both(
        model, x, width_layout(x), y, OPTIMIZERS[optimizer_name], tmp_path
    )
    assert report.trainable == ["3", "7"]
    assert_same_update(model, trained, runtime, ["3", "7"])
    frozen = runtime.weight_getter(0)("weights")
    assert np.array_equal(frozen.ravel(), model[0].weight.detach().numpy().ravel())


# -- Embedding and recurrent layers: forward --------------------------------------------------

VOCAB, TOKENS = 20, 7


def token_layout(tokens: torch.Tensor) -> np.ndarray:
    """torch (N, L) ids -> Core ML's per-example [Seq, 1, 1], batched."""
    return tokens.numpy().astype(np.float32)[:, :, None, None]


class TextClassifier(nn.Module):
    """Embedding (frozen) -> recurrent layer (frozen) -> last step -> Linear (trainable)."""

    def __init__(self, recurrent: nn.Module, read, features: int, time_major: bool = False):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 5, padding_idx=0)
        self.recurrent = recurrent
        self.read = read
        self.time_major = time_major
        self.head = nn.Linear(features, 3)

    def forward(self, tokens):
        x = self.embed(tokens)
        if self.time_major:
            x = x.transpose(0, 1)
        return self.head(self.read(self.recurrent(x)))


TEXT_CASES = {
    "lstm_last_step": lambda: TextClassifier(
        nn.LSTM(5, 4, batch_first=True), lambda r: r[0][:, -1], 4
    ),
    "lstm_two_layers_h_n": lambda: TextClassifier(
        nn.LSTM(5, 4, num_layers=2, batch_first=True), lambda r: r[1][0][-1], 4
    ),
    "lstm_time_major_no_bias": lambda: TextClassifier(
        nn.LSTM(5, 6, bias=False), lambda r: r[0][-1], 6, time_major=True
    ),
    "lstm_mean_over_steps": lambda: TextClassifier(
        nn.LSTM(5, 4, batch_first=True), lambda r: r[0].mean(1), 4
    ),
    "gru_time_major_max_over_steps": lambda: TextClassifier(
        nn.GRU(5, 4), lambda r: r[0].amax(0), 4, time_major=True
    ),
    "lstm_first_and_last_step": lambda: TextClassifier(
        nn.LSTM(5, 4, batch_first=True), lambda r: r[0][:, 0] + r[0][:, -1], 4
    ),
    "gru_last_step": lambda: TextClassifier(
        nn.GRU(5, 4, batch_first=True), lambda r: r[0][:, -1], 4
    ),
    "gru_two_layers_time_major_h_n": lambda: TextClassifier(
        nn.GRU(5, 4, num_layers=2), lambda r: r[1][-1], 4, time_major=True
    ),
    "gru_no_bias_middle_step": lambda: TextClassifier(
        nn.GRU(5, 3, bias=False, batch_first=True), lambda r: r[0][:, 3], 3
    ),
    "bigru_last_step": lambda: TextClassifier(
        nn.GRU(5, 3, batch_first=True, bidirectional=True), lambda r: r[0][:, -1], 6
    ),
    "bigru_two_layers_time_major_first_step": lambda: TextClassifier(
        nn.GRU(5, 3, num_layers=2, bidirectional=True), lambda r: r[0][0], 6, time_major=True
    ),
    "rnn_two_layers_last_step": lambda: TextClassifier(
        nn.RNN(5, 4, num_layers=2, batch_first=True), lambda r: r[0][:, -1], 4
    ),
    "rnn_no_bias_time_major_sequence_mean": lambda: TextClassifier(
        nn.RNN(5, 4, bias=False), lambda r: r[0].mean(0), 4, time_major=True
    ),
    "bilstm_last_step": lambda: TextClassifier(
        nn.LSTM(5, 4, batch_first=True, bidirectional=True), lambda r: r[0][:, -1], 8
    ),
    "bilstm_two_layers_time_major_second_step": lambda: TextClassifier(
        nn.LSTM(5, 3, num_layers=2, bidirectional=True), lambda r: r[0][1], 6, time_major=True
    ),
}


class Bag(nn.Module):
    """EmbeddingBag(mean) over fixed-length rows, then a trainable head."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(VOCAB, 6, mode="mean")
        self.head = nn.Linear(6, 3)

    def forward(self, tokens):
        return self.head(torch.relu(self.bag(tokens)))


class TextCNN(nn.Module):
    """Embedding -> transpose(1, 2) -> Conv1d (trainable: after the permute) -> pooled."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 5)
        self.conv = nn.Conv1d(5, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(4, 3)

    def forward(self, tokens):
        x = torch.relu(self.conv(self.embed(tokens).transpose(1, 2)))
        return self.head(self.pool(x).flatten(1))


class ConvLSTM(nn.Module):
    """Conv1d over a token embedding, back to a sequence for an LSTM (permute both ways)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 5)
        self.conv = nn.Conv1d(5, 4, 3)
        self.lstm = nn.LSTM(4, 3, batch_first=True)
        self.head = nn.Linear(3, 3)

    def forward(self, tokens):
        x = torch.relu(self.conv(self.embed(tokens).permute(0, 2, 1)))
        out, _ = self.lstm(x.transpose(1, 2))
        return self.head(out[:, -1])


TEXT_CASES.update({"embedding_bag_mean": Bag, "text_cnn": TextCNN, "conv_lstm": ConvLSTM})


def test_training_a_text_cnn_after_the_permute_matches_torch(tmp_path):
    """The permute moving the steps onto the width axis sits before the first updatable
    layer, where Core ML needs no gradient (``isLayerSupportedForBackprop``)."""
    torch.manual_seed(6)
    model = TextCNN().eval()
    model.head = nn.Linear(4, 4)
    model.embed.weight.requires_grad_(False)
    generator = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, VOCAB, (12, TOKENS), generator=generator)
    y = torch.randint(0, 4, (12,), generator=generator)
    report, trained, runtime = train_both(
        model, tokens, token_layout(tokens), y, OPTIMIZERS["adam"], tmp_path
    )
    assert report.trainable == ["conv", "head"]
    assert_same_update(model, trained, runtime, ["conv", "head"])


def text_predicts_like_torch(model: nn.Module, tmp_path) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in model.head.parameters():
        parameter.requires_grad_(True)
    model.eval()
    tokens = torch.randint(0, VOCAB, (5, TOKENS), generator=torch.Generator().manual_seed(4))
    path = tmp_path / "text.mlmodel"
    report = export_torch(
        model, tokens[:1], path, loss=nn.CrossEntropyLoss(), class_labels=["a", "b", "c"]
    )
    assert report.trainable == ["head"]
    runtime = load(path)
    want = torch.softmax(model(tokens), 1).detach().numpy()
    out = runtime.predict({"tokens": token_layout(tokens)})
    rows = out[runtime.description.predictedProbabilitiesName]
    got = np.array([[row[k] for k in "abc"] for row in rows])
    assert np.abs(got - want).max() <= TOLERANCE


@pytest.mark.parametrize("case", sorted(TEXT_CASES))
def test_text_models_predict_like_torch(case, tmp_path):
    torch.manual_seed(5)
    text_predicts_like_torch(TEXT_CASES[case](), tmp_path)


LSTM_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")


def test_training_an_lstm_without_biases_and_its_head_matches_torch(tmp_path):
    """Core ML updates a uniDirectionalLSTM (from coremltools 5.0b1); torch's gates i, f, g, o
    are the spec's inputGate, forgetGate, blockInput, outputGate."""
    torch.manual_seed(8)
    model = TextClassifier(nn.LSTM(5, 4, bias=False, batch_first=True), lambda r: r[0][:, -1], 4)
    model.head = nn.Linear(4, 4)
    model.embed.weight.requires_grad_(False)
    model.eval()
    generator = torch.Generator().manual_seed(9)
    tokens = torch.randint(0, VOCAB, (12, TOKENS), generator=generator)
    y = torch.randint(0, 4, (12,), generator=generator)
    report, trained, runtime = train_both(
        model, tokens, token_layout(tokens), y, OPTIMIZERS["sgd_momentum"], tmp_path
    )
    assert report.trainable == ["recurrent", "head"]
    assert any("EXPERIMENTAL_LSTM_UPDATE" in f for f in report.findings)
    assert_same_update(model, trained, runtime, ["head"])
    index = next(i for i, layer in enumerate(runtime.layers) if layer.name == "recurrent")
    get = runtime.weight_getter(index)
    for kind, name in (("WeightMatrix", "weight_ih_l0"), ("RecursionMatrix", "weight_hh_l0")):
        start = getattr(model.recurrent, name).detach().numpy()
        step_torch = getattr(trained.recurrent, name).detach().numpy() - start
        got = np.concatenate(
            [get(f"weightParams.{gate}{kind}").reshape(4, -1) for gate in LSTM_GATES]
        )
        relative = np.abs((got - start) - step_torch).max() / np.abs(step_torch).max()
        assert relative <= 1e-4, f"{name}: relative difference {relative:.2e}"


def test_sequence_models_export_as_pipelines_too(tmp_path):
    """pipeline=True cuts before the first trainable layer: the frozen Embedding -> GRU part
    becomes the first model; the app feeds the same token layout."""
    torch.manual_seed(5)
    model = TEXT_CASES["gru_last_step"]()
    for parameter in model.parameters():
        parameter.requires_grad_(parameter is model.head.weight or parameter is model.head.bias)
    model.eval()
    tokens = torch.randint(0, VOCAB, (5, TOKENS), generator=torch.Generator().manual_seed(4))
    path = tmp_path / "text.mlmodel"
    export_torch(
        model,
        tokens[:1],
        path,
        loss=nn.CrossEntropyLoss(),
        class_labels=["a", "b", "c"],
        pipeline=True,
    )
    runtime = load(path)
    assert runtime.spec.WhichOneof("Type") == "pipeline"
    models = runtime.spec.pipeline.models
    assert [m.isUpdatable for m in models] == [False, True]
    out = runtime.predict({"tokens": token_layout(tokens)})
    got = np.array(
        [[row[k] for k in "abc"] for row in out[runtime.description.predictedProbabilitiesName]]
    )
    assert np.abs(got - torch.softmax(model(tokens), 1).detach().numpy()).max() <= TOLERANCE


# -- refusals -------------------------------------------------------------------------------


def test_a_trainable_lstm_is_refused_with_the_reason(tmp_path):
    model = TEXT_CASES["lstm_last_step"]().eval()
    with pytest.raises(NotUpdatableError, match=r"two biases .* bias=False"):
        export_torch(
            model,
            torch.randint(0, VOCAB, (1, TOKENS)),
            tmp_path / "m.mlmodel",
            loss=nn.CrossEntropyLoss(),
            class_labels=["a", "b", "c"],
            trainable=["recurrent", "head"],
        )


class Recurrent(nn.Module):
    def __init__(self, lstm: nn.LSTM, read) -> None:
        super().__init__()
        self.lstm = lstm
        self.read = read

    def forward(self, x):
        return self.read(self.lstm(x))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (Recurrent(nn.LSTM(3, 4), lambda r: r[0][-1]), "transpose\\(0, 1\\) a batch-first"),
        (Recurrent(nn.LSTM(3, 4, batch_first=True), lambda r: r[1][1][-1]), "cell state c_n"),
        (Recurrent(nn.RNN(3, 4, nonlinearity="relu"), lambda r: r[0]), "nonlinearity='relu'"),
        (Recurrent(nn.RNN(3, 4, bidirectional=True), lambda r: r[0]), "bidirectional RNN"),
        (Recurrent(nn.LSTM(3, 4, batch_first=True), lambda r: r[0][:, :, 0]), "only one step"),
        (
            Recurrent(nn.LSTM(3, 4, batch_first=True, bidirectional=True), lambda r: r[1][0][-1]),
            "h_n of the recurrent layer",
        ),
    ],
)
def test_recurrent_forms_that_cannot_be_carried_are_refused(model, message, tmp_path):
    with pytest.raises(UnsupportedError, match=message.replace("\n", " ")):
        export_torch(model.eval(), torch.randn(1, 5, 3), tmp_path / "m.mlmodel", loss=nn.MSELoss())


def test_a_conv1d_on_a_sequence_is_refused_with_the_fix(tmp_path):
    class Wrong(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.conv = nn.Conv1d(7, 2, 1)

        def forward(self, tokens):
            return self.conv(self.embed(tokens)).flatten(1)

    with pytest.raises(UnsupportedError, match="transposed to"):
        export_torch(
            Wrong(), torch.randint(0, 10, (1, 7)), tmp_path / "m.mlmodel", loss=nn.MSELoss()
        )


class Bags(nn.Module):
    def __init__(self, **options) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(VOCAB, 4, **options)

    def forward(self, tokens):
        return self.bag(tokens)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (Bags(mode="sum"), "mode must be 'mean'"),
        (Bags(mode="mean", padding_idx=0), "padding_idx"),
    ],
)
def test_embedding_bags_core_ml_cannot_compute_are_refused(model, message, tmp_path):
    tokens = torch.randint(0, VOCAB, (1, TOKENS))
    with pytest.raises(UnsupportedError, match=message):
        export_torch(model.eval(), tokens, tmp_path / "m.mlmodel", loss=nn.MSELoss())
