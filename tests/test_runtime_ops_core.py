"""Forward ops of the runtime core vs torch.nn.functional / NumPy references."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from updatable_coreml._proto import NeuralNetwork_pb2 as nn_pb  # noqa: E402
from updatable_coreml.errors import RuntimeLayerError  # noqa: E402
from updatable_coreml.runtime import model as _model  # noqa: E402,F401  (registers the ops)
from updatable_coreml.runtime.registry import forward_op  # noqa: E402

RNG = np.random.default_rng(0)
Pool = nn_pb.PoolingLayerParams


def make_layer(kind: str, name: str = "layer") -> nn_pb.NeuralNetworkLayer:
    layer = nn_pb.NeuralNetworkLayer(name=name, input=["x"], output=["y"])
    getattr(layer, kind).SetInParent()
    return layer


def run(layer, x, weights=None):
    weights = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in (weights or {}).items()}
    return forward_op(layer)(layer, [x], lambda field: weights[field])[0]


def t(a):
    return torch.as_tensor(a)


# -- convolution ---------------------------------------------------------------------------------


def conv_layer(cin, cout, k, *, stride=(1, 1), dilation=(1, 1), groups=1, bias=True, deconv=False):
    layer = make_layer("convolution")
    p = layer.convolution
    p.outputChannels, p.kernelChannels, p.nGroups = cout, (cin if deconv else cin // groups), groups
    p.kernelSize.extend(k)
    p.stride.extend(stride)
    p.dilationFactor.extend(dilation)
    p.isDeconvolution, p.hasBias = deconv, bias
    return layer


def set_valid(params, top, bottom, left, right):
    amounts = params.valid.paddingAmounts.borderAmounts
    amounts.add(startEdgeSize=top, endEdgeSize=bottom)
    amounts.add(startEdgeSize=left, endEdgeSize=right)


@pytest.mark.parametrize(
    "groups,stride,dilation,pads",
    [
        (1, (1, 1), (1, 1), (0, 0, 0, 0)),
        (2, (2, 1), (1, 2), (1, 2, 0, 3)),
        (4, (2, 2), (2, 2), (2, 2, 2, 2)),
    ],
)
def test_convolution_valid_matches_torch(groups, stride, dilation, pads):
    x = RNG.normal(size=(2, 4, 9, 10))
    w = RNG.normal(size=(8, 4 // groups, 3, 2))
    b = RNG.normal(size=8)
    layer = conv_layer(4, 8, (3, 2), stride=stride, dilation=dilation, groups=groups)
    set_valid(layer.convolution, *pads)
    top, bottom, left, right = pads
    expected = F.conv2d(
        F.pad(t(x), (left, right, top, bottom)),
        t(w),
        t(b),
        stride=stride,
        dilation=dilation,
        groups=groups,
    )
    np.testing.assert_allclose(run(layer, x, {"weights": w, "bias": b}), expected, atol=1e-12)


@pytest.mark.parametrize(
    "mode,stride,size",
    [
        (nn_pb.SamePadding.BOTTOM_RIGHT_HEAVY, (2, 2), (7, 8)),
        (nn_pb.SamePadding.TOP_LEFT_HEAVY, (2, 3), (7, 8)),
        (nn_pb.SamePadding.BOTTOM_RIGHT_HEAVY, (1, 1), (5, 5)),
    ],
)
def test_convolution_same_padding_splits_like_the_spec(mode, stride, size):
    x = RNG.normal(size=(1, 3) + size)
    w = RNG.normal(size=(2, 3, 4, 3))
    layer = conv_layer(3, 2, (4, 3), stride=stride, bias=False)
    layer.convolution.same.asymmetryMode = mode
    pads = []
    for n, s, k in zip(size, stride, (4, 3)):
        out = -(-n // s)
        total = max(0, (out - 1) * s + k - n)
        small, big = total // 2, total - total // 2
        pads.append((small, big) if mode == nn_pb.SamePadding.BOTTOM_RIGHT_HEAVY else (big, small))
    expected = F.conv2d(F.pad(t(x), pads[1] + pads[0]), t(w), stride=stride)
    y = run(layer, x, {"weights": w})
    assert y.shape[2:] == tuple(-(-n // s) for n, s in zip(size, stride))
    np.testing.assert_allclose(y, expected, atol=1e-12)


def test_convolution_keeps_vector_rank():
    x = RNG.normal(size=(3, 5))
    w = RNG.normal(size=(4, 5, 1, 1))
    layer = conv_layer(5, 4, (1, 1), bias=False)
    np.testing.assert_allclose(run(layer, x, {"weights": w}), x @ w[:, :, 0, 0].T, atol=1e-12)


@pytest.mark.parametrize(
    "groups,stride,pad,output_padding", [(1, (2, 2), 0, 0), (2, (2, 3), 1, 0), (1, (3, 2), 1, 1)]
)
def test_deconvolution_valid_and_output_shape_match_torch(groups, stride, pad, output_padding):
    x = RNG.normal(size=(2, 4, 4, 5))
    w = RNG.normal(size=(4, 6 // groups, 3, 3))
    b = RNG.normal(size=6)
    layer = conv_layer(4, 6, (3, 3), stride=stride, groups=groups, deconv=True)
    set_valid(layer.convolution, pad, pad, pad, pad)
    expected = F.conv_transpose2d(
        t(x), t(w), t(b), stride=stride, padding=pad, output_padding=output_padding, groups=groups
    )
    if output_padding:
        layer.convolution.outputShape.extend(expected.shape[2:])
    np.testing.assert_allclose(run(layer, x, {"weights": w, "bias": b}), expected, atol=1e-12)


def test_deconvolution_same_is_input_times_stride():
    x = RNG.normal(size=(1, 2, 3, 4))
    w = RNG.normal(size=(2, 3, 3, 3))
    layer = conv_layer(2, 3, (3, 3), stride=(2, 2), bias=False, deconv=True)
    layer.convolution.same.SetInParent()
    full = F.conv_transpose2d(t(x), t(w), stride=2)  # (1, 3, 7, 9); total crop 1, top 0
    np.testing.assert_allclose(run(layer, x, {"weights": w}), full[:, :, :6, :8], atol=1e-12)


# -- pooling -------------------------------------------------------------------------------------


def pool_layer(kind, k, s, *, exclude=True, global_=False):
    layer = make_layer("pooling")
    p = layer.pooling
    p.type = kind
    p.kernelSize.extend(k)
    p.stride.extend(s)
    p.avgPoolExcludePadding, p.globalPooling = exclude, global_
    return layer


def reference_pool(x, kind, k, s, pads, exclude):
    """Pool on an explicitly padded input (pads = top, bottom, left, right)."""
    top, bottom, left, right = pads
    xt = t(x)
    if kind == Pool.MAX:
        return F.max_pool2d(F.pad(xt, (left, right, top, bottom), value=-np.inf), k, s)
    if kind == Pool.L2:
        return F.lp_pool2d(F.pad(xt, (left, right, top, bottom)), 2, k, s)
    area = k[0] * k[1]
    sums = F.avg_pool2d(F.pad(xt, (left, right, top, bottom)), k, s) * area
    if not exclude:
        return sums / area
    ones = F.pad(torch.ones_like(xt), (left, right, top, bottom))
    return sums / (F.avg_pool2d(ones, k, s) * area)


@pytest.mark.parametrize("kind", [Pool.MAX, Pool.AVERAGE, Pool.L2])
@pytest.mark.parametrize("exclude", [True, False])
@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 2, 0, 1)])
def test_pooling_valid_with_padding(kind, exclude, pads):
    x = RNG.normal(size=(2, 3, 7, 8))
    layer = pool_layer(kind, (3, 2), (2, 2), exclude=exclude)
    set_valid(layer.pooling, *pads)
    expected = reference_pool(x, kind, (3, 2), (2, 2), pads, exclude)
    np.testing.assert_allclose(run(layer, x), expected, atol=1e-12)


@pytest.mark.parametrize("kind", [Pool.MAX, Pool.AVERAGE])
@pytest.mark.parametrize("exclude", [True, False])
@pytest.mark.parametrize(
    "mode", [nn_pb.SamePadding.BOTTOM_RIGHT_HEAVY, nn_pb.SamePadding.TOP_LEFT_HEAVY]
)
def test_pooling_same_padding(kind, exclude, mode):
    x = RNG.normal(size=(1, 2, 6, 7))
    layer = pool_layer(kind, (3, 3), (2, 2), exclude=exclude)
    layer.pooling.same.asymmetryMode = mode
    # out 3x4; total padding 1 (H) and 2 (W)
    pads = (0, 1, 1, 1) if mode == nn_pb.SamePadding.BOTTOM_RIGHT_HEAVY else (1, 0, 1, 1)
    expected = reference_pool(x, kind, (3, 3), (2, 2), pads, exclude)
    y = run(layer, x)
    assert y.shape == (1, 2, 3, 4)
    np.testing.assert_allclose(y, expected, atol=1e-12)


@pytest.mark.parametrize("size,k,s,p", [(6, 3, 2, 1), (7, 3, 2, 1), (5, 2, 2, 0), (8, 3, 3, 1)])
@pytest.mark.parametrize(
    "kind,exclude", [(Pool.MAX, True), (Pool.AVERAGE, False), (Pool.AVERAGE, True)]
)
def test_pooling_include_last_pixel_is_ceil_mode(size, k, s, p, kind, exclude):
    """Apple's ValidCompletePadding = Caffe's ceil-mode pooling = torch's ceil_mode=True."""
    x = RNG.normal(size=(2, 3, size, size + 1))
    layer = pool_layer(kind, (k, k), (s, s), exclude=exclude)
    layer.pooling.includeLastPixel.paddingAmounts.extend([p, p])
    if kind == Pool.MAX:
        expected = F.max_pool2d(t(x), k, s, padding=p, ceil_mode=True)
    else:
        expected = F.avg_pool2d(
            t(x), k, s, padding=p, ceil_mode=True, count_include_pad=not exclude
        )
    np.testing.assert_allclose(run(layer, x), expected, atol=1e-12)


