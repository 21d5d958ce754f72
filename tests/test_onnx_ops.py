"""Per-op forward parity: each ONNX op, exported and run by our runtime, matches onnxruntime
on the ONNX file (max abs diff <= 1e-4 on random inputs)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import helper

from onnx_helpers import FEATURES, const, export, model, onnxruntime_run, rng, runtime_run

TOLERANCE = 1e-4
IMAGE = (4, 7, 7)


def node(op: str, inputs, output: str = FEATURES, **attrs):
    return helper.make_node(op, list(inputs), [output], name=f"{op.lower()}_{output}", **attrs)


def weights(name: str, *shape, seed: int = 1):
    return const(name, rng(seed).normal(0, 0.4, shape))


def conv(
    output: str = FEATURES, source: str = "x", out: int = 6, cin: int = 4, k: int = 3, **attrs
):
    inits = [
        weights(f"{output}.w", out, cin // attrs.get("group", 1), k, k),
        weights(f"{output}.b", out),
    ]
    return node("Conv", [source, f"{output}.w", f"{output}.b"], output, **attrs), inits


def image_case(*nodes, inits=(), shape=IMAGE):
    return list(nodes), list(inits), shape


def activation(op: str, **attrs):
    return image_case(node(op, ["x"], **attrs))


def conv_case(**attrs):
    layer, inits = conv(**attrs)
    return image_case(layer, inits=inits)


def pool_case(op: str, **attrs):
    return image_case(node(op, ["x"], **attrs))


def clip_case(low, high):
    inputs = ["x", "lo" if low is not None else "", "hi" if high is not None else ""]
    inits = [const(n, v) for n, v in (("lo", low), ("hi", high)) if v is not None]
    return image_case(node("Clip", inputs), inits=inits)


def constant_case(op: str, value):
    return image_case(node(op, ["x", "c"]), inits=[const("c", value)])


def two_branches(op: str, **attrs):
    a, ia = conv("a", out=4, pads=[1, 1, 1, 1])
    b, ib = conv("b", out=4, k=1)
    return image_case(a, b, node(op, ["a", "b"], **attrs), inits=ia + ib)


def matmul_add():
    return (
        [
            node("Flatten", ["x"], "f"),
            node("MatMul", ["f", "w"], "m"),
            node("Add", ["m", "b"], FEATURES),
        ],
        [weights("w", 12, 7), weights("b", 7)],
        (12,),
    )


def gemm_variants():
    return (
        [
            node("Gemm", ["x", "w1", "b1"], "g", alpha=0.5, beta=2.0),
            node("Relu", ["g"], "r"),
            node("Gemm", ["r", "w2"], FEATURES, transB=1),
        ],
        [weights("w1", 12, 8), weights("b1", 1, 8), weights("w2", 6, 8)],
        (12,),
    )


def batchnorm_cases():
    stats = [
        weights("g", 4),
        weights("be", 4, seed=2),
        weights("m", 4, seed=3),
        const("v", rng(4).uniform(0.5, 2.0, 4)),
    ]
    return image_case(
        node("BatchNormalization", ["x", "g", "be", "m", "v"], epsilon=1e-3), inits=stats
    )


def conv_bn():
    layer, inits = conv("c", out=4)
    bn = batchnorm_cases()
    return image_case(
        layer, node("BatchNormalization", ["c", "g", "be", "m", "v"]), inits=inits + bn[1]
    )


def reshape_dynamic():
    """What torch emits for x.view(x.size(0), -1) with a dynamic batch."""
    return image_case(
        node("Shape", ["x"], "s"),
        node("Gather", ["s", "zero"], "n", axis=0),
        node("Unsqueeze", ["n", "axes"], "n1"),
        node("Concat", ["n1", "minus1"], "target", axis=0),
        node("Reshape", ["x", "target"], FEATURES),
        inits=[
            const("zero", 0, np.int64),
            const("axes", [0], np.int64),
            const("minus1", [-1], np.int64),
        ],
    )


def squeeze_unsqueeze():
    return image_case(
        node("GlobalAveragePool", ["x"], "p"),
        node("Squeeze", ["p", "ax"], "s"),
        node("Unsqueeze", ["s", "ax"], "u"),
        node("Relu", ["u"], FEATURES),
        inits=[const("ax", [2, 3], np.int64)],
    )


def pad_case():
    return image_case(
        node("Pad", ["x", "pads", "value"]),
        inits=[const("pads", [0, 0, 1, 2, 0, 0, 2, 0], np.int64), const("value", 0.5)],
    )


def transpose_pair():
    return image_case(
        node("Transpose", ["x"], "t", perm=[0, 2, 3, 1]),
        node("Relu", ["t"], "r"),
        node("Transpose", ["r"], "back", perm=[0, 3, 1, 2]),
        node("Relu", ["back"], FEATURES),
    )


def transpose_flatten():
    layer, inits = conv("c", out=3)
    return image_case(layer, node("Transpose", ["c"], FEATURES, perm=[0, 2, 3, 1]), inits=inits)


CASES = {
    "gemm": gemm_variants,
    "matmul_add": matmul_add,
    "conv_group_dilation_stride": lambda: conv_case(
        group=2, dilations=[2, 1], strides=[2, 1], pads=[1, 0, 2, 1]
    ),
    "conv_same_upper": lambda: conv_case(auto_pad="SAME_UPPER", strides=[2, 2]),
    "conv_same_lower": lambda: conv_case(auto_pad="SAME_LOWER", strides=[2, 2], k=4),
    "conv_valid": lambda: conv_case(auto_pad="VALID"),
    "conv_depthwise": lambda: conv_case(group=4, out=4, pads=[1, 1, 1, 1]),
    "batchnorm": batchnorm_cases,
    "conv_batchnorm": conv_bn,
    "relu": lambda: activation("Relu"),
    "leaky_relu": lambda: activation("LeakyRelu", alpha=0.2),
    "sigmoid": lambda: activation("Sigmoid"),
    "tanh": lambda: activation("Tanh"),
    "elu": lambda: activation("Elu", alpha=0.7),
    "softplus": lambda: activation("Softplus"),
    "hard_sigmoid": lambda: activation("HardSigmoid", alpha=0.3, beta=0.4),
    "clip": lambda: clip_case(-0.5, 0.7),
    "clip_relu6": lambda: clip_case(0.0, 6.0),
    "clip_min_only": lambda: clip_case(0.0, None),
    "max_pool": lambda: pool_case(
        "MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
    ),
    "max_pool_ceil": lambda: pool_case("MaxPool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    "avg_pool_exclude_pad": lambda: pool_case(
        "AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
    ),
    "avg_pool_include_pad": lambda: pool_case(
        "AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1
    ),
    "avg_pool_same_upper": lambda: pool_case(
        "AveragePool", kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"
    ),
    "global_avg_pool": lambda: pool_case("GlobalAveragePool"),
    "global_max_pool": lambda: pool_case("GlobalMaxPool"),
    "reduce_mean": lambda: image_case(node("ReduceMean", ["x"], axes=[2, 3], keepdims=0)),
    "reshape_static": lambda: image_case(
        node("Reshape", ["x", "s"]), inits=[const("s", [0, -1], np.int64)]
    ),
    "reshape_dynamic_batch": reshape_dynamic,
    "reshape_rank3": lambda: image_case(
        node("Reshape", ["x", "s"], "r"),
        node("Sigmoid", ["r"]),
        inits=[const("s", [-1, 7, 4, 7], np.int64)],
    ),
    "squeeze_unsqueeze": squeeze_unsqueeze,
    "concat": lambda: two_branches("Concat", axis=1),
    "add": lambda: two_branches("Add"),
    "mul": lambda: two_branches("Mul"),
    "add_scalar": lambda: constant_case("Add", 0.3),
    "mul_per_channel": lambda: constant_case("Mul", rng(5).normal(size=(4, 1, 1))),
    "sub_per_channel": lambda: constant_case("Sub", rng(6).normal(size=(1, 4, 1, 1))),
    "div_scalar": lambda: constant_case("Div", 2.5),
    "dropout": lambda: image_case(node("Dropout", ["x", "ratio"]), inits=[const("ratio", 0.3)]),
    "identity": lambda: image_case(node("Identity", ["x"])),
    "pad": pad_case,
    "transpose_pair": transpose_pair,
    "transpose_before_flatten": transpose_flatten,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_parity(case, tmp_path):
    nodes, inits, shape = CASES[case]()
    built = model(nodes, shape, initializers=inits)
    x = rng(7).normal(size=(3, *shape)).astype(np.float32)
    export(built, tmp_path / "m.mlmodel")
    got = runtime_run(tmp_path / "m.mlmodel", {"x": x})["y"]
    expected = onnxruntime_run(built, {"x": x})
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE


def test_softmax_output_parity(tmp_path):
    built = model(
        [node("Gemm", ["x", "w", "b"], "logits", transB=1), node("Softmax", ["logits"], "y")],
        (6,),
        initializers=[weights("w", 4, 6), weights("b", 4)],
        head=None,
    )
    x = rng(8).normal(size=(5, 6)).astype(np.float32)
    report = export(built, tmp_path / "m.mlmodel", loss="cce", trainable="all")
    assert not any("appended softmax" in change for change in report.changes)
    got = runtime_run(tmp_path / "m.mlmodel", {"x": x})["y"]
    assert np.abs(got - onnxruntime_run(built, {"x": x})).max() <= TOLERANCE


def test_log_softmax_output_is_exported_as_probabilities(tmp_path):
    built = model(
        [node("Gemm", ["x", "w", "b"], "logits", transB=1), node("LogSoftmax", ["logits"], "y")],
        (6,),
        initializers=[weights("w", 4, 6), weights("b", 4)],
        head=None,
    )
    x = rng(9).normal(size=(5, 6)).astype(np.float32)
    report = export(built, tmp_path / "m.mlmodel", loss="cce", trainable="all")
    assert any("LogSoftmax" in change for change in report.changes)
    got = runtime_run(tmp_path / "m.mlmodel", {"x": x})["y"]
    assert np.abs(np.log(got) - onnxruntime_run(built, {"x": x})).max() <= TOLERANCE


def test_logits_output_gets_a_softmax_for_cross_entropy(tmp_path):
    built = model(
        [node("Gemm", ["x", "w", "b"], "y", transB=1)],
        (6,),
        initializers=[weights("w", 4, 6), weights("b", 4)],
        head=None,
    )
    x = rng(10).normal(size=(5, 6)).astype(np.float32)
    report = export(built, tmp_path / "m.mlmodel", loss="cce", trainable="all")
    assert any("read as logits" in note for note in report.assumptions)
    logits = onnxruntime_run(built, {"x": x})
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = runtime_run(tmp_path / "m.mlmodel", {"x": x})["y"]
    assert np.abs(got - probabilities).max() <= TOLERANCE


def test_nhwc_input_transpose_becomes_a_channel_first_input(tmp_path):
    layer, inits = conv("c", source="t")
    built = model(
        [node("Transpose", ["x"], "t", perm=[0, 3, 1, 2]), layer, node("Relu", ["c"], FEATURES)],
        (7, 7, 4),
        initializers=inits,
    )
    x = rng(11).normal(size=(2, 7, 7, 4)).astype(np.float32)
    report = export(built, tmp_path / "m.mlmodel")
    assert report.inputs == {"x": [4, 7, 7]}
    assert any("channel-first" in change for change in report.changes)
    got = runtime_run(tmp_path / "m.mlmodel", {"x": x.transpose(0, 3, 1, 2)})["y"]
    assert np.abs(got - onnxruntime_run(built, {"x": x})).max() <= TOLERANCE
