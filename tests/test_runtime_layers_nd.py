"""Forward ops of the ND layer types (NeuralNetwork.proto, specification 4+) against NumPy or
torch references written from the proto's definitions, and the list of every layer type."""

from __future__ import annotations

import numpy as np
import pytest

from updatable_coreml._proto import NeuralNetwork_pb2 as nn_pb
from updatable_coreml.errors import RuntimeLayerError
from updatable_coreml.runtime import layers  # noqa: F401  (registers the ops)
from updatable_coreml.runtime.control import CONTROL_FLOW
from updatable_coreml.runtime.registry import FORWARD, forward_op

RNG = np.random.default_rng(21)
Mode = nn_pb.ScatterMode


def run(kind: str, inputs, setup=None, weights=None, outputs: int = 1):
    """Run one layer of ``kind`` on batched ``inputs``; ``setup(params)`` fills its message."""
    layer = nn_pb.NeuralNetworkLayer(
        name=f"my_{kind}",
        input=[f"x{i}" for i in range(len(inputs))],
        output=[f"y{i}" for i in range(outputs)],
    )
    params = getattr(layer, kind)
    params.SetInParent()
    if setup:
        setup(params)
    stored = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in (weights or {}).items()}
    result = forward_op(layer)(
        layer,
        [np.asarray(x, dtype=np.float64) for x in inputs],
        lambda field: stored.get(field, np.zeros(0)),
    )
    return result if outputs > 1 else result[0]


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert np.shape(got) == np.shape(want)


# -- comparisons, logical, where, mod ------------------------------------------------------------

CMP = {
    "equal": np.equal,
    "notEqual": np.not_equal,
    "lessThan": np.less,
    "lessEqual": np.less_equal,
    "greaterThan": np.greater,
    "greaterEqual": np.greater_equal,
}


@pytest.mark.parametrize("kind", sorted(CMP))
def test_comparisons_two_inputs_broadcast_and_alpha(kind):
    a = RNG.integers(-2, 3, size=(2, 3, 4)).astype(float)
    b = RNG.integers(-2, 3, size=(2, 4)).astype(float)  # (4,) per example: broadcasts
    close(run(kind, [a, b]), CMP[kind](a, b[:, None, :]).astype(float))

    def alpha(p):
        p.alpha = 0.5

    close(run(kind, [a], alpha), CMP[kind](a, 0.5).astype(float))


@pytest.mark.parametrize(
    "kind,fn",
    [("logicalAnd", np.logical_and), ("logicalOr", np.logical_or), ("logicalXor", np.logical_xor)],
)
def test_logical_ops_treat_non_zero_as_true(kind, fn):
    a, b = RNG.integers(-1, 2, size=(2, 5)).astype(float), RNG.integers(0, 2, size=(2, 5)) * 0.3
    close(run(kind, [a, b]), fn(a != 0, b != 0).astype(float))
    close(run("logicalNot", [a]), (a == 0).astype(float))


def test_where_broadcastable():
    cond = RNG.integers(0, 2, size=(2, 3, 1)).astype(float)
    x, y = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 4))
    close(run("whereBroadcastable", [cond, x, y]), np.where(cond != 0, x, y[:, None, :]))


def test_mod_and_floor_div_match_torch_remainder_and_floor_divide():
    torch = pytest.importorskip("torch")
    a, b = RNG.normal(size=(2, 6)) * 5, RNG.choice([-3.0, 2.0, 0.7], size=(2, 6))
    close(
        run("modBroadcastable", [a, b]), torch.remainder(torch.tensor(a), torch.tensor(b)).numpy()
    )
    close(
        run("floorDivBroadcastable", [a, b]),
        torch.floor_divide(torch.tensor(a), torch.tensor(b)).numpy(),
    )


def test_clamped_relu():
    x = RNG.normal(size=(2, 7)) * 3

    def setup(p):
        p.alpha, p.beta = 0.1, 2.0

    close(run("clampedReLU", [x], setup), np.minimum(2.0, np.where(x >= 0, x, 0.1 * x)))


