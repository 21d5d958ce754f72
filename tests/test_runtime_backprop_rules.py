"""The runtime backpropagates exactly through the layers Core ML's rules table lets gradients
pass (updatable_coreml.coreml_rules): classic reshape refused, uniDirectionalLSTM passed
through (coremltools >= 5.0b1), checked by finite differences and against torch."""

from __future__ import annotations

import numpy as np
import pytest

from updatable_coreml import coreml_rules, runtime
from updatable_coreml._proto import Model_pb2
from updatable_coreml._proto import NeuralNetwork_pb2 as nn_pb
from updatable_coreml.errors import RuntimeLayerError
from updatable_coreml.runtime.backward import backward_op
from updatable_coreml.runtime.registry import FORWARD

RNG = np.random.default_rng(11)
GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")


def bare_layer(kind: str, updatable: bool = False) -> nn_pb.NeuralNetworkLayer:
    layer = nn_pb.NeuralNetworkLayer(
        name=f"my_{kind}", input=["x"], output=["y"], isUpdatable=updatable
    )
    getattr(layer, kind).SetInParent()
    return layer


@pytest.mark.parametrize("kind", sorted(coreml_rules.BACKPROP_LAYER_TYPES))
def test_every_layer_type_the_rules_let_gradients_pass_has_a_backward(kind):
    layer = bare_layer(kind)
    if kind == "activation":
        for activation in coreml_rules.BACKPROP_ACTIVATIONS:
            getattr(layer.activation, activation).SetInParent()
            assert callable(backward_op(layer, through=True))
        return
    assert callable(backward_op(layer, through=True))


@pytest.mark.parametrize(
    "kind", sorted(set(FORWARD) - set(coreml_rules.BACKPROP_LAYER_TYPES) - {"activation"})
)
def test_every_other_layer_type_is_refused_on_the_trainable_path(kind):
    with pytest.raises(RuntimeLayerError, match=f"'my_{kind}'.*cannot backpropagate"):
        backward_op(bare_layer(kind), through=True)


def test_classic_reshape_is_refused_with_the_fix():
    with pytest.raises(RuntimeLayerError) as info:
        backward_op(bare_layer("reshape"))
    assert "'my_reshape'" in str(info.value) and "flatten" in str(info.value)


def dense_reshape_softmax_spec():
    """innerProduct (updatable) -> classic reshape -> softmax -> CCE: Apple's validator says
    "There is a layer (rs), which does not support backpropagation, between an updatable
    marked layer and the loss function." (issue 13)."""
    spec = Model_pb2.Model(specificationVersion=4)
    spec.description.input.add(name="x").type.multiArrayType.shape.append(4)
    spec.description.output.add(name="probs").type.multiArrayType.shape.append(3)
    target = spec.description.trainingInput.add(name="probs_true")
    target.type.multiArrayType.shape.append(1)
    spec.description.trainingInput.add(name="x").type.multiArrayType.shape.append(4)
    spec.isUpdatable = True
    nn = spec.neuralNetwork
    dense = nn.layers.add(name="fc", input=["x"], output=["z"], isUpdatable=True)
    dense.innerProduct.inputChannels, dense.innerProduct.outputChannels = 4, 3
    dense.innerProduct.weights.floatValue.extend(RNG.normal(size=12))
    reshape = nn.layers.add(name="rs", input=["z"], output=["zr"])
    reshape.reshape.targetShape.extend([3, 1, 1])
    nn.layers.add(name="softmax", input=["zr"], output=["probs"]).softmax.SetInParent()
    params = nn.updateParams
    loss = params.lossLayers.add(name="loss").categoricalCrossEntropyLossLayer
    loss.input, loss.target = "probs", "probs_true"
    sgd = params.optimizer.sgdOptimizer
    sgd.learningRate.defaultValue, sgd.miniBatchSize.defaultValue = 0.1, 2
    params.epochs.defaultValue = 1
    return spec


