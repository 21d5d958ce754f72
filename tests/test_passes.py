"""Passes read shapes and Core ML capabilities from the op table (``updatable_coreml.ops``),
and the capabilities follow Core ML's released rules (``coreml_rules``; issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from updatable_coreml.errors import NotUpdatableError
from updatable_coreml.ir import Graph, Node, TensorSpec
from updatable_coreml.passes import UPDATABLE_OPS, check_backprop, check_trainable, run_passes

RNG = np.random.default_rng(0)
_ACT = {"activation": {"kind": "tanh"}, "recurrent_activation": {"kind": "sigmoid"}}


def _w(*shape: int) -> np.ndarray:
    return RNG.normal(0, 0.5, shape).astype(np.float32)


def _lstm(
    name: str, src: str, dst: str, n_in: int, hidden: int, sequences: bool, trainable: bool
) -> Node:
    attrs = {"hidden": hidden, "return_sequences": sequences, **_ACT}
    return Node(
        "lstm",
        name,
        [src],
        [dst],
        attrs,
        {"W_ih": _w(4 * hidden, n_in), "W_hh": _w(4 * hidden, hidden)},
        trainable=trainable,
    )


def test_an_lstm_passes_gradients_to_a_trainable_lstm_before_it():
    """uniDirectionalLSTM is in isLayerSupportedForBackprop since coremltools 5.0b1."""
    graph = Graph(
        [TensorSpec("x", (6, 3))],
        ["y"],
        [
            _lstm("lstm_1", "x", "h1", 3, 4, True, trainable=True),
            _lstm("lstm_2", "h1", "h2", 4, 4, False, trainable=False),
            Node("dense", "head", ["h2"], ["y"], weights={"weight": _w(2, 4)}, trainable=True),
        ],
    )
    written, warnings = run_passes(graph, loss_kind="mse")
    assert [n.name for n in written.nodes if n.trainable] == ["lstm_1", "head"]
    assert warnings == []


def _dense_then(node: Node, loss_kind: str = "mse") -> Graph:
    head = Node("dense", "fc", ["x"], ["h"], weights={"weight": _w(8, 4)}, trainable=True)
    return Graph([TensorSpec("x", (4,))], [node.outputs[0]], [head, node])


def test_a_classic_reshape_between_a_trainable_layer_and_the_loss_is_refused():
    graph = _dense_then(Node("reshape", "rs", ["h"], ["y"], {"shape": (2, 2, 2)}))
    with pytest.raises(NotUpdatableError, match="'rs'.*reshape.*'fc' lies before it"):
        check_backprop(graph, "y", "mse", allow_unsupported=False)


@pytest.mark.parametrize("kind, attrs", [("relu", {}), ("sigmoid", {}), ("tanh", {})])
def test_gradients_pass_relu_sigmoid_tanh(kind, attrs):
    graph = _dense_then(Node("activation", "act", ["h"], ["y"], {"kind": kind, **attrs}))
    assert check_backprop(graph, "y", "mse", allow_unsupported=False) == []


@pytest.mark.parametrize(
    "kind, attrs",
    [
        ("relu6", {}),
        ("clip", {"min": -1.0, "max": 1.0}),
        ("leaky_relu", {"alpha": 0.1}),
        ("elu", {"alpha": 1.0}),
        ("softplus", {}),
        ("softsign", {}),
        ("silu", {}),
        ("gelu", {}),
        ("hard_sigmoid", {"alpha": 0.2, "beta": 0.5}),
        ("linear", {"alpha": 2.0, "beta": 0.0}),
    ],
)
def test_other_activation_kinds_block_gradients(kind, attrs):
    graph = _dense_then(Node("activation", "act", ["h"], ["y"], {"kind": kind, **attrs}))
    with pytest.raises(NotUpdatableError, match=f"'act'.*{kind}"):
        check_backprop(graph, "y", "mse", allow_unsupported=False)


def test_only_dense_conv_and_lstm_can_train():
    # permute_channels writes a 1x1 convolution Core ML could update, but it has no weights
    # of the source model, so no frontend marks it trainable
    assert set(UPDATABLE_OPS) == {"dense", "conv2d", "lstm", "permute_channels"}
    graph = Graph(
        [TensorSpec("x", (3, 4, 4))],
        ["y"],
        [
            Node(
                "batchnorm",
                "bn",
                ["x"],
                ["y"],
                weights={k: _w(3) for k in ("gamma", "beta", "mean")}
                | {"variance": np.ones(3, np.float32)},
                trainable=True,
            )
        ],
    )
    with pytest.raises(NotUpdatableError, match="'bn'.*freeze it"):
        check_trainable(graph, "mse", allow_unsupported=False)
