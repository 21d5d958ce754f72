"""Forward ops of the runtime's layer families (``runtime/layers/``) against torch or
independently written NumPy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder

from updatable_coreml._proto import NeuralNetwork_pb2
from updatable_coreml.errors import RuntimeLayerError
from updatable_coreml.runtime import layers, registry  # noqa: F401  (registers the ops)
from updatable_coreml.runtime.model import load

RNG = np.random.default_rng(0)


def rand(*shape: int, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def builder() -> NeuralNetworkBuilder:
    return NeuralNetworkBuilder(
        [("x", datatypes.Array(1))], [("y", None)], disable_rank5_shape_mapping=True
    )


def getter(layer):
    """Weight getter as the runtime provides one: a (dotted) WeightParams field of the params."""

    def weight(field: str) -> np.ndarray:
        message = getattr(layer, layer.WhichOneof("layer"))
        for part in field.split("."):
            message = getattr(message, part)
        return registry.decode_weights(message)

    return weight


def run(layer, *inputs: np.ndarray) -> list[np.ndarray]:
    return registry.forward_op(layer)(layer, [np.asarray(x) for x in inputs], getter(layer))


def run1(layer, *inputs: np.ndarray) -> np.ndarray:
    (out,) = run(layer, *inputs)
    return out


def close(got: np.ndarray, want) -> None:
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def each(fn, *blobs: np.ndarray) -> np.ndarray:
    """A per-example reference over batched blobs (ND layers see ``(B, *tensor)``)."""
    batch = max(len(b) for b in blobs)
    results = [fn(*(b[i % len(b)] for b in blobs)) for i in range(batch)]
    return np.stack([r.numpy() if isinstance(r, torch.Tensor) else np.asarray(r) for r in results])


def layer_of(kind: str, inputs=("x",), outputs=("y",)) -> NeuralNetwork_pb2.NeuralNetworkLayer:
    layer = NeuralNetwork_pb2.NeuralNetworkLayer(name=f"my_{kind}", input=inputs, output=outputs)
    getattr(layer, kind).SetInParent()
    return layer


# ----------------------------------------------------------------------------- elementwise


CLASSIC_SHAPES = [
    [(2, 3, 4, 5), (2, 3, 4, 5)],
    [(2, 3, 4, 5), (2, 3, 1, 1)],
    [(2, 1, 4, 5), (2, 3, 4, 5), (2, 3, 4, 5)],
    [(3, 6), (3, 6)],
    [(3, 6), (3, 6, 2, 2)],
]
TORCH_ELEMENTWISE = {
    "ADD": lambda xs: sum(xs[1:], xs[0]),
    "MULTIPLY": lambda xs: torch.stack(torch.broadcast_tensors(*xs)).prod(0),
    "AVE": lambda xs: torch.stack(torch.broadcast_tensors(*xs)).mean(0),
    "MAX": lambda xs: torch.stack(torch.broadcast_tensors(*xs)).amax(0),
    "MIN": lambda xs: torch.stack(torch.broadcast_tensors(*xs)).amin(0),
}


@pytest.mark.parametrize("mode, shapes", itertools.product(TORCH_ELEMENTWISE, CLASSIC_SHAPES))
def test_classic_elementwise(mode, shapes):
    b = builder()
    names = [f"x{i}" for i in range(len(shapes))]
    b.add_elementwise("e", names, "y", mode)
    xs = [rand(*s) for s in shapes]
    # vectors (B, C) are (B, C, 1, 1) to a classic layer
    views = [t(x.reshape(x.shape + (1, 1)) if x.ndim == 2 else x) for x in xs]
    want = TORCH_ELEMENTWISE[mode](views)
    if max(x.ndim for x in xs) == 2:
        want = want[:, :, 0, 0]
    close(run1(b.spec.neuralNetwork.layers[0], *xs), want)


@pytest.mark.parametrize("mode, alpha", [("ADD", 1.5), ("MULTIPLY", -0.25)])
def test_classic_elementwise_single_input_uses_alpha(mode, alpha):
    b = builder()
    b.add_elementwise("e", ["x"], "y", mode, alpha=alpha)
    x = rand(2, 3, 4)
    close(run1(b.spec.neuralNetwork.layers[0], x), x + alpha if mode == "ADD" else x * alpha)


def test_classic_elementwise_refuses_unbroadcastable_shapes():
    b = builder()
    b.add_elementwise("e", ["a", "b"], "y", "ADD")
    with pytest.raises(RuntimeLayerError, match="'e'.*broadcast"):
        run(b.spec.neuralNetwork.layers[0], rand(2, 3, 4, 5), rand(2, 2, 4, 5))


BROADCASTABLE = {
    "add": torch.add,
    "subtract": torch.sub,
    "multiply": torch.mul,
    "divide": torch.div,
    "max": torch.maximum,
    "min": torch.minimum,
    "pow": torch.pow,
}


@pytest.mark.parametrize(
    "name, shapes",
    itertools.product(
        BROADCASTABLE,
        [
            [(3, 2, 3, 4), (3, 3, 1)],
            [(3, 5), (3, 2, 1, 5)],
            [(3, 2, 3), (1, 2, 3)],
            [(2, 4), (2, 1)],
        ],
    ),
)
def test_broadcastable(name, shapes):
    """Core ML tensors broadcast aligned at their last axis, behind the batch axis."""
    b = builder()
    getattr(b, f"add_{name}_broadcastable")("e", ["a", "b"], "y")
    low = 0.5 if name in ("pow", "divide") else -2.0
    a, c = rand(*shapes[0], low=low), rand(*shapes[1], low=low)
    want = each(lambda u, v: BROADCASTABLE[name](t(u), t(v)), a, c)
    close(run1(b.spec.neuralNetwork.layers[0], a, c), want)


@pytest.mark.parametrize(
    "shape_scale, shape_bias, has_bias",
    [
        ([1], [1], True),
        ([3], [3], True),
        ([1, 4, 5], [3, 4, 5], True),
        ([3, 4, 5], [1], False),
    ],
)
def test_scale(shape_scale, shape_bias, has_bias):
    b = builder()
    w, c = rand(*shape_scale), rand(*shape_bias)
    b.add_scale(
        "s",
        w,
        c if has_bias else None,
        has_bias,
        "x",
        "y",
        shape_scale=shape_scale,
        shape_bias=shape_bias,
    )
    x = rand(2, 3, 4, 5)
    as3 = lambda v: v.reshape(-1, 1, 1) if v.ndim == 1 else v  # noqa: E731
    want = x * as3(w) + (as3(c) if has_bias else 0)
    close(run1(b.spec.neuralNetwork.layers[0], x), want)


def test_scale_and_bias_on_a_vector_blob_keep_its_rank():
    b = builder()
    w, c = rand(6), rand(6)
    b.add_scale("s", w, c, True, "x", "y", shape_scale=[6], shape_bias=[6])
    b.add_bias("b", c, "x", "z", shape_bias=[6])
    x = rand(3, 6)
    close(run1(b.spec.neuralNetwork.layers[0], x), x * w + c)
    close(run1(b.spec.neuralNetwork.layers[1], x), x + c)


@pytest.mark.parametrize("shape", [[1], [3], [1, 4, 5], [3, 4, 5]])
def test_bias(shape):
    b = builder()
    c = rand(*shape)
    b.add_bias("b", c, "x", "y", shape_bias=shape)
    x = rand(2, 3, 4, 5)
    want = x + (c.reshape(-1, 1, 1) if len(shape) == 1 else c)
    close(run1(b.spec.neuralNetwork.layers[0], x), want)


def test_scale_refuses_wrong_parameter_size():
    layer = layer_of("scale")
    layer.scale.shapeScale.extend([4])
    layer.scale.scale.floatValue.extend([1.0, 2.0])
    with pytest.raises(RuntimeLayerError, match="'my_scale'.*does not fit"):
        run(layer, rand(2, 4, 1, 1))


def test_clip():
    b = builder()
    b.add_clip("c", "x", "y", min_value=-0.5, max_value=1.25)
    x = rand(2, 3, 7)
    close(run1(b.spec.neuralNetwork.layers[0], x), torch.clamp(t(x), -0.5, 1.25))


UNARY = {
    "sqrt": (lambda v, a, e: torch.sqrt(v), 0.1),
    "rsqrt": (lambda v, a, e: torch.rsqrt(v + e), 0.1),
    "inverse": (lambda v, a, e: torch.reciprocal(v + e), 0.1),
    "power": (lambda v, a, e: torch.pow(v, a), 0.1),
    "exp": (lambda v, a, e: torch.exp(v), -2.0),
    "log": (lambda v, a, e: torch.log(v + e), 0.1),
    "abs": (lambda v, a, e: torch.abs(v), -2.0),
    "threshold": (lambda v, a, e: torch.clamp(v, min=a), -2.0),
}


@pytest.mark.parametrize("mode, shift, scale", itertools.product(UNARY, [0.0, 0.5], [1.0, 2.0]))
def test_unary(mode, shift, scale):
    b = builder()
    b.add_unary("u", "x", "y", mode, alpha=1.7, shift=shift, scale=scale, epsilon=1e-3)
    reference, low = UNARY[mode]
    x = rand(2, 3, 4, low=low)
    close(run1(b.spec.neuralNetwork.layers[0], x), reference(t(x) * scale + shift, 1.7, 1e-3))


def test_unary_defaults_follow_the_spec():
    layer = layer_of("unary")  # scale 0 -> 1, epsilon 0 -> 1e-6
    layer.unary.type = NeuralNetwork_pb2.UnaryFunctionLayerParams.INVERSE
    x = rand(4, 5, low=0.5)
    close(run1(layer, x), 1 / (x + 1e-6))


@pytest.mark.parametrize("mode, approximate", [("EXACT", "none"), ("TANH_APPROXIMATION", "tanh")])
def test_gelu(mode, approximate):
    b = builder()
    b.add_gelu("g", "x", "y", mode=mode)
    x = rand(2, 3, 50, low=-5, high=5)
    close(run1(b.spec.neuralNetwork.layers[0], x), F.gelu(t(x), approximate=approximate))


def test_gelu_sigmoid_approximation_and_erf():
    b = builder()
    b.add_gelu("g", "x", "y", mode="SIGMOID_APPROXIMATION")
    b.add_erf("e", "x", "z")
    x = rand(2, 3, 50, low=-5, high=5)
    close(run1(b.spec.neuralNetwork.layers[0], x), t(x) * torch.sigmoid(1.702 * t(x)))
    close(run1(b.spec.neuralNetwork.layers[1], x), torch.erf(t(x)))


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "shape, axis", [((2, 3, 4), -1), ((2, 3, 4), 0), ((5, 7), 0), ((2, 3, 4, 5), -3)]
)
def test_softmax_nd(shape, axis):
    b = builder()
    b.add_softmax_nd("s", "x", "y", axis)
    x = rand(*shape, low=-10, high=10)
    want = each(lambda e: torch.softmax(t(e), dim=axis), x)
    close(run1(b.spec.neuralNetwork.layers[0], x), want)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 6)])
def test_l2normalize(shape):
    b = builder()
    b.add_l2_normalize("n", "x", "y", epsilon=1e-3)
    x = rand(*shape)
    flat = x.reshape(shape[0], -1)
    norms = np.sqrt(np.linalg.norm(flat, axis=1) ** 2 + 1e-3)
    close(run1(b.spec.neuralNetwork.layers[0], x), (flat / norms[:, None]).reshape(shape))


@pytest.mark.parametrize("across, normalize", itertools.product([True, False], [True, False]))
def test_mvn(across, normalize):
    b = builder()
    b.add_mvn("m", "x", "y", across_channels=across, normalize_variance=normalize, epsilon=1e-4)
    x = rand(2, 3, 4, 5)
    tx = t(x)
    if normalize:
        want = F.layer_norm(tx, tx.shape[1:], eps=1e-4) if across else F.instance_norm(tx, eps=1e-4)
    else:
        dims = (1, 2, 3) if across else (2, 3)
        want = tx - tx.mean(dim=dims, keepdim=True)
    close(run1(b.spec.neuralNetwork.layers[0], x), want)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_odd_sizes_match_torch(size):
    b = builder()
    b.add_lrn("l", "x", "y", alpha=0.3, beta=0.75, local_size=size, k=2.0)
    x = rand(2, 7, 3, 4)
    want = F.local_response_norm(t(x), size, alpha=0.3, beta=0.75, k=2.0)
    close(run1(b.spec.neuralNetwork.layers[0], x), want)


def test_lrn_even_size_uses_the_caffe_window():
    b = builder()
    b.add_lrn("l", "x", "y", alpha=0.5, beta=0.6, local_size=4, k=1.0)
    x = rand(2, 6, 3, 3)
    want = np.empty_like(x)
    for c in range(6):
        lo, hi = max(0, c - 1), min(6, c + 3)  # floor((4-1)/2) before, ceil((4-1)/2) after
        want[:, c] = x[:, c] / (1.0 + 0.5 / 4 * (x[:, lo:hi] ** 2).sum(axis=1)) ** 0.6
    close(run1(b.spec.neuralNetwork.layers[0], x), want)


REDUCE_TORCH = {
    "sum": lambda v, d: v.sum(dim=d, keepdim=True),
    "avg": lambda v, d: v.mean(dim=d, keepdim=True),
    "prod": lambda v, d: torch.exp(torch.log(v).sum(dim=d, keepdim=True)),
    "logsum": lambda v, d: torch.log(v + 1e-6).sum(dim=d, keepdim=True),
    "sumsquare": lambda v, d: (v**2).sum(dim=d, keepdim=True),
    "L1": lambda v, d: v.abs().sum(dim=d, keepdim=True),
    "L2": lambda v, d: v.pow(2).sum(dim=d, keepdim=True).sqrt(),
    "max": lambda v, d: v.amax(dim=d, keepdim=True),
    "min": lambda v, d: v.amin(dim=d, keepdim=True),
}
REDUCE_AXES = {"CHW": (1, 2, 3), "HW": (2, 3), "C": (1,), "H": (2,), "W": (3,)}


@pytest.mark.parametrize("mode, axis", itertools.product(REDUCE_TORCH, REDUCE_AXES))
def test_reduce(mode, axis):
    b = builder()
    b.add_reduce("r", "x", "y", axis, mode)
    x = rand(2, 3, 2, 3, low=0.5, high=1.5)
    close(run1(b.spec.neuralNetwork.layers[0], x), REDUCE_TORCH[mode](t(x), REDUCE_AXES[axis]))


@pytest.mark.parametrize("axis", ["C", "H", "W"])
def test_reduce_argmax(axis):
    b = builder()
    b.add_reduce("r", "x", "y", axis, "argmax")
    x = rand(2, 3, 4, 5)
    dim = REDUCE_AXES[axis][0]
    close(run1(b.spec.neuralNetwork.layers[0], x), t(x).argmax(dim=dim, keepdim=True).float())


def test_reduce_on_a_vector_blob_keeps_its_rank():
    b = builder()
    b.add_reduce("r", "x", "y", "C", "sum")
    x = rand(4, 6)
    close(run1(b.spec.neuralNetwork.layers[0], x), x.sum(axis=1, keepdims=True))


def test_classic_layers_read_a_rank_2_tensor_as_one_channel():
    b = builder()
    b.add_reduce("r", "x", "y", "CHW", "sum")
    b.add_padding("p", 1, 0, 2, 0, input_name="x", output_name="z", padding_type="replication")
    x = rand(3, 4, 5)  # (B, H, W): Core ML tensor [H, W]
    close(run1(b.spec.neuralNetwork.layers[0], x), x.sum(axis=(1, 2), keepdims=True))
    close(run1(b.spec.neuralNetwork.layers[1], x), np.pad(x, [(0, 0), (2, 0), (1, 0)], "edge"))


@pytest.mark.parametrize("cosine", [False, True])
def test_dot(cosine):
    layer = layer_of("dot", inputs=("a", "b"))
    layer.dot.cosineSimilarity = cosine
    a, c = rand(4, 6), rand(4, 6)
    want = F.cosine_similarity(t(a), t(c), dim=1) if cosine else (t(a) * t(c)).sum(1)
    close(run1(layer, a, c), want[:, None])
    close(run1(layer, a[..., None, None], c[..., None, None]), want[:, None, None, None])


# ----------------------------------------------------------------------------- joining, splitting


def test_concat_channels_and_vectors():
    b = builder()
    b.add_elementwise("c", ["a", "b"], "y", "CONCAT")
    a, c = rand(2, 3, 4, 5), rand(2, 2, 4, 5)
    close(run1(b.spec.neuralNetwork.layers[0], a, c), torch.cat([t(a), t(c)], dim=1))
    close(
        run1(b.spec.neuralNetwork.layers[0], a[:, :, 0, 0], c[:, :, 0, 0]),
        np.concatenate([a[:, :, 0, 0], c[:, :, 0, 0]], axis=1),
    )


def test_sequence_concat_adds_the_sequence_axis_after_the_batch():
    b = builder()
    b.add_elementwise("c", ["a", "b"], "y", "SEQUENCE_CONCAT")
    a, c = rand(2, 3, 1, 1), rand(2, 3, 1, 1)
    close(run1(b.spec.neuralNetwork.layers[0], a, c), np.stack([a, c], axis=1))
    s1, s2 = rand(4, 2, 3, 1, 1), rand(4, 1, 3, 1, 1)  # (B, Seq, C, H, W)
    close(run1(b.spec.neuralNetwork.layers[0], s1, s2), torch.cat([t(s1), t(s2)], dim=1))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat_nd(axis):
    b = builder()
    b.add_concat_nd("c", ["a", "b", "c"], "y", axis)
    xs = [rand(2, 3, 4) for _ in range(3)]
    want = each(lambda *es: torch.cat([t(e) for e in es], dim=axis), *xs)
    close(run1(b.spec.neuralNetwork.layers[0], *xs), want)


def test_concat_nd_repeats_a_constant_over_the_batch():
    b = builder()
    b.add_concat_nd("c", ["a", "const"], "y", -1)
    a, const = rand(3, 2, 4), rand(1, 2, 5)
    close(
        run1(b.spec.neuralNetwork.layers[0], a, const),
        np.concatenate([a, np.repeat(const, 3, axis=0)], axis=-1),
    )
    with pytest.raises(RuntimeLayerError, match="'c'.*batch sizes"):
        run(b.spec.neuralNetwork.layers[0], a, rand(2, 2, 5))


def test_concat_nd_interleave():
    b = builder()
    b.add_concat_nd("c", ["a", "b"], "y", 0, interleave=True)
    a, c = rand(2, 3, 4), rand(2, 3, 4)
    want = np.empty((2, 6, 4), np.float32)
    want[:, 0::2], want[:, 1::2] = a, c
    close(run1(b.spec.neuralNetwork.layers[0], a, c), want)


def test_split_channels():
    b = builder()
    b.add_split("s", "x", ["y0", "y1", "y2"])
    x = rand(2, 6, 3, 3)
    outs = run(b.spec.neuralNetwork.layers[0], x)
    for got, want in zip(outs, torch.chunk(t(x), 3, dim=1)):
        close(got, want)
    vector_outs = run(b.spec.neuralNetwork.layers[0], x[:, :, 0, 0])
    close(vector_outs[2], x[:, 4:, 0, 0])


@pytest.mark.parametrize("axis, num, sizes", [(1, 3, None), (-1, 0, [1, 3, 2]), (0, 2, None)])
def test_split_nd(axis, num, sizes):
    b = builder()
    names = ["y0", "y1", "y2"] if num != 2 else ["y0", "y1"]
    b.add_split_nd("s", "x", names, axis, num_splits=num, split_sizes=sizes)
    x = rand(3, 4, 6, 6)
    outs = run(b.spec.neuralNetwork.layers[0], x)
    assert len(outs) == len(names)
    for k, got in enumerate(outs):
        piece = lambda e, k=k: torch.split(  # noqa: E731
            t(e), sizes if sizes else e.shape[axis] // len(names), dim=axis
        )[k]
        close(got, each(piece, x))


def test_split_refuses_uneven_parts():
    b = builder()
    b.add_split("s", "x", ["y0", "y1"])
    with pytest.raises(RuntimeLayerError, match="'s'.*equal parts"):
        run(b.spec.neuralNetwork.layers[0], rand(2, 5, 1, 1))


@pytest.mark.parametrize(
    "axis, start, end, stride",
    [
        ("channel", 1, -1, 1),
        ("height", 0, 4, 2),
        ("width", 2, 5, 1),
        ("width", 1, -1, 3),
    ],
)
def test_slice(axis, start, end, stride):
    b = builder()
    b.add_slice("s", "x", "y", axis, start, end, stride)
    x = rand(2, 5, 6, 7)
    dim = {"channel": 1, "height": 2, "width": 3}[axis]
    length = x.shape[dim]
    idx = np.arange(length)[start : end % length if end < 0 else end : stride]
    close(run1(b.spec.neuralNetwork.layers[0], x), np.take(x, idx, axis=dim))


def test_slice_static_masks_negative_strides_and_squeeze():
    b = builder()
    b.add_slice_static(
        "s",
        "x",
        "y",
        begin_ids=[0, 1, 5, 0],
        end_ids=[0, -1, 0, 1],
        strides=[1, 2, -2, 1],
        begin_masks=[True, False, False, False],
        end_masks=[True, False, True, False],
        squeeze_masks=[False, False, False, True],
    )
    x = rand(3, 2, 6, 7, 3)
    close(run1(b.spec.neuralNetwork.layers[0], x), each(lambda e: e[:, 1:-1:2, 5::-2, 0], x))


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("index_batch", [1, 3])
def test_gather(axis, index_batch):
    b = builder()
    b.add_gather("g", ["data", "idx"], "y", axis=axis)
    data = rand(3, 4, 5, 6)
    idx = RNG.integers(-4, 4, size=(index_batch, 2, 2)).astype(np.float32)
    want = each(lambda d, i: np.take(d, i.astype(int), axis=axis), data, idx)
    close(run1(b.spec.neuralNetwork.layers[0], data, idx), want)


# ----------------------------------------------------------------------------- reshaping


@pytest.mark.parametrize("target", [[1, 4, 6], [6, 4], [24], [2, -1, 3]])
def test_reshape_static_reshapes_each_example(target):
    b = builder()
    b.add_reshape_static("r", "x", "y", target)
    x = rand(3, 2, 4, 3)
    close(run1(b.spec.neuralNetwork.layers[0], x), each(lambda e: e.reshape(target), x))


def test_reshape_static_refuses_a_wrong_size():
    b = builder()
    b.add_reshape_static("r", "x", "y", [5, 5])
    with pytest.raises(RuntimeLayerError, match="'r'.*cannot reshape"):
        run(b.spec.neuralNetwork.layers[0], rand(3, 2, 4, 3))


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_flatten_to_2d(axis):
    b = builder()
    b.add_flatten_to_2d("f", "x", "y", axis=axis)
    x = rand(2, 2, 3, 4)
    split = axis + 3 if axis < 0 else axis
    rows = int(np.prod(x.shape[1:][:split]))
    close(run1(b.spec.neuralNetwork.layers[0], x), each(lambda e: e.reshape(rows, -1), x))


@pytest.mark.parametrize("axes", [[0, 2, 1], [2, 0, 1], [1, 0, 2]])
def test_transpose(axes):
    b = builder()
    b.add_transpose("t", axes, "x", "y")
    x = rand(2, 2, 3, 4)
    close(run1(b.spec.neuralNetwork.layers[0], x), each(lambda e: t(e).permute(*axes), x))


@pytest.mark.parametrize(
    "dim, shape",
    [  # the spec's examples, batch moved first
        ((0, 3, 1, 2), (2, 5, 7, 3, 4)),
        ((3, 1, 2, 0), (2, 7, 3, 4, 5)),
        ((0, 3, 2, 1), (2, 5, 7, 4, 3)),
        ((0, 1, 2, 3), (2, 5, 3, 4, 7)),
    ],
)
def test_permute_matches_spec_examples(dim, shape):
    b = builder()
    b.add_permute("p", dim, "x", "y")
    x = rand(2, 5, 3, 4, 7)  # (B, Seq, C, H, W)
    got = run1(b.spec.neuralNetwork.layers[0], x)
    assert got.shape == shape
    close(got, np.einsum("BSCHW->B" + "".join("SCHW"[d] for d in dim), x))


def test_permute_without_sequence_axis_keeps_rank():
    b = builder()
    b.add_permute("p", (0, 2, 3, 1), "x", "y")
    x = rand(2, 3, 4, 5)
    close(run1(b.spec.neuralNetwork.layers[0], x), t(x).permute(0, 2, 3, 1))


@pytest.mark.parametrize(
    "axes, squeeze_all, shape, squeezed",
    [  # the spec's examples
        ([0, 1], False, (1, 1, 10, 5), (10, 5)),
        ([0, 3], False, (1, 10, 5, 1), (10, 5)),
        ([-2, -1], False, (10, 5, 1, 1), (10, 5)),
        ([0], False, (1,), (1,)),
        (None, True, (1, 4, 1, 3), (4, 3)),
    ],
)
def test_squeeze(axes, squeeze_all, shape, squeezed):
    b = builder()
    b.add_squeeze("s", "x", "y", axes=axes, squeeze_all=squeeze_all)
    x = rand(1, *shape)  # a batch of one: squeezeAll must keep the batch axis
    close(run1(b.spec.neuralNetwork.layers[0], x), x.reshape((1,) + squeezed))


@pytest.mark.parametrize(
    "axes, shape",
    [
        ([0, 1], (1, 1, 10, 5)),
        ([0, 2], (1, 10, 1, 5)),
        ([-2, -1], (10, 5, 1, 1)),
        ([-1], (10, 5, 1)),
    ],
)
def test_expand_dims(axes, shape):
    b = builder()
    b.add_expand_dims("e", "x", "y", axes)
    x = rand(3, 10, 5)
    close(run1(b.spec.neuralNetwork.layers[0], x), x.reshape((3,) + shape))


def depth_to_space_tf(x: np.ndarray, block: int) -> np.ndarray:
    """TensorFlow's DepthToSpace written out on NHWC data, then back to NCHW."""
    nhwc = x.transpose(0, 2, 3, 1)
    n, h, w, c = nhwc.shape
    out = np.empty((n, h * block, w * block, c // block**2), np.float32)
    for i, j in itertools.product(range(h * block), range(w * block)):
        offset = ((i % block) * block + (j % block)) * (c // block**2)
        out[:, i, j, :] = nhwc[:, i // block, j // block, offset : offset + c // block**2]
    return out.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("block", [2, 3])
def test_reorganize_data(block):
    layer_s2d, layer_d2s, layer_ps = (builder() for _ in range(3))
    layer_s2d.add_reorganize_data("r", "x", "y", "SPACE_TO_DEPTH", block)
    layer_d2s.add_reorganize_data("r", "x", "y", "DEPTH_TO_SPACE", block)
    layer_ps.add_reorganize_data("r", "x", "y", "PIXEL_SHUFFLE", block)
    deep = rand(2, 2 * block * block, 3, 4)
    spatial = depth_to_space_tf(deep, block)
    close(run1(layer_d2s.spec.neuralNetwork.layers[0], deep), spatial)
    close(run1(layer_s2d.spec.neuralNetwork.layers[0], spatial), deep)
    close(run1(layer_ps.spec.neuralNetwork.layers[0], deep), F.pixel_shuffle(t(deep), block))


def test_sequence_repeat():
    b = builder()
    b.add_sequence_repeat("s", 3, "x", "y")
    x = rand(2, 4, 1, 1)
    close(run1(b.spec.neuralNetwork.layers[0], x), np.stack([x, x, x], axis=1))
    seq = rand(2, 3, 4, 1, 1)
    close(run1(b.spec.neuralNetwork.layers[0], seq), torch.cat([t(seq)] * 3, dim=1))


# ----------------------------------------------------------------------------- constants, lookups


def test_load_constants():
    b = builder()
    value = rand(2, 3, 4)
    b.add_load_constant("c", "y", value, [2, 3, 4])
    b.add_load_constant_nd("d", "z", value, [4, 6])
    close(run1(b.spec.neuralNetwork.layers[0]), value[None])
    close(run1(b.spec.neuralNetwork.layers[1]), value.reshape(1, 4, 6))


@pytest.mark.parametrize("has_bias, rank", [(True, 2), (False, 4)])
def test_embedding(has_bias, rank):
    b = builder()
    table, bias_value = rand(6, 10), rand(6)
    b.add_embedding("e", table, bias_value if has_bias else None, 10, 6, has_bias, "x", "y")
    idx = np.array([3, 0, 9, 3], dtype=np.float32).reshape((4,) + (1,) * (rank - 1))
    want = F.embedding(torch.tensor([3, 0, 9, 3]), t(table.T.copy()))
    want = want + t(bias_value) if has_bias else want
    close(run1(b.spec.neuralNetwork.layers[0], idx), want.reshape((4, 6) + (1,) * (rank - 2)))
    with pytest.raises(RuntimeLayerError, match="'e'.*class indices"):
        run(b.spec.neuralNetwork.layers[0], np.array([[10.0]] if rank == 2 else [[[[10.0]]]]))


def test_embedding_nd():
    b = builder()
    table, bias_value = rand(5, 8), rand(5)
    b.add_embedding_nd("e", "x", "y", vocab_size=8, embedding_size=5, W=table, b=bias_value)
    idx = np.array([[[1], [7]], [[0], [2]]], dtype=np.float32)
    want = F.embedding(t(idx[..., 0].astype(np.int64)), t(table.T.copy())) + t(bias_value)
    close(run1(b.spec.neuralNetwork.layers[0], idx), want)


# ----------------------------------------------------------------------------- spatial


def test_padding_spec_example():
    x = np.arange(1, 13, dtype=np.float32).reshape(1, 1, 3, 4)
    results = {}
    for kind in ("constant", "reflection", "replication"):
        b = builder()
        b.add_padding("p", left=2, top=2, input_name="x", output_name="y", padding_type=kind)
        results[kind] = run1(b.spec.neuralNetwork.layers[0], x)[0, 0]
    assert results["reflection"][0].tolist() == [11, 10, 9, 10, 11, 12]
    assert results["replication"][:, 0].tolist() == [1, 1, 1, 5, 9]
    assert results["constant"][2].tolist() == [0, 0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "kind, torch_mode",
    [
        ("constant", "constant"),
        ("reflection", "reflect"),
        ("replication", "replicate"),
    ],
)
@pytest.mark.parametrize("pads", [(1, 2, 0, 3), (0, 0, 2, 1)])
def test_padding(kind, torch_mode, pads):
    left, right, top, bottom = pads
    b = builder()
    b.add_padding(
        "p", left, right, top, bottom, value=0.5, input_name="x", output_name="y", padding_type=kind
    )
    x = rand(2, 3, 5, 6)
    extra = {"value": 0.5} if kind == "constant" else {}
    want = F.pad(t(x), (left, right, top, bottom), mode=torch_mode, **extra)
    close(run1(b.spec.neuralNetwork.layers[0], x), want)


def test_crop_one_and_two_inputs():
    b = builder()
    b.add_crop(
        "c", left=1, right=2, top=0, bottom=3, offset=None, input_names=["x"], output_name="y"
    )
    b.add_crop("d", 0, 0, 0, 0, offset=[2, 1], input_names=["x", "ref"], output_name="z")
    x = rand(2, 3, 8, 9)
    close(run1(b.spec.neuralNetwork.layers[0], x), x[:, :, 0:5, 1:7])
    close(run1(b.spec.neuralNetwork.layers[1], x, rand(2, 3, 4, 5)), x[:, :, 2:6, 1:6])
    with pytest.raises(RuntimeLayerError, match="'d'.*does not fit"):
        run(b.spec.neuralNetwork.layers[1], x, rand(2, 3, 7, 5))


@pytest.mark.parametrize("fh, fw", [(2, 3), (1, 2)])
def test_upsample_nearest(fh, fw):
    b = builder()
    b.add_upsample("u", fh, fw, "x", "y", mode="NN")
    x = rand(2, 3, 4, 5)
    close(run1(b.spec.neuralNetwork.layers[0], x), F.interpolate(t(x), scale_factor=(fh, fw)))


@pytest.mark.parametrize("fh, fw", [(2, 3), (1.5, 2.5), (3, 0.75)])
@pytest.mark.parametrize("align", [True, False])
def test_upsample_bilinear_align_corners(fh, fw, align):
    b = builder()
    mode = "ALIGN_CORNERS_TRUE" if align else "ALIGN_CORNERS_FALSE"
    b.add_upsample("u", fh, fw, "x", "y", mode="BILINEAR", linear_upsample_mode=mode)
    x = rand(2, 3, 4, 6)
    size = (int(4 * fh), int(6 * fw))
    want = F.interpolate(t(x), size=size, mode="bilinear", align_corners=align)
    close(run1(b.spec.neuralNetwork.layers[0], x), want)


def interp_axis(x: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation along one axis with np.interp, one line at a time."""
    moved = np.moveaxis(x, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    grid = np.arange(moved.shape[-1])
    out = np.stack([np.interp(positions, grid, line) for line in flat])
    return np.moveaxis(out.reshape(moved.shape[:-1] + (positions.size,)), -1, axis)


def test_upsample_bilinear_default_matches_coremltools_example():
    b = builder()
    b.add_upsample("u", 2, 3, "x", "y", mode="BILINEAR")
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32).reshape(1, 1, 1, 3)
    row = [1, 4 / 3, 5 / 3, 2, 7 / 3, 8 / 3, 3, 3, 3]
    close(run1(b.spec.neuralNetwork.layers[0], x), np.array([[[row, row]]], np.float32))
    y = rand(2, 3, 4, 5)
    want = interp_axis(
        interp_axis(y, np.minimum(np.arange(8) / 2, 3), 2), np.minimum(np.arange(15) / 3, 4), 3
    )
    close(run1(b.spec.neuralNetwork.layers[0], y), want)


@pytest.mark.parametrize(
    "mode",
    ["STRICT_ALIGN_ENDPOINTS_MODE", "ALIGN_ENDPOINTS_MODE", "UPSAMPLE_MODE", "ROI_ALIGN_MODE"],
)
@pytest.mark.parametrize("target", [(7, 3), (1, 9)])
def test_resize_bilinear(mode, target):
    b = builder()
    b.add_resize_bilinear("r", "x", "y", target_height=target[0], target_width=target[1], mode=mode)
    x = rand(2, 3, 4, 5)

    def positions(size_in: int, size_out: int) -> np.ndarray:
        if mode == "STRICT_ALIGN_ENDPOINTS_MODE" or (
            mode == "ALIGN_ENDPOINTS_MODE" and size_out > 1
        ):
            return np.arange(size_out) * ((size_in - 1) / max(size_out - 1, 1))
        if mode == "ALIGN_ENDPOINTS_MODE":
            return np.array([(size_in - 1) / 2])
        if mode == "UPSAMPLE_MODE":
            step = (size_in - size_in / size_out) / max(size_out - 1, 1)
            return np.minimum(np.arange(size_out) * step, size_in - 1)
        spacing = max(1, size_in - 1) / size_out
        return np.minimum(spacing / 2 + np.arange(size_out) * spacing, size_in - 1)

    want = interp_axis(interp_axis(x, positions(4, target[0]), 2), positions(5, target[1]), 3)
    close(run1(b.spec.neuralNetwork.layers[0], x), want)
    if mode == "STRICT_ALIGN_ENDPOINTS_MODE" and target[0] > 1:
        close(
            run1(b.spec.neuralNetwork.layers[0], x),
            F.interpolate(t(x), size=target, mode="bilinear", align_corners=True),
        )


# ----------------------------------------------------------------------------- LSTM


def lstm_layer(
    hidden: int,
    inputs: int,
    *,
    seq_out: bool,
    bias: bool,
    peep: bool = False,
    coupled: bool = False,
    clip: float = 50000.0,
    forget_bias: bool = False,
    states: bool = True,
    torch_lstm: torch.nn.LSTM | None = None,
):
    """A builder-made LSTM; with ``torch_lstm`` its weights are copied over (gate order i,f,g,o)."""
    if torch_lstm is not None:
        w_i, w_f, w_z, w_o = torch_lstm.weight_ih_l0.detach().numpy().reshape(4, hidden, inputs)
        r_i, r_f, r_z, r_o = torch_lstm.weight_hh_l0.detach().numpy().reshape(4, hidden, hidden)
        biases = (
            None
            if not torch_lstm.bias
            else (torch_lstm.bias_ih_l0 + torch_lstm.bias_hh_l0).detach().numpy().reshape(4, -1)
        )
    else:
        w_i, w_f, w_z, w_o = rand(4, hidden, inputs, low=-0.6, high=0.6)
        r_i, r_f, r_z, r_o = rand(4, hidden, hidden, low=-0.6, high=0.6)
        biases = rand(4, hidden, low=-0.5, high=0.5)
    b = builder()
    b.add_unilstm(
        "lstm",
        W_h=[r_i, r_f, r_o, r_z],
        W_x=[w_i, w_f, w_o, w_z],
        b=[biases[0], biases[1], biases[3], biases[2]] if bias else None,
        hidden_size=hidden,
        input_size=inputs,
        input_names=["x", "h0", "c0"] if states else ["x"],
        output_names=["y", "h", "c"],
        peep=list(rand(3, hidden)) if peep else None,
        output_all=seq_out,
        forget_bias=forget_bias,
        coupled_input_forget_gate=coupled,
        cell_clip_threshold=clip,
    )
    return b.spec.neuralNetwork.layers[0]


@pytest.mark.parametrize("seq_out", [True, False])
def test_lstm_matches_torch(seq_out):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 4, batch_first=True)
    layer = lstm_layer(4, 5, seq_out=seq_out, bias=True, torch_lstm=ref)
    x, h0, c0 = rand(3, 6, 5), rand(3, 4), rand(3, 4)  # x is (B, Seq, C)
    want_y, (want_h, want_c) = ref(t(x), (t(h0[None]), t(c0[None])))
    y, h, c = run(layer, x[..., None, None], h0, c0)
    close(y[..., 0, 0], want_y if seq_out else want_y[:, -1:])
    close(h[..., 0, 0], want_h.transpose(0, 1))
    close(c[..., 0, 0], want_c.transpose(0, 1))


def test_lstm_on_a_vector_blob_is_one_step_without_states():
    torch.manual_seed(1)
    ref = torch.nn.LSTM(3, 2, bias=False)
    layer = lstm_layer(2, 3, seq_out=False, bias=False, states=False, torch_lstm=ref)
    x = rand(4, 3)
    want_y, (want_h, want_c) = ref(t(x[None]))
    y, h, c = run(layer, x)
    close(y, want_y[0])
    close(h, want_h[0])
    close(c, want_c[0])


def lstm_reference(layer, x: np.ndarray) -> np.ndarray:
    """Per-step, per-example LSTM straight from the spec's equations; ``x`` is (Seq, B, C)."""
    p = layer.uniDirectionalLSTM.params
    get = getter(layer)
    w = {
        f.name: get("weightParams." + f.name)
        for f, _ in layer.uniDirectionalLSTM.weightParams.ListFields()
    }
    hidden = layer.uniDirectionalLSTM.outputVectorSize
    mat = lambda name, cols: w[name].reshape(hidden, cols)  # noqa: E731
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    outs = np.zeros((x.shape[0], x.shape[1], hidden))
    for n in range(x.shape[1]):
        h = np.zeros(hidden)
        c = np.zeros(hidden)
        for step in range(x.shape[0]):
            xt = x[step, n].astype(np.float64)

            def pre(gate: str, xt=xt, h=h) -> np.ndarray:
                bias = w[gate + "BiasVector"] if p.hasBiasVectors else 0
                return np.clip(
                    mat(gate + "WeightMatrix", x.shape[2]) @ xt
                    + mat(gate + "RecursionMatrix", hidden) @ h
                    + bias,
                    -50,
                    50,
                )

            i = sig(np.clip(pre("inputGate") + w["inputGatePeepholeVector"] * c, -50, 50))
            z = np.tanh(pre("blockInput"))
            if p.coupledInputAndForgetGate:
                c = c * (1 - i) + i * z
            else:
                f = sig(
                    np.clip(
                        pre("forgetGate") + w["forgetGatePeepholeVector"] * c + float(p.forgetBias),
                        -50,
                        50,
                    )
                )
                c = c * f + i * z
            c = np.clip(c, -p.cellClipThreshold, p.cellClipThreshold)
            o = sig(np.clip(pre("outputGate") + w["outputGatePeepholeVector"] * c, -50, 50))
            h = np.tanh(c) * o
            outs[step, n] = h
    return outs.astype(np.float32)


@pytest.mark.parametrize(
    "coupled, clip, forget_bias",
    [
        (False, 50000.0, True),
        (True, 50000.0, False),
        (False, 0.3, False),
    ],
)
def test_lstm_peepholes_coupling_and_cell_clip(coupled, clip, forget_bias):
    layer = lstm_layer(
        3,
        4,
        seq_out=True,
        bias=True,
        peep=True,
        coupled=coupled,
        clip=clip,
        forget_bias=forget_bias,
        states=False,
    )
    x = rand(2, 5, 4)
    y, _, c = run(layer, x[..., None, None])
    close(y[..., 0, 0], lstm_reference(layer, x.transpose(1, 0, 2)).transpose(1, 0, 2))
    assert np.abs(c).max() <= clip + 1e-6


def test_lstm_refuses_reverse_input():
    layer = lstm_layer(2, 2, seq_out=False, bias=False, states=False)
    layer.uniDirectionalLSTM.reverseInput = True
    with pytest.raises(RuntimeLayerError, match="'lstm'.*reverseInput"):
        run(layer, rand(1, 2))


# ----------------------------------------------------------------------------- refusals


def test_unknown_parameter_values_are_refused_by_name():
    layer = layer_of("reduce")
    layer.reduce.mode = 9
    layer.reduce.axis = 0  # ARGMAX over C, H and W together
    with pytest.raises(RuntimeLayerError, match="'my_reduce'.*ARGMAX"):
        run(layer, rand(2, 3, 4, 5))
    pad = layer_of("padding")
    with pytest.raises(RuntimeLayerError, match="'my_padding'.*padding type"):
        run(pad, rand(2, 3, 4, 5))
    up = layer_of("upsample")
    up.upsample.fractionalScalingFactor.extend([1.5, 1.5])
    with pytest.raises(RuntimeLayerError, match="'my_upsample'.*BILINEAR"):
        run(up, rand(2, 3, 4, 5))


# ----------------------------------------------------------------------------- end to end


def test_classic_model_end_to_end():
    b = NeuralNetworkBuilder([("x", datatypes.Array(3, 4, 4))], [("y", None)])
    w = rand(3)
    b.add_upsample("up", 2, 2, "x", "up", mode="NN")
    b.add_padding("pad", 1, 1, 1, 1, value=0.5, input_name="up", output_name="pad")
    b.add_scale("scale", w, None, False, "pad", "scaled", shape_scale=[3])
    b.add_elementwise("cat", ["pad", "scaled"], "cat", "CONCAT")
    b.add_l2_normalize("norm", "cat", "y", epsilon=1e-6)
    model = load(b.spec)
    x = rand(2, 3, 4, 4)
    padded = F.pad(F.interpolate(t(x), scale_factor=2), (1, 1, 1, 1), value=0.5)
    joined = torch.cat([padded, padded * t(w)[:, None, None]], dim=1)
    want = joined / torch.sqrt((joined**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-6)
    close(model.predict({"x": x})["y"], want)
    close(model.predict({"x": x[0]})["y"], want[0])


def test_nd_model_end_to_end():
    """An exact-shape-mapped model whose tensors keep the converter's leading 1."""
    b = NeuralNetworkBuilder(
        [("x", datatypes.Array(1, 6, 4))],
        [("y0", None), ("y1", None)],
        disable_rank5_shape_mapping=True,
    )
    bias_value = rand(6)
    b.add_transpose("tr", [0, 2, 1], "x", "tr")
    b.add_softmax_nd("sm", "tr", "sm", axis=-1)
    b.add_load_constant_nd("const", "bias", bias_value, shape=[6])
    b.add_add_broadcastable("add", ["sm", "bias"], "added")
    b.add_reshape_static("flat", "added", "flat", [1, 24])
    b.add_split_nd("split", "flat", ["y0", "y1"], axis=1, num_splits=2)
    model = load(b.spec)
    x = rand(1, 6, 4)
    tensor = np.exp(x.transpose(0, 2, 1))
    tensor = (tensor / tensor.sum(axis=-1, keepdims=True) + bias_value).reshape(1, 24)
    out = model.predict({"x": x})
    close(out["y0"], tensor[:, :12])
    close(out["y1"], tensor[:, 12:])
    batch = rand(3, 1, 6, 4)
    out = model.predict({"x": batch})
    close(out["y1"], np.stack([model.predict({"x": e})["y1"] for e in batch]))


@pytest.mark.parametrize(
    "kind, reference",
    [
        ("sin", torch.sin),
        ("cos", torch.cos),
        ("atan", torch.atan),
        ("sinh", torch.sinh),
        ("exp2", torch.exp2),
        ("floor", torch.floor),
        ("sign", torch.sign),
        ("tanh", torch.tanh),
    ],
)
def test_parameter_free_elementwise_layers(kind, reference):
    layer = NeuralNetwork_pb2.NeuralNetworkLayer(name=kind, input=["x"], output=["y"])
    getattr(layer, kind).SetInParent()
    x = np.random.default_rng(0).uniform(-0.9, 0.9, (2, 3, 4)).astype(np.float32)
    out = registry.forward_op(layer)(layer, [x], lambda field: None)[0]
    np.testing.assert_allclose(out, reference(torch.from_numpy(x)).numpy(), atol=1e-6)
    assert out.dtype == np.float32