def test_update_through_a_classic_reshape_is_refused():
    model = runtime.load(dense_reshape_softmax_spec())
    with pytest.raises(RuntimeLayerError, match="'rs'.*cannot backpropagate through reshape"):
        model.update({"x": RNG.normal(size=(2, 4)), "probs_true": np.array([0, 2])})


# -- LSTM between an updatable layer and the loss ------------------------------------------------


def lstm_classifier_spec(w: dict, *, lr: float = 0.1, peephole: bool = False):
    """Sequence (Seq, 1, 3) -> innerProduct 3->5 (updatable, per step) -> uniDirectionalLSTM
    5->4 (frozen, last step) -> innerProduct 4->2 -> softmax -> CCE, SGD without momentum."""
    spec = Model_pb2.Model(specificationVersion=5)
    spec.description.input.add(name="x").type.multiArrayType.shape.append(3)
    spec.description.output.add(name="probs").type.multiArrayType.shape.append(2)
    spec.description.trainingInput.add(name="x").type.multiArrayType.shape.append(3)
    spec.description.trainingInput.add(name="probs_true").type.multiArrayType.shape.append(1)
    spec.isUpdatable = True
    nn = spec.neuralNetwork
    first = nn.layers.add(name="fc_in", input=["x"], output=["e"], isUpdatable=True)
    first.innerProduct.inputChannels, first.innerProduct.outputChannels = 3, 5
    first.innerProduct.hasBias = True
    first.innerProduct.weights.floatValue.extend(w["in_w"].ravel())
    first.innerProduct.bias.floatValue.extend(w["in_b"])
    lstm = nn.layers.add(name="lstm", input=["e"], output=["h", "h_n", "c_n"])
    params = lstm.uniDirectionalLSTM
    params.inputVectorSize, params.outputVectorSize = 5, 4
    for kind in ("sigmoid", "tanh", "tanh"):
        getattr(params.activations.add(), kind).SetInParent()
    params.params.hasBiasVectors = True
    params.params.hasPeepholeVectors = peephole
    for k, gate in enumerate(GATES):
        getattr(params.weightParams, gate + "WeightMatrix").floatValue.extend(w["w_ih"][k].ravel())
        getattr(params.weightParams, gate + "RecursionMatrix").floatValue.extend(
            w["w_hh"][k].ravel()
        )
        getattr(params.weightParams, gate + "BiasVector").floatValue.extend(w["b"][k])
    if peephole:
        for gate in ("inputGate", "forgetGate", "outputGate"):
            getattr(params.weightParams, gate + "PeepholeVector").floatValue.extend([0.1] * 4)
    out = nn.layers.add(name="fc_out", input=["h"], output=["logits"])
    out.innerProduct.inputChannels, out.innerProduct.outputChannels = 4, 2
    out.innerProduct.hasBias = True
    out.innerProduct.weights.floatValue.extend(w["out_w"].ravel())
    out.innerProduct.bias.floatValue.extend(w["out_b"])
    nn.layers.add(name="softmax", input=["logits"], output=["probs"]).softmax.SetInParent()
    update = nn.updateParams
    loss = update.lossLayers.add(name="loss").categoricalCrossEntropyLossLayer
    loss.input, loss.target = "probs", "probs_true"
    sgd = update.optimizer.sgdOptimizer
    sgd.learningRate.defaultValue, sgd.miniBatchSize.defaultValue = lr, 4
    sgd.learningRate.range.maxValue = 1
    sgd.miniBatchSize.set.values.append(4)
    update.epochs.defaultValue = 1
    update.epochs.set.values.append(1)
    update.shuffle.defaultValue = False
    return spec


