"""Models that coremltools' own converter makes (``ct.convert(..., convert_to="neuralnetwork")``)
from small torch and Keras models run through our runtime with parity to the source framework
(fp32, 1e-4). They use layer types our exporters never write (reduceMean, greaterThan,
batchedMatmul, transpose, loadConstantND, mvn, softmaxND, ...)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from updatable_coreml import runtime  # noqa: E402

TOLERANCE = 1e-4


def layer_types(spec) -> Counter:
    return Counter(layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers)


def torch_through_coremltools(model, x, path):
    """``model`` traced on ``x`` (input named "x"), converted by coremltools to a NeuralNetwork,
    saved at ``path`` and loaded by our runtime."""
    import torch

    converted = ct.convert(
        torch.jit.trace(model, x),
        inputs=[ct.TensorType(name="x", shape=x.shape)],
        convert_to="neuralnetwork",
    )
    converted.save(str(path))
    return runtime.load(path)


def assert_matches_torch(loaded, model, x) -> None:
    """The runtime's single output equals torch's within the fp32 tolerance."""
    (name,) = [d.name for d in loaded.description.output]
    got = np.asarray(loaded.predict({"x": x.numpy()})[name])
    expected = model(x).detach().numpy()
    assert np.abs(got.reshape(expected.shape) - expected).max() <= TOLERANCE


def test_torch_model_converted_by_coremltools(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
            self.norm = nn.LayerNorm(8)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            h = torch.relu(self.bn(self.conv(x)))
            h = nn.functional.hardswish(self.conv2(h)).mean(dim=(2, 3))
            h = self.norm(h)
            h = h * (h > 0).float() + torch.clamp(h, -1, 1)
            return torch.softmax(self.fc(h), dim=1)

    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 16, 16)
    loaded = torch_through_coremltools(model, x, tmp_path / "torch.mlmodel")
    kinds = layer_types(loaded.spec)
    assert {"reduceMean", "greaterThan", "softmaxND"} <= set(kinds), kinds
    assert_matches_torch(loaded, model, x)


def test_keras_model_converted_by_coremltools(tmp_path):
    keras = pytest.importorskip("keras")
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    h = layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    h = layers.BatchNormalization()(h)
    h = layers.MaxPooling2D()(h)
    h = layers.DepthwiseConv2D(3)(h)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dense(8, activation="tanh")(h)
    model = keras.Model(inputs, layers.Dense(4, activation="softmax")(h))
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype(np.float32)
    converted = ct.convert(model, inputs=[ct.TensorType(shape=x.shape)], convert_to="neuralnetwork")
    path = tmp_path / "keras.mlmodel"
    converted.save(str(path))
    loaded = runtime.load(path)
    kinds = layer_types(loaded.spec)
    assert {"reduceMean", "batchedMatmul", "transpose"} <= set(kinds), kinds
    (name,) = [d.name for d in loaded.description.output]
    got = np.asarray(loaded.predict({loaded.description.input[0].name: x})[name])
    expected = np.asarray(model(x, training=False))
    assert np.abs(got.reshape(expected.shape) - expected).max() <= TOLERANCE


@pytest.mark.parametrize("bidirectional", [False, True])
def test_torch_lstm_converted_by_coremltools(tmp_path, bidirectional):
    """coremltools writes the LSTM on its ND rank-5 tensor [Seq, Batch, C, 1, 1] with constant
    initial states; the runtime runs it as the classic layer."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=bidirectional)
            self.fc = torch.nn.Linear(8 if bidirectional else 4, 2)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.fc(y[:, -1])

    torch.manual_seed(1)
    model = Net().eval()
    x = torch.randn(1, 5, 3)
    loaded = torch_through_coremltools(model, x, tmp_path / "lstm.mlmodel")
    kind = "biDirectionalLSTM" if bidirectional else "uniDirectionalLSTM"
    assert kind in layer_types(loaded.spec)
    assert_matches_torch(loaded, model, x)


def test_torch_gru_converted_by_coremltools_runs_as_a_loop(tmp_path):
    """coremltools writes a torch GRU as a ``loop`` over the steps (see
    test_runtime_control_flow.py for the loop layers themselves)."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = torch.nn.GRU(3, 4, batch_first=True)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            y, _ = self.gru(x)
            return self.fc(y[:, -1])

    torch.manual_seed(2)
    model = Net().eval()
    x = torch.randn(1, 5, 3)
    loaded = torch_through_coremltools(model, x, tmp_path / "gru.mlmodel")
    assert "loop" in layer_types(loaded.spec)
    assert_matches_torch(loaded, model, x)


def test_inner_product_on_tokens_reads_rows_of_the_last_axis(tmp_path):
    """ct.convert writes a torch Linear on a rank-3 tensor as an innerProduct; under the
    exact-rank mapping NeuralNetwork.proto reads rank 3 ``(x1, x2, x3)`` as ``(x1 * x2, x3)``
    (a ViT's tokens), not as one flattened row."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(6, 4)

        def forward(self, x):
            return torch.relu(self.proj(x))

    torch.manual_seed(0)
    model = Tokens().eval()
    x = torch.randn(1, 5, 6)
    loaded = torch_through_coremltools(model, x, tmp_path / "tokens.mlmodel")
    assert layer_types(loaded.spec)["innerProduct"] == 1
    assert_matches_torch(loaded, model, x)


def test_inner_product_reading_a_rank_3_vector_under_exact_mapping_is_refused():
    """A (C, 1, 1) vector under the exact-rank mapping is rank 3: an innerProduct reads it as
    C rows of one value, so inputChannels = C does not fit (what our exporter wrote for GELU
    networks before it declared vectors (1, C, 1, 1))."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    from updatable_coreml.errors import RuntimeLayerError

    builder = NeuralNetworkBuilder(
        [("x", datatypes.Array(4, 1, 1))],
        [("y", datatypes.Array(3, 1, 1))],
        disable_rank5_shape_mapping=True,
    )
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    builder.add_inner_product("fc", w, None, 4, 3, False, "x", "y")
    with pytest.raises(RuntimeLayerError, match="'fc'.*1 values per row.*inputChannels=4"):
        runtime.load(builder.spec).predict({"x": np.ones((4, 1, 1), np.float32)})
    builder.spec.description.input[0].type.multiArrayType.ClearField("shape")
    builder.spec.description.input[0].type.multiArrayType.shape.extend([1, 4, 1, 1])
    y = runtime.load(builder.spec).predict({"x": np.ones((1, 4, 1, 1), np.float32)})["y"]
    assert np.allclose(np.asarray(y).ravel(), w.sum(axis=1))
