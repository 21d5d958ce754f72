"""Finite-difference checks (float64) of every backward op and of both losses."""

from __future__ import annotations

import numpy as np
import pytest

from updatable_coreml._proto import NeuralNetwork_pb2 as nn_pb
from updatable_coreml.errors import RuntimeLayerError
from updatable_coreml.runtime import model as _model  # noqa: F401  (registers the ops)
from updatable_coreml.runtime.backward import backward_op, cross_entropy, mean_squared_error
from updatable_coreml.runtime.layers.recurrent import lstm_trainable_fields
from updatable_coreml.runtime.registry import forward_op

RNG = np.random.default_rng(42)
STEP = 1e-6
Pool = nn_pb.PoolingLayerParams


def make_layer(kind: str, updatable: bool = False) -> nn_pb.NeuralNetworkLayer:
    layer = nn_pb.NeuralNetworkLayer(name=kind, input=["x"], output=["y"], isUpdatable=updatable)
    getattr(layer, kind).SetInParent()
    return layer


def numeric_grad(f, array: np.ndarray) -> np.ndarray:
    """Central differences of scalar ``f()`` w.r.t. every entry of ``array`` (perturbed in place)."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + STEP
        up = f()
        array[index] = saved - STEP
        down = f()
        array[index] = saved
        grad[index] = (up - down) / (2 * STEP)
    return grad


def check_layer(layer, x: np.ndarray, weights: dict | None = None) -> None:
    """Compare the backward op with finite differences of sum(forward(x) * r)."""
    weights = {
        k: np.asarray(v, dtype=np.float64).ravel().copy() for k, v in (weights or {}).items()
    }
    getter = weights.__getitem__
    forward = forward_op(layer)
    y = forward(layer, [x], getter)[0]
    r = RNG.normal(size=y.shape)

    def loss() -> float:
        return float(np.sum(forward(layer, [x], getter)[0] * r))

    dx, grads = backward_op(layer)(layer, x, y, r, getter, True)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-7)
    expected_fields = set(weights) if layer.isUpdatable else set()
    assert set(grads) == expected_fields
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, numeric_grad(loss, weights[name]), rtol=1e-5, atol=1e-7)
    skipped, _ = backward_op(layer)(layer, x, y, r, getter, False)
    assert skipped is None


def away_from_zero(shape) -> np.ndarray:
    return RNG.choice([-1.0, 1.0], size=shape) * RNG.uniform(0.1, 1.0, size=shape)


# -- layers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "groups,stride,dilation,same",
    [(1, (1, 1), (1, 1), False), (2, (2, 1), (1, 2), False), (1, (2, 2), (1, 1), True)],
)
def test_convolution_gradients(groups, stride, dilation, same):
    layer = make_layer("convolution", updatable=True)
    p = layer.convolution
    p.outputChannels, p.kernelChannels, p.nGroups, p.hasBias = 4, 4 // groups, groups, True
    p.kernelSize.extend([3, 2])
    p.stride.extend(stride)
    p.dilationFactor.extend(dilation)
    if same:
        p.same.SetInParent()
    else:
        amounts = p.valid.paddingAmounts.borderAmounts
        amounts.add(startEdgeSize=1, endEdgeSize=0)
        amounts.add(startEdgeSize=0, endEdgeSize=2)
    x = RNG.normal(size=(2, 4, 6, 5))
    check_layer(
        layer, x, {"weights": RNG.normal(size=(4, 4 // groups, 3, 2)), "bias": RNG.normal(size=4)}
    )


@pytest.mark.parametrize("groups,padding", [(1, "valid"), (2, "same"), (1, "shape")])
def test_deconvolution_gradients(groups, padding):
    layer = make_layer("convolution", updatable=True)
    p = layer.convolution
    p.outputChannels, p.kernelChannels, p.nGroups, p.hasBias = 4, 2, groups, True
    p.isDeconvolution = True
    p.kernelSize.extend([3, 2])
    p.stride.extend([2, 3])
    if padding == "same":
        p.same.SetInParent()
    else:
        amounts = p.valid.paddingAmounts.borderAmounts
        amounts.add(startEdgeSize=1, endEdgeSize=1)
        amounts.add(startEdgeSize=0, endEdgeSize=1)
        if padding == "shape":
            p.outputShape.extend([7, 11])  # one row and two columns past the full output
    check_layer(
        layer,
        RNG.normal(size=(2, 2, 3, 3)),
        {"weights": RNG.normal(size=(2, 4 // groups, 3, 2)), "bias": RNG.normal(size=4)},
    )


def test_frozen_convolution_gives_only_the_input_gradient():
    layer = make_layer("convolution")
    p = layer.convolution
    p.outputChannels, p.kernelChannels = 2, 3
    p.kernelSize.extend([2, 2])
    check_layer(layer, RNG.normal(size=(2, 3, 4, 4)), {"weights": RNG.normal(size=(2, 3, 2, 2))})


@pytest.mark.parametrize("shape", [(3, 6), (3, 6, 1, 1), (2, 3, 2, 1)])
def test_inner_product_gradients(shape):
    layer = make_layer("innerProduct", updatable=True)
    layer.innerProduct.inputChannels, layer.innerProduct.outputChannels = 6, 4
    layer.innerProduct.hasBias = True
    check_layer(
        layer,
        RNG.normal(size=shape),
        {"weights": RNG.normal(size=(4, 6)), "bias": RNG.normal(size=4)},
    )


@pytest.mark.parametrize(
    "kind,exclude,padding",
    [
        (Pool.MAX, True, "valid"),
        (Pool.AVERAGE, True, "valid"),
        (Pool.AVERAGE, False, "valid"),
        (Pool.L2, True, "valid"),
        (Pool.MAX, True, "last"),
        (Pool.AVERAGE, False, "last"),
        (Pool.AVERAGE, True, "same"),
        (Pool.MAX, True, "same"),
    ],
)
def test_pooling_gradients(kind, exclude, padding):
    layer = make_layer("pooling")
    p = layer.pooling
    p.type, p.avgPoolExcludePadding = kind, exclude
    p.kernelSize.extend([3, 2])
    p.stride.extend([2, 2])
    if padding == "valid":
        amounts = p.valid.paddingAmounts.borderAmounts
        amounts.add(startEdgeSize=1, endEdgeSize=1)
        amounts.add(startEdgeSize=0, endEdgeSize=1)
    elif padding == "last":
        p.includeLastPixel.paddingAmounts.extend([1, 1])
    else:
        p.same.SetInParent()
    x = (
        RNG.uniform(0.5, 2.0, size=(2, 2, 7, 6))
        if kind == Pool.L2
        else RNG.normal(size=(2, 2, 7, 6))
    )
    check_layer(layer, x)


@pytest.mark.parametrize("kind", [Pool.MAX, Pool.AVERAGE, Pool.L2])
def test_global_pooling_gradients(kind):
    layer = make_layer("pooling")
    layer.pooling.type, layer.pooling.globalPooling = kind, True
    check_layer(layer, RNG.normal(size=(2, 3, 4, 5)))


@pytest.mark.parametrize("compute,instance", [(False, False), (True, False), (True, True)])
def test_batchnorm_gradients(compute, instance):
    layer = make_layer("batchnorm")
    p = layer.batchnorm
    p.channels, p.computeMeanVar, p.instanceNormalization = 3, compute, instance
    weights = {
        "gamma": RNG.normal(size=3),
        "beta": RNG.normal(size=3),
        "mean": RNG.normal(size=3),
        "variance": RNG.uniform(0.5, 2, size=3),
    }
    check_layer(layer, RNG.normal(size=(4, 3, 3, 2)), weights)


@pytest.mark.parametrize("kind", ["ReLU", "sigmoid", "tanh"])
def test_activation_gradients(kind):
    layer = make_layer("activation")
    getattr(layer.activation, kind).SetInParent()
    check_layer(layer, away_from_zero((2, 3, 2, 2)))


@pytest.mark.parametrize("mode", [0, 1])
def test_flatten_gradients(mode):
    layer = make_layer("flatten")
    layer.flatten.mode = mode
    check_layer(layer, RNG.normal(size=(2, 3, 2, 4)))


@pytest.mark.parametrize("kind", ["leakyReLU", "ELU", "softplus"])
def test_activations_core_ml_cannot_train_through_are_refused(kind):
    layer = make_layer("activation")
    getattr(layer.activation, kind).SetInParent()
    with pytest.raises(RuntimeLayerError, match=f"cannot backpropagate through activation {kind}"):
        backward_op(layer)


def test_softmax_alone_and_concat_are_refused():
    with pytest.raises(RuntimeLayerError, match="directly in front of the categorical"):
        backward_op(make_layer("softmax"))
    with pytest.raises(RuntimeLayerError, match="through concat"):
        backward_op(make_layer("concat"))


def lstm_layer(
    seq_out: bool, bias: bool, activations=("sigmoid", "tanh", "tanh"), updatable: bool = True
) -> tuple[nn_pb.NeuralNetworkLayer, dict]:
    """A 3 -> 4 uniDirectionalLSTM (zero initial states) and random weights for it."""
    layer = nn_pb.NeuralNetworkLayer(
        name="lstm", input=["x"], output=["y", "h", "c"], isUpdatable=updatable
    )
    spec = layer.uniDirectionalLSTM
    spec.inputVectorSize, spec.outputVectorSize = 3, 4
    for kind in activations:
        params = spec.activations.add()
        getattr(params, kind).SetInParent()
        if kind in ("sigmoidHard", "scaledTanh"):
            getattr(params, kind).alpha, getattr(params, kind).beta = 0.4, 0.5
    spec.params.sequenceOutput, spec.params.hasBiasVectors = seq_out, bias
    weights = {
        field: RNG.normal(
            scale=0.6, size=4 if "Bias" in field else (4, 3) if "WeightMatrix" in field else (4, 4)
        )
        for field in lstm_trainable_fields(layer)
    }
    return layer, weights


@pytest.mark.parametrize("seq_out,bias", [(True, True), (False, True), (False, False)])
def test_lstm_gradients_through_time(seq_out, bias):
    layer, weights = lstm_layer(seq_out, bias)
    check_layer(layer, RNG.normal(size=(2, 5, 3, 1, 1)), weights)


@pytest.mark.parametrize(
    "activations", [("sigmoidHard", "scaledTanh", "tanh"), ("sigmoid", "sigmoid", "scaledTanh")]
)
def test_lstm_gradients_with_other_recurrent_activations(activations):
    layer, weights = lstm_layer(True, True, activations)
    check_layer(layer, RNG.normal(size=(2, 4, 3, 1, 1)), weights)


def test_lstm_gradients_on_a_vector_blob_and_with_the_cell_clipped():
    layer, weights = lstm_layer(True, True)
    check_layer(layer, RNG.normal(size=(3, 3)), weights)  # one step
    layer.uniDirectionalLSTM.params.cellClipThreshold = 0.35
    x = RNG.normal(size=(2, 6, 3, 1, 1))
    check_layer(layer, x, weights)


def test_a_frozen_lstm_passes_the_gradient_to_its_input():
    """Core ML backpropagates through uniDirectionalLSTM since coremltools 5.0b1."""
    frozen, weights = lstm_layer(True, True, updatable=False)
    check_layer(frozen, RNG.normal(size=(2, 4, 3, 1, 1)), weights)
    frozen.uniDirectionalLSTM.params.hasPeepholeVectors = True
    with pytest.raises(RuntimeLayerError, match="peepholes"):
        backward_op(frozen, through=True)(
            frozen, np.zeros((1, 3)), None, np.zeros((1, 4)), {}.get, True
        )


# -- losses --------------------------------------------------------------------------------------


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("shape", [(5, 4), (5, 4, 1, 1)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fused_softmax_cross_entropy_gradient(shape, reduction):
    z = RNG.normal(size=shape)
    classes = RNG.integers(0, 4, size=5)
    loss, grad = cross_entropy(softmax(z), classes, reduction)
    picked = -np.log(softmax(z).reshape(5, 4)[np.arange(5), classes])
    assert loss == pytest.approx(picked.mean() if reduction == "mean" else picked.sum())
    numeric = numeric_grad(lambda: cross_entropy(softmax(z), classes, reduction)[0], z)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("elements,batch", [("mean", "mean"), ("sum", "mean"), ("sum", "sum")])
def test_mean_squared_error_gradient(elements, batch):
    pred, target = RNG.normal(size=(4, 3, 1, 1)), RNG.normal(size=(4, 3))
    loss, grad = mean_squared_error(pred, target, elements, batch)
    squares = (pred.reshape(4, 3) - target) ** 2
    per_example = squares.mean(axis=1) if elements == "mean" else squares.sum(axis=1)
    assert loss == pytest.approx(per_example.mean() if batch == "mean" else per_example.sum())
    numeric = numeric_grad(lambda: mean_squared_error(pred, target, elements, batch)[0], pred)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