@pytest.mark.parametrize(
    "kind,reduce",
    [
        (Pool.MAX, lambda x: x.max(axis=(2, 3), keepdims=True)),
        (Pool.AVERAGE, lambda x: x.mean(axis=(2, 3), keepdims=True)),
        (Pool.L2, lambda x: np.sqrt((x**2).sum(axis=(2, 3), keepdims=True))),
    ],
)
def test_global_pooling(kind, reduce):
    x = RNG.normal(size=(2, 3, 5, 4))
    layer = pool_layer(kind, (2, 2), (1, 1), global_=True)
    np.testing.assert_allclose(run(layer, x), reduce(x), atol=1e-12)


# -- inner product, batchnorm, softmax, flatten, reshape ---------------------------------------


@pytest.mark.parametrize("shape", [(3, 12), (3, 3, 2, 2)])
def test_inner_product_keeps_rank(shape):
    x = RNG.normal(size=shape)
    w, b = RNG.normal(size=(5, 12)), RNG.normal(size=5)
    layer = make_layer("innerProduct")
    layer.innerProduct.inputChannels, layer.innerProduct.outputChannels = 12, 5
    layer.innerProduct.hasBias = True
    y = run(layer, x, {"weights": w, "bias": b})
    expected = x.reshape(3, 12) @ w.T + b
    assert y.shape == ((3, 5) if len(shape) == 2 else (3, 5, 1, 1))
    np.testing.assert_allclose(y.reshape(3, 5), expected, atol=1e-12)


