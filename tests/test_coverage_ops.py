"""Values of the ops real architectures need in their frozen part (issue 14), written by the
backend and run by our runtime, against NumPy references: hard_silu, broadcasting
multiply/add, crop, and adaptive average pooling folded into the dense layer after it."""

from __future__ import annotations

import numpy as np
import pytest

from updatable_coreml import runtime
from updatable_coreml.backend import build_spec
from updatable_coreml.errors import UnsupportedError
from updatable_coreml.ir import Graph, Node, TensorSpec
from updatable_coreml.passes import adaptive_windows, fold_adaptive_pooling, infer_shapes

TOLERANCE = 1e-4
RNG = np.random.default_rng(0)


def _run(graph: Graph, **feeds: np.ndarray) -> np.ndarray:
    return np.asarray(runtime.load(build_spec(graph)).predict(feeds)[graph.outputs[0]])


def test_hard_silu_is_x_times_relu6_of_x_plus_3_over_6():
    x = RNG.uniform(-5, 5, (2, 3, 4, 4)).astype(np.float32)
    graph = Graph(
        [TensorSpec("x", (3, 4, 4))],
        ["y"],
        [Node("activation", "hs", ["x"], ["y"], {"kind": "hard_silu"})],
    )
    want = x * np.clip(x + 3, 0, 6) / 6
    assert np.abs(_run(graph, x=x) - want).max() <= TOLERANCE


@pytest.mark.parametrize("op, reduce", [("mul", np.multiply), ("add", np.add)])
@pytest.mark.parametrize("partial", [(3, 1, 1), (1, 4, 5), (1, 1, 1)])
def test_broadcasting_either_operand_order(op, reduce, partial):
    """Squeeze-excitation: an image times per-channel weights, in either operand order."""
    x = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    s = RNG.normal(size=(2, *partial)).astype(np.float32)
    for order in (["s", "x"], ["x", "s"]):
        graph = Graph(
            [TensorSpec("x", (3, 4, 5)), TensorSpec("s", partial)],
            ["y"],
            [Node(op, "join", order, ["y"])],
        )
        assert infer_shapes(graph)["y"] == (3, 4, 5)
        assert np.abs(_run(graph, x=x, s=s) - reduce(x, s)).max() <= TOLERANCE


def test_a_broadcast_core_ml_does_not_do_is_refused_by_name():
    graph = Graph(
        [TensorSpec("x", (3, 4, 5)), TensorSpec("s", (3, 4, 1))],
        ["y"],
        [Node("mul", "join", ["x", "s"], ["y"])],
    )
    with pytest.raises(UnsupportedError, match=r"'join'.*\(C, 1, 1\)"):
        infer_shapes(graph)


def test_crop():
    x = RNG.normal(size=(2, 2, 6, 5)).astype(np.float32)
    graph = Graph(
        [TensorSpec("x", (2, 6, 5))],
        ["y"],
        [Node("crop", "cut", ["x"], ["y"], {"crops": (1, 2, 0, 1)})],
    )
    assert np.abs(_run(graph, x=x) - x[:, :, 1:4, 0:4]).max() == 0


def _adaptive_reference(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """torch's AdaptiveAvgPool2d, written from its definition."""
    rows = adaptive_windows(x.shape[-2], out_h)
    cols = adaptive_windows(x.shape[-1], out_w)
    return np.stack(
        [
            np.stack([x[..., r0:r1, c0:c1].mean(axis=(-2, -1)) for c0, c1 in cols], -1)
            for r0, r1 in rows
        ],
        -2,
    )


@pytest.mark.parametrize("size, out", [((3, 3), (7, 7)), ((2, 2), (6, 6)), ((5, 4), (3, 3))])
def test_adaptive_pooling_folds_into_the_frozen_dense_after_it(size, out):
    channels = 3
    weight = RNG.normal(size=(4, channels * out[0] * out[1])).astype(np.float32)
    bias = RNG.normal(size=4).astype(np.float32)
    graph = Graph(
        [TensorSpec("x", (channels, *size))],
        ["y"],
        [
            Node("adaptive_avg_pool2d", "avgpool", ["x"], ["p"], {"output": out}),
            Node("flatten", "flat", ["p"], ["f"]),
            Node("dense", "fc", ["f"], ["y"], weights={"weight": weight, "bias": bias}),
        ],
    )
    folded = fold_adaptive_pooling(graph)
    assert [n.op for n in folded.nodes] == ["flatten", "dense"]
    assert "folded into the frozen dense layer 'fc'" in folded.notes[-1]
    x = RNG.normal(size=(2, channels, *size)).astype(np.float32)
    want = _adaptive_reference(x, *out).reshape(2, -1) @ weight.T + bias
    assert np.abs(_run(folded, x=x).reshape(2, -1) - want).max() <= TOLERANCE


def test_adaptive_pooling_without_a_frozen_dense_after_it_is_refused_by_name():
    graph = Graph(
        [TensorSpec("x", (3, 3, 3))],
        ["y"],
        [
            Node("adaptive_avg_pool2d", "avgpool", ["x"], ["p"], {"output": (7, 7)}),
            Node("flatten", "flat", ["p"], ["f"]),
            Node(
                "dense",
                "fc",
                ["f"],
                ["y"],
                weights={"weight": np.zeros((2, 147), np.float32)},
                trainable=True,
            ),
        ],
    )
    with pytest.raises(UnsupportedError, match=r"'avgpool'.*3x3 to 7x7.*frozen dense"):
        fold_adaptive_pooling(graph)