def lstm_weights(seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    stored = {
        "in_w": (5, 3),
        "in_b": (5,),
        "w_ih": (4, 4, 5),
        "w_hh": (4, 4, 4),
        "b": (4, 4),
        "out_w": (2, 4),
        "out_b": (2,),
    }
    return {
        k: rng.normal(scale=0.5, size=s).astype(np.float32).astype(np.float64)
        for k, s in stored.items()
    }


def sequences(seed: int = 4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(4, 6, 1, 3)), np.array([0, 1, 1, 0])


def mean_loss(spec, x, y) -> float:
    probs = runtime.load(spec, dtype=np.float64).predict({"x": x})["probs"].reshape(len(y), -1)
    return float(-np.mean(np.log(probs[np.arange(len(y)), y])))


def test_lstm_passes_gradients_to_an_earlier_updatable_layer_finite_differences():
    w, (x, y) = lstm_weights(), sequences()
    lr = 0.1
    result = runtime.load(lstm_classifier_spec(w, lr=lr), dtype=np.float64).update(
        {"x": x, "probs_true": y}
    )
    trained = result.model.spec.neuralNetwork.layers[0].innerProduct
    grad_w = (w["in_w"].ravel() - np.asarray(trained.weights.floatValue)) / lr
    grad_b = (w["in_b"] - np.asarray(trained.bias.floatValue)) / lr
    step = 1e-4
    for name, grad in (("in_w", grad_w), ("in_b", grad_b)):
        numeric = np.zeros(w[name].size)
        for i in range(w[name].size):
            shifted = {k: v.copy() for k, v in w.items()}
            shifted[name].reshape(-1)[i] += step
            up = mean_loss(lstm_classifier_spec(shifted), x, y)
            shifted[name].reshape(-1)[i] -= 2 * step
            down = mean_loss(lstm_classifier_spec(shifted), x, y)
            numeric[i] = (up - down) / (2 * step)
        # the trained weights are stored as float32: compare at that resolution
        np.testing.assert_allclose(grad, numeric, atol=2e-5 / lr)
        assert np.abs(numeric).max() > 1e-3  # the gradient really reaches the first layer


def test_lstm_pass_through_matches_torch():
    torch = pytest.importorskip("torch")
    w, (x, y) = lstm_weights(5), sequences(6)
    lr = 0.5
    result = runtime.load(lstm_classifier_spec(w, lr=lr), dtype=np.float64).update(
        {"x": x, "probs_true": y}
    )
    trained = result.model.spec.neuralNetwork.layers[0].innerProduct

    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}
    fc_in = torch.nn.Linear(3, 5).double()
    lstm = torch.nn.LSTM(5, 4, batch_first=True).double()
    with torch.no_grad():
        fc_in.weight.copy_(t["in_w"])
        fc_in.bias.copy_(t["in_b"])
        lstm.weight_ih_l0.copy_(t["w_ih"].reshape(16, 5))  # torch gate order i, f, g, o
        lstm.weight_hh_l0.copy_(t["w_hh"].reshape(16, 4))
        lstm.bias_ih_l0.copy_(t["b"].reshape(16))
        lstm.bias_hh_l0.zero_()
    lstm.requires_grad_(False)
    optimizer = torch.optim.SGD(fc_in.parameters(), lr=lr)
    h, _ = lstm(fc_in(torch.tensor(x[:, :, 0], dtype=torch.float64)))
    logits = h[:, -1] @ t["out_w"].T + t["out_b"]
    torch.nn.functional.cross_entropy(logits, torch.tensor(y)).backward()
    optimizer.step()
    np.testing.assert_allclose(
        np.asarray(trained.weights.floatValue), fc_in.weight.detach().numpy().ravel(), atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(trained.bias.floatValue), fc_in.bias.detach().numpy(), atol=1e-6
    )
    assert np.abs(fc_in.weight.detach().numpy() - w["in_w"]).max() > 1e-3


def test_lstm_with_peepholes_on_the_path_is_refused_clearly():
    model = runtime.load(lstm_classifier_spec(lstm_weights(), peephole=True))
    x, y = sequences()
    with pytest.raises(RuntimeLayerError, match="'lstm'.*peepholes"):
        model.update({"x": x, "probs_true": y})