def test_inner_product_size_mismatch_names_the_layer():
    from updatable_coreml._proto import Model_pb2
    from updatable_coreml.runtime import load

    spec = Model_pb2.Model(specificationVersion=4)
    spec.description.input.add(name="x").type.multiArrayType.shape.append(7)
    spec.description.output.add(name="y").type.multiArrayType.shape.append(2)
    layer = spec.neuralNetwork.layers.add(name="dense", input=["x"], output=["y"])
    layer.innerProduct.inputChannels, layer.innerProduct.outputChannels = 6, 2
    layer.innerProduct.weights.floatValue.extend([0.0] * 12)
    with pytest.raises(RuntimeLayerError, match="'dense' \\(innerProduct\\).*inputChannels=6"):
        load(spec).predict({"x": np.zeros(7)})


@pytest.mark.parametrize("compute,instance", [(False, False), (True, False), (True, True)])
def test_batchnorm_matches_torch(compute, instance):
    x = RNG.normal(size=(4, 3, 5, 2))
    gamma, beta = RNG.normal(size=3), RNG.normal(size=3)
    mean, var = RNG.normal(size=3), RNG.uniform(0.5, 2, size=3)
    layer = make_layer("batchnorm")
    p = layer.batchnorm
    p.channels, p.computeMeanVar, p.instanceNormalization, p.epsilon = 3, compute, instance, 1e-3
    weights = {"gamma": gamma, "beta": beta, "mean": mean, "variance": var}
    if instance:
        expected = F.instance_norm(t(x), weight=t(gamma), bias=t(beta), eps=1e-3)
    else:
        expected = F.batch_norm(
            t(x), t(mean), t(var), t(gamma), t(beta), training=compute, eps=1e-3
        )
    np.testing.assert_allclose(run(layer, x, weights), expected, atol=1e-6)


def test_batchnorm_default_epsilon_on_vectors():
    x = RNG.normal(size=(2, 3))
    layer = make_layer("batchnorm")
    layer.batchnorm.channels = 3
    weights = {
        "gamma": np.ones(3),
        "beta": np.zeros(3),
        "mean": np.zeros(3),
        "variance": np.ones(3),
    }
    np.testing.assert_allclose(run(layer, x, weights), x / np.sqrt(1 + 1e-5), atol=1e-12)


@pytest.mark.parametrize(
    "shape,dim", [((2, 5), 1), ((2, 5, 1, 1), 1), ((2, 4, 3, 2), 1), ((2, 3, 4, 3, 2), 2)]
)
def test_softmax_axis(shape, dim):
    x = RNG.normal(size=shape) * 10
    np.testing.assert_allclose(run(make_layer("softmax"), x), torch.softmax(t(x), dim), atol=1e-12)