# -- reductions ---------------------------------------------------------------------------------

REDUCE = {
    "reduceSum": lambda x, a, k: x.sum(axis=a, keepdims=k),
    "reduceMean": lambda x, a, k: x.mean(axis=a, keepdims=k),
    "reduceProd": lambda x, a, k: x.prod(axis=a, keepdims=k),
    "reduceMax": lambda x, a, k: x.max(axis=a, keepdims=k),
    "reduceMin": lambda x, a, k: x.min(axis=a, keepdims=k),
    "reduceL1": lambda x, a, k: np.abs(x).sum(axis=a, keepdims=k),
    "reduceL2": lambda x, a, k: np.sqrt((x * x).sum(axis=a, keepdims=k)),
    "reduceSumSquare": lambda x, a, k: (x * x).sum(axis=a, keepdims=k),
    "reduceLogSum": lambda x, a, k: np.log(x.sum(axis=a, keepdims=k)),
    "reduceLogSumExp": lambda x, a, k: np.log(np.exp(x).sum(axis=a, keepdims=k)),
}


@pytest.mark.parametrize("kind", sorted(REDUCE))
@pytest.mark.parametrize("axes,keep", [((-1,), False), ((0, 2), True), ((1,), False)])
def test_nd_reductions(kind, axes, keep):
    x = RNG.uniform(0.5, 2.0, size=(2, 3, 4, 5))

    def setup(p):
        p.axes.extend(axes)
        p.keepDims = keep

    want = REDUCE[kind](x, tuple(a % 3 + 1 for a in axes), keep)
    close(run(kind, [x], setup), want)


def test_reduce_all_keeps_one_axis():
    x = RNG.normal(size=(3, 2, 4))

    def setup(p):
        p.reduceAll = True

    close(run("reduceSum", [x], setup), x.sum(axis=(1, 2)).reshape(3, 1))


@pytest.mark.parametrize("kind,fn", [("argMax", np.argmax), ("argMin", np.argmin)])
@pytest.mark.parametrize("remove", [False, True])
def test_arg_max_min(kind, fn, remove):
    x = RNG.normal(size=(2, 3, 5))

    def setup(p):
        p.axis, p.removeDim = -1, remove

    want = fn(x, axis=2)
    close(run(kind, [x], setup), want if remove else want[..., None])


@pytest.mark.parametrize(
    "exclude,reverse", [(False, False), (True, False), (False, True), (True, True)]
)
def test_cum_sum_matches_the_proto_example(exclude, reverse):
    x = np.array([[4.0, 6.0, 7.0]])

    def setup(p):
        p.axis, p.excludeFinalSum, p.reverse = 0, exclude, reverse

    want = {
        (False, False): [4, 10, 17],
        (True, False): [0, 4, 10],
        (False, True): [17, 13, 7],
        (True, True): [13, 7, 0],
    }[(exclude, reverse)]
    close(run("cumSum", [x], setup), np.array([want], dtype=float))


@pytest.mark.parametrize("bottom", [False, True])
def test_top_k_matches_torch(bottom):
    torch = pytest.importorskip("torch")
    x = RNG.normal(size=(2, 4, 6))

    def setup(p):
        p.axis, p.K, p.useBottomK = 1, 3, bottom  # axis 1 of each example: blob axis 2

    values, indices = run("topK", [x], setup, outputs=2)
    ref = torch.topk(torch.tensor(x), 3, dim=2, largest=not bottom)
    close(values, ref.values.numpy())
    close(indices, ref.indices.numpy().astype(float))


def test_arg_sort_matches_the_proto_example():
    x = np.array([[[3, 5, 32], [3, 77, 6]]], dtype=float)

    def setup(p):
        p.axis, p.descending = 1, True

    close(run("argSort", [x], setup), np.array([[[2, 1, 0], [1, 2, 0]]], dtype=float))
    close(
        run("argSort", [x], lambda p: setattr(p, "axis", 1)),
        np.array([[[0, 1, 2], [0, 2, 1]]], dtype=float),
    )


