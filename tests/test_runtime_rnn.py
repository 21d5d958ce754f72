"""simpleRecurrent against torch.nn.RNN and gru against Keras GRU(reset_after=False), whose
equations are those of NeuralNetwork.proto."""

from __future__ import annotations

import numpy as np
import pytest

from updatable_coreml._proto import NeuralNetwork_pb2 as nn_pb
from updatable_coreml.runtime import layers  # noqa: F401  (registers the ops)
from updatable_coreml.runtime.registry import forward_op

RNG = np.random.default_rng(8)


def run(layer, x, weights, h0=None):
    inputs = [x] + ([h0] if h0 is not None else [])
    return forward_op(layer)(layer, inputs, lambda field: weights[field])


@pytest.mark.parametrize("sequence", [True, False])
def test_simple_recurrent_matches_torch_rnn(sequence):
    torch = pytest.importorskip("torch")
    rnn = torch.nn.RNN(3, 4, batch_first=True).double()
    layer = nn_pb.NeuralNetworkLayer(name="rnn", input=["x"], output=["y", "h"])
    spec = layer.simpleRecurrent
    spec.inputVectorSize, spec.outputVectorSize = 3, 4
    spec.activation.tanh.SetInParent()
    spec.sequenceOutput, spec.hasBiasVector = sequence, True
    weights = {
        "weightMatrix": rnn.weight_ih_l0.detach().numpy().ravel(),
        "recursionMatrix": rnn.weight_hh_l0.detach().numpy().ravel(),
        "biasVector": (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().numpy(),
    }
    x = RNG.normal(size=(2, 5, 3))
    h0 = RNG.normal(size=(2, 4))
    y, h = run(layer, x[:, :, :, None, None], weights, h0)
    ref, ref_h = rnn(torch.tensor(x), torch.tensor(h0)[None])
    ref = ref.detach().numpy()
    np.testing.assert_allclose(y[..., 0, 0], ref if sequence else ref[:, -1:], atol=1e-12)
    np.testing.assert_allclose(h[:, 0, :, 0, 0], ref_h[0].detach().numpy(), atol=1e-12)


@pytest.mark.parametrize("sequence", [True, False])
def test_gru_matches_keras_reset_before(sequence):
    keras = pytest.importorskip("keras")
    cell = keras.layers.GRU(4, reset_after=False, return_sequences=sequence)
    x = RNG.normal(size=(2, 6, 3)).astype(np.float32)
    ref = np.asarray(cell(x))
    kernel, recurrent, bias = (np.asarray(v, dtype=np.float64) for v in cell.get_weights())
    bias = RNG.normal(size=bias.shape) * 0.3
    cell.set_weights([kernel, recurrent, bias])
    ref = np.asarray(cell(x), dtype=np.float64)
    layer = nn_pb.NeuralNetworkLayer(name="gru", input=["x"], output=["y", "h"])
    spec = layer.gru
    spec.inputVectorSize, spec.outputVectorSize = 3, 4
    spec.activations.add().sigmoid.SetInParent()
    spec.activations.add().tanh.SetInParent()
    spec.sequenceOutput, spec.hasBiasVectors = sequence, True
    weights = {}
    for k, gate in enumerate(("updateGate", "resetGate", "outputGate")):  # Keras: z, r, h
        columns = slice(4 * k, 4 * k + 4)
        weights[f"{gate}WeightMatrix"] = kernel[:, columns].T.ravel()
        weights[f"{gate}RecursionMatrix"] = recurrent[:, columns].T.ravel()
        weights[f"{gate}BiasVector"] = bias[columns]
    y, _ = run(layer, x.astype(np.float64)[:, :, :, None, None], weights)
    got = y[..., 0, 0] if sequence else y[:, 0, :, 0, 0]
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("sequence", [True, False])
def test_bidirectional_lstm_matches_torch(sequence):
    torch = pytest.importorskip("torch")
    lstm = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True).double()
    layer = nn_pb.NeuralNetworkLayer(name="bilstm", input=["x"], output=["y", "h", "c", "hb", "cb"])
    spec = layer.biDirectionalLSTM
    spec.inputVectorSize, spec.outputVectorSize = 3, 4
    for activations in (spec.activationsForwardLSTM, spec.activationsBackwardLSTM):
        for kind in ("sigmoid", "tanh", "tanh"):
            getattr(activations.add(), kind).SetInParent()
    spec.params.sequenceOutput, spec.params.hasBiasVectors = sequence, True
    weights = {}
    gates = ("inputGate", "forgetGate", "blockInput", "outputGate")  # torch order i, f, g, o
    for direction, suffix in enumerate(("", "_reverse")):
        spec.weightParams.add()
        w_ih = getattr(lstm, f"weight_ih_l0{suffix}").detach().numpy().reshape(4, 4, 3)
        w_hh = getattr(lstm, f"weight_hh_l0{suffix}").detach().numpy().reshape(4, 4, 4)
        bias = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")
        bias = bias.detach().numpy().reshape(4, 4)
        for k, gate in enumerate(gates):
            weights[f"weightParams.{direction}.{gate}WeightMatrix"] = w_ih[k].ravel()
            weights[f"weightParams.{direction}.{gate}RecursionMatrix"] = w_hh[k].ravel()
            weights[f"weightParams.{direction}.{gate}BiasVector"] = bias[k]
    x = RNG.normal(size=(2, 5, 3))
    y, h, c, hb, cb = run(layer, x[:, :, :, None, None], weights)
    ref, (ref_h, ref_c) = lstm(torch.tensor(x))
    ref = ref.detach().numpy()
    want = ref if sequence else np.concatenate([ref[:, -1:, :4], ref[:, :1, 4:]], axis=-1)
    np.testing.assert_allclose(y[..., 0, 0], want, atol=1e-12)
    np.testing.assert_allclose(hb[:, 0, :, 0, 0], ref_h[1].detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(c[:, 0, :, 0, 0], ref_c[0].detach().numpy(), atol=1e-12)