@pytest.mark.parametrize(
    "mode", [nn_pb.FlattenLayerParams.CHANNEL_FIRST, nn_pb.FlattenLayerParams.CHANNEL_LAST]
)
def test_flatten_modes(mode):
    x = RNG.normal(size=(2, 3, 4, 5))
    layer = make_layer("flatten")
    layer.flatten.mode = mode
    order = (0, 1, 2, 3) if mode == nn_pb.FlattenLayerParams.CHANNEL_FIRST else (0, 2, 3, 1)
    np.testing.assert_array_equal(run(layer, x), x.transpose(order).reshape(2, 60, 1, 1))


@pytest.mark.parametrize(
    "mode", [nn_pb.ReshapeLayerParams.CHANNEL_FIRST, nn_pb.ReshapeLayerParams.CHANNEL_LAST]
)
def test_reshape_modes(mode):
    x = RNG.normal(size=(2, 3, 4, 2))
    layer = make_layer("reshape")
    layer.reshape.targetShape.extend([4, 3, 2])
    layer.reshape.mode = mode
    if mode == nn_pb.ReshapeLayerParams.CHANNEL_FIRST:
        expected = x.reshape(2, 4, 3, 2)
    else:  # read H,W,C; write [H_out, W_out, C_out] then move C_out first
        expected = x.transpose(0, 2, 3, 1).reshape(2, 3, 2, 4).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(run(layer, x), expected)
    layer.reshape.ClearField("targetShape")
    layer.reshape.targetShape.extend([2, 12, 1, 1])
    assert run(layer, x).shape == (2, 2, 12, 1, 1)


# -- activations ---------------------------------------------------------------------------------


def softplus(x):
    return np.log1p(np.exp(x))


ACTIVATION_CASES = {
    "linear": ({"alpha": 1.5, "beta": -0.5}, lambda x: 1.5 * x - 0.5),
    "ReLU": ({}, lambda x: F.relu(t(x))),
    "leakyReLU": ({"alpha": 0.2}, lambda x: F.leaky_relu(t(x), 0.2)),
    "thresholdedReLU": ({"alpha": 0.3}, lambda x: np.where(x >= 0.3, x, 0)),
    "tanh": ({}, lambda x: torch.tanh(t(x))),
    "scaledTanh": ({"alpha": 1.7, "beta": 0.6}, lambda x: 1.7 * np.tanh(0.6 * x)),
    "sigmoid": ({}, lambda x: torch.sigmoid(t(x))),
    "sigmoidHard": ({"alpha": 1 / 6, "beta": 0.5}, lambda x: F.hardsigmoid(t(x))),
    "ELU": ({"alpha": 0.7}, lambda x: F.elu(t(x), 0.7)),
    "softsign": ({}, lambda x: F.softsign(t(x))),
    "softplus": ({}, lambda x: F.softplus(t(x))),
}


@pytest.mark.parametrize("kind", sorted(ACTIVATION_CASES))
def test_activation(kind):
    fields, reference = ACTIVATION_CASES[kind]
    x = RNG.normal(size=(2, 3, 4, 5)) * 3
    layer = make_layer("activation")
    params = getattr(layer.activation, kind)
    params.SetInParent()
    for name, value in fields.items():
        setattr(params, name, value)
    np.testing.assert_allclose(run(layer, x), reference(x), atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3)])
def test_prelu_and_parametric_softplus_are_per_channel(shape):
    x = RNG.normal(size=shape) * 3
    alpha, beta = RNG.uniform(0.1, 2, size=3), RNG.uniform(0.1, 2, size=3)
    layer = make_layer("activation")
    layer.activation.PReLU.SetInParent()
    expected = F.prelu(t(x), t(alpha))
    np.testing.assert_allclose(run(layer, x, {"PReLU.alpha": alpha}), expected, atol=1e-12)
    layer.activation.parametricSoftplus.SetInParent()
    per_channel = (-1,) + (1,) * (len(shape) - 2)
    expected = alpha.reshape(per_channel) * softplus(beta.reshape(per_channel) * x)
    weights = {"parametricSoftplus.alpha": alpha, "parametricSoftplus.beta": beta}
    np.testing.assert_allclose(run(layer, x, weights), expected, atol=1e-12)


def test_unregistered_layer_type_is_named():
    """Every layer type of NeuralNetwork.proto has a forward op now (``custom`` refuses at run
    time, naming its class); a layer with no type set, as a damaged file may hold, is named."""
    layer = nn_pb.NeuralNetworkLayer(name="mystery")
    with pytest.raises(RuntimeLayerError, match="'mystery'.*None"):
        forward_op(layer)