# -- linear, normalization ----------------------------------------------------------------------


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_batched_matmul_two_inputs(ta, tb):
    a, b = RNG.normal(size=(2, 3, 4, 5)), RNG.normal(size=(2, 5, 6))
    a_in = np.swapaxes(a, -1, -2) if ta else a
    b_in = np.swapaxes(b, -1, -2) if tb else b

    def setup(p):
        p.transposeA, p.transposeB = ta, tb

    close(run("batchedMatmul", [a_in, b_in], setup), np.matmul(a, b[:, None]))


def test_batched_matmul_vectors_and_weights():
    v, m = RNG.normal(size=(2, 4)), RNG.normal(size=(2, 4, 3))
    close(run("batchedMatmul", [v, m]), np.einsum("bk,bkn->bn", v, m))
    w, bias = RNG.normal(size=(4, 3)), RNG.normal(size=3)
    x = RNG.normal(size=(2, 5, 4))

    def setup(p):
        p.weightMatrixFirstDimension, p.weightMatrixSecondDimension, p.hasBias = 4, 3, True

    close(run("batchedMatmul", [x], setup, {"weights": w.T, "bias": bias}), x @ w + bias)


def test_layer_normalization_matches_torch():
    torch = pytest.importorskip("torch")
    x, gamma, beta = RNG.normal(size=(2, 3, 4, 5)), RNG.normal(size=(4, 5)), RNG.normal(size=(4, 5))

    def setup(p):
        p.normalizedShape.extend([4, 5])
        p.eps = 1e-5

    want = torch.nn.functional.layer_norm(
        torch.tensor(x), (4, 5), torch.tensor(gamma), torch.tensor(beta), 1e-5
    ).numpy()
    close(run("layerNormalization", [x], setup, {"gamma": gamma, "beta": beta}), want)


# -- tensor shaping -----------------------------------------------------------------------------


def test_copy_tile_stack_reverse():
    x = RNG.normal(size=(2, 2, 4, 2))
    close(run("copy", [x]), x)
    close(run("tile", [x], lambda p: p.reps.extend([1, 2, 6])), np.tile(x, (1, 1, 2, 6)))
    close(run("tile", [x], lambda p: p.reps.extend([6])), np.tile(x, (1, 1, 1, 6)))
    close(run("tile", [x, np.array([[1, 2, 6], [1, 2, 6]])]), np.tile(x, (1, 1, 2, 6)))
    y = RNG.normal(size=x.shape)
    close(run("stack", [x, y], lambda p: setattr(p, "axis", -2)), np.stack([x, y], axis=-2))
    close(
        run("reverse", [x], lambda p: p.reverseDim.extend([True, False, True])), x[:, ::-1, :, ::-1]
    )


def test_reshapes_and_broadcasts():
    x = RNG.normal(size=(2, 3, 4))
    x4 = RNG.normal(size=(2, 3, 4, 2))
    close(
        run("rankPreservingReshape", [x4], lambda p: p.targetShape.extend([0, 2, -1])),
        x4.reshape(2, 3, 2, 4),
    )
    close(run("reshapeLike", [x, np.zeros((2, 6, 2))]), x.reshape(2, 6, 2))
    close(run("reshapeDynamic", [x, np.array([[4, 3], [4, 3]])]), x.reshape(2, 4, 3))
    v = RNG.normal(size=(2, 1, 4))
    want = np.broadcast_to(v[:, None], (2, 5, 3, 4))
    close(run("broadcastToStatic", [v], lambda p: p.targetShape.extend([5, 3, 4])), want)
    close(run("broadcastToLike", [v, np.zeros((2, 5, 3, 4))]), want)
    close(run("broadcastToDynamic", [v, np.array([[5, 3, 4]] * 2)]), want)
    close(run("getShape", [x]), np.array([[3, 4], [3, 4]], dtype=float))
    with pytest.raises(RuntimeLayerError, match="differs between the examples"):
        run("reshapeDynamic", [x, np.array([[4, 3], [3, 4]])])


@pytest.mark.parametrize(
    "amounts,given,want", [([0, 1, 4, 0], False, (21, 14)), ([0, 21, 14, 0], True, (21, 14))]
)
def test_constant_pad_matches_the_proto_examples(amounts, given, want):
    x = RNG.normal(size=(1, 20, 10))

    def setup(p):
        p.value, p.padToGivenOutputSizeMode = -2.0, given
        p.padAmounts.extend(amounts)

    y = run("constantPad", [x], setup)
    assert y.shape[1:] == want
    if not given:
        close(y, np.pad(x, ((0, 0), (0, 1), (4, 0)), constant_values=-2.0))


def test_sliding_windows():
    x = RNG.normal(size=(2, 3, 10, 4))

    def setup(p):
        p.axis, p.windowSize, p.step = 1, 4, 3

    want = np.stack([x[:, :, m * 3 : m * 3 + 4] for m in range(3)], axis=2)
    close(run("slidingWindows", [x], setup), want)


def test_fills_and_ranges():
    x = RNG.normal(size=(2, 3, 4))
    close(run("fillLike", [x], lambda p: setattr(p, "value", 1.5)), np.full(x.shape, 1.5))

    def static(p):
        p.value = 2.0
        p.targetShape.extend([2, 3])

    close(run("fillStatic", [], static), np.full((1, 2, 3), 2.0))
    close(
        run("fillDynamic", [np.array([[2, 3]] * 2)], lambda p: setattr(p, "value", 3.0)),
        np.full((2, 2, 3), 3.0),
    )

    def arange(p):
        p.startValue, p.endValue, p.stepSizeValue = 1.0, 4.0, 0.5

    close(run("rangeStatic", [], arange), np.arange(1.0, 4.0, 0.5)[None])
    close(
        run("rangeDynamic", [np.array([[5.0]]), np.array([[1.0]]), np.array([[2.0]])]),
        np.array([[1.0, 3.0]]),
    )


# -- indexing -----------------------------------------------------------------------------------


def test_gather_nd_matches_the_proto_shapes():
    params = RNG.normal(size=(1, 4, 2, 3, 4))
    indices = np.stack([RNG.integers(0, 4, 6), RNG.integers(0, 2, 6)], axis=1)[None].astype(float)
    got = run("gatherND", [params, indices])
    assert got.shape == (1, 6, 3, 4)
    close(got, params[0][indices[0, :, 0].astype(int), indices[0, :, 1].astype(int)][None])


def test_gather_and_scatter_along_axis_match_numpy():
    data = RNG.normal(size=(2, 4, 4, 7))
    index = RNG.integers(-4, 4, size=(2, 4, 5, 7)).astype(float)
    close(
        run("gatherAlongAxis", [data, index], lambda p: setattr(p, "axis", 1)),
        np.take_along_axis(data, np.where(index < 0, index + 4, index).astype(int), axis=2),
    )
    container = RNG.normal(size=(2, 2, 5, 6))
    rows = np.stack([RNG.permutation(5)[:2] for _ in range(2 * 2 * 6)]).reshape(2, 2, 6, 2)
    idx = rows.transpose(0, 1, 3, 2).astype(float)  # distinct rows per column: no collisions
    updates = RNG.normal(size=(2, 2, 2, 6))
    want = container.copy()
    np.put_along_axis(want, idx.astype(int), updates, axis=2)
    close(
        run("scatterAlongAxis", [container, idx, updates], lambda p: setattr(p, "axis", -2)), want
    )


@pytest.mark.parametrize(
    "mode,fn",
    [(Mode.SCATTER_UPDATE, None), (Mode.SCATTER_ADD, np.add), (Mode.SCATTER_MAX, np.maximum)],
)
def test_scatter_along_an_axis(mode, fn):
    container = RNG.normal(size=(1, 4, 4, 3))
    indices = np.array([[2.0, -1.0, 0.0, 2.0, 1.0, 3.0]])  # (6,) with a repeat and a negative
    updates = RNG.normal(size=(1, 4, 6, 3))

    def setup(p):
        p.axis, p.mode = -2, mode

    want = container.copy()
    for i, k in enumerate([2, 3, 0, 2, 1, 3]):
        want[0, :, k] = updates[0, :, i] if fn is None else fn(want[0, :, k], updates[0, :, i])
    close(run("scatter", [container, indices, updates], setup), want)


def test_scatter_nd():
    container = RNG.normal(size=(1, 7, 6))
    indices = np.array([[[1.0], [4.0], [1.0]]])
    updates = RNG.normal(size=(1, 3, 6))
    want = container.copy()
    want[0, 1] += updates[0, 0] + updates[0, 2]
    want[0, 4] += updates[0, 1]
    close(
        run(
            "scatterND",
            [container, indices, updates],
            lambda p: setattr(p, "mode", Mode.SCATTER_ADD),
        ),
        want,
    )


def test_slices_by_size_and_dynamic():
    x = RNG.normal(size=(2, 2, 3, 4))

    def by_size(p):
        p.size, p.axis = 2, 1

    close(run("sliceBySize", [x, np.array([[1.0], [1.0]])], by_size), x[:, :, 1:3])

    def dynamic(p):
        p.endIds.extend([2, 3, 4])
        p.strides.extend([1, 2, -1])
        p.beginMasks.extend([False, False, False])
        p.endMasks.extend([False, False, True])

    begin = np.array([[0, 0, 3]] * 2, dtype=float)
    close(run("sliceDynamic", [x, begin], dynamic), x[:, 0:2, 0:3:2, 3::-1])


def test_one_hot_matches_the_proto_example():
    def setup(p):
        p.oneHotVectorSize, p.axis, p.onValue, p.offValue = 4, -1, 5.0, -1.0

    close(
        run("oneHot", [np.array([[2.0, 0.0]])], setup),
        np.array([[[-1, -1, 5, -1], [5, -1, -1, -1]]], dtype=float),
    )
    close(
        run("oneHot", [np.array([[2.0, -1.0]])], setup),
        np.array([[[-1, -1, 5, -1], [-1, -1, -1, -1]]], dtype=float),
    )


def test_where_non_zero_matches_the_proto_example():
    x = np.array([[[1, 2, 1], [0, 2, 2], [2, 1, 0]]], dtype=float)
    close(run("whereNonZero", [x]), np.argwhere(x[0])[None].astype(float))


def test_triangular_and_band_masks():
    x = RNG.normal(size=(2, 3, 4, 5))
    close(run("lowerTriangular", [x], lambda p: setattr(p, "k", 1)), np.tril(x, 1))
    close(run("upperTriangular", [x], lambda p: setattr(p, "k", -1)), np.triu(x, -1))

    def band(p):
        p.numLower, p.numUpper = 1, -1

    close(run("matrixBandPart", [x], band), np.triu(x, -1))


# -- every layer type ---------------------------------------------------------------------------

#: Layer types of NeuralNetwork.proto the runtime does not run yet: a new forward op must
#: leave this list, and a layer type missing from the runtime must be on it. Empty since issue
#: 14: every layer type of the proto runs (a layer type a later proto adds starts here).
NOT_YET: set[str] = set()


def proto_layer_types() -> list[str]:
    return [
        field.name for field in nn_pb.NeuralNetworkLayer.DESCRIPTOR.oneofs_by_name["layer"].fields
    ]


@pytest.mark.parametrize("kind", proto_layer_types())
def test_every_proto_layer_type_has_a_forward(kind):
    if kind in NOT_YET:
        assert kind not in FORWARD and kind not in CONTROL_FLOW, (
            f"{kind} has a forward now: remove it from NOT_YET"
        )
        pytest.xfail(f"the runtime has no forward for {kind} yet")
    assert kind in FORWARD or kind in CONTROL_FLOW, (
        f"NeuralNetwork.proto layer type {kind} has no runtime forward"
    )


def test_no_stale_names():
    assert NOT_YET <= set(proto_layer_types())
    assert set(FORWARD) <= set(proto_layer_types())


def test_reverse_seq_matches_the_proto_examples():
    data = np.arange(8, dtype=float).reshape(1, 2, 4)

    def setup(p):
        p.batchAxis, p.sequenceAxis = 0, 1

    close(
        run("reverseSeq", [data, np.array([[3.0, 0.0]])], setup),
        np.array([[[2, 1, 0, 3], [4, 5, 6, 7]]], dtype=float),
    )
    data = np.arange(12, dtype=float).reshape(1, 2, 3, 2)
    close(
        run("reverseSeq", [data, np.array([[2.0, 3.0]])], setup),
        np.array([[[[2, 3], [0, 1], [4, 5]], [[10, 11], [8, 9], [6, 7]]]], dtype=float),
    )


def test_global_pooling_3d_matches_the_proto_example():
    x = np.arange(1, 19, dtype=float).reshape(1, 1, 1, 2, 3, 3)
    close(run("globalPooling3d", [x]), np.full((1, 1, 1, 1, 1, 1), 18.0))
    y = run("globalPooling3d", [x], lambda p: setattr(p, "type", 1))
    close(y, np.full((1, 1, 1, 1, 1, 1), 9.5))


# -- volumes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding,groups", [(1, 1), (2, 2), (0, 1)])
def test_convolution_3d_matches_torch(padding, groups):
    torch = pytest.importorskip("torch")
    x = RNG.normal(size=(2, 1, 4, 5, 6, 7))
    w, b = RNG.normal(size=(6, 4 // groups, 2, 3, 2)), RNG.normal(size=6)

    def setup(p):
        p.inputChannels, p.outputChannels, p.nGroups, p.hasBias = 4, 6, groups, True
        p.kernelDepth, p.kernelHeight, p.kernelWidth = 2, 3, 2
        p.strideDepth, p.strideHeight, p.strideWidth = 1, 2, 1
        p.dilationDepth, p.dilationHeight, p.dilationWidth = 2, 1, 1
        p.paddingType = padding
        p.customPaddingTop, p.customPaddingBack = 1, 2

    got = run("convolution3d", [x], setup, {"weights": w, "bias": b})
    t = torch.tensor(x[:, 0])
    if padding == 0:
        t = torch.nn.functional.pad(t, (0, 0, 1, 0, 0, 2))  # W, H (top 1), D (back 2)
    elif padding == 2:  # SAME on D, H, W = 5, 6, 7: totals 2 (1, 1), 1 (0, 1), 1 (0, 1)
        t = torch.nn.functional.pad(t, (0, 1, 0, 1, 1, 1))
    want = torch.nn.functional.conv3d(
        t, torch.tensor(w), torch.tensor(b), stride=(1, 2, 1), dilation=(2, 1, 1), groups=groups
    ).numpy()
    close(got, want[:, None])


@pytest.mark.parametrize("kind,exclude", [(0, False), (1, False), (1, True)])
def test_pooling_3d_matches_torch(kind, exclude):
    torch = pytest.importorskip("torch")
    x = RNG.normal(size=(2, 3, 5, 6, 7))

    def setup(p):
        p.type, p.countExcludePadding = kind, exclude
        p.kernelDepth, p.kernelHeight, p.kernelWidth = 2, 3, 3
        p.strideDepth, p.strideHeight, p.strideWidth = 1, 2, 2
        p.paddingType = 0
        p.customPaddingFront = p.customPaddingBack = 1
        p.customPaddingTop = p.customPaddingBottom = 1
        p.customPaddingLeft = p.customPaddingRight = 1

    got = run("pooling3d", [x], setup)
    t = torch.tensor(x)
    if kind == 0:
        want = torch.nn.functional.max_pool3d(t, (2, 3, 3), (1, 2, 2), padding=1)
    else:
        want = torch.nn.functional.avg_pool3d(
            t, (2, 3, 3), (1, 2, 2), padding=1, count_include_pad=not exclude
        )
    close(got, want.numpy())
