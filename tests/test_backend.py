"""The spec writer: model-level description rules Core ML checks before any layer."""

from __future__ import annotations

import numpy as np

from updatable_coreml.backend import build_spec
from updatable_coreml.ir import Graph, Node, TensorSpec


def _dense_graph() -> Graph:
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    return Graph(
        [TensorSpec("x", (3,))],
        ["y"],
        [Node("dense", "fc", ["x"], ["y"], weights={"weight": weight}, trainable=True)],
    )


def test_a_regressor_names_its_predicted_feature():
    """Core ML refuses a regressor without ``predictedFeatureName`` ("Specification is missing
    regressor predictedFeatureName.", validateRegressorInterface; issue 14), and it must name
    a MultiArray (or Double) output."""
    spec = build_spec(_dense_graph(), regressor=True)
    assert spec.WhichOneof("Type") == "neuralNetworkRegressor"
    assert spec.description.predictedFeatureName == "y"
    (output,) = spec.description.output
    assert output.name == "y" and output.type.WhichOneof("Type") == "multiArrayType"


def test_a_plain_network_names_no_predicted_feature():
    spec = build_spec(_dense_graph())
    assert spec.WhichOneof("Type") == "neuralNetwork"
    assert spec.description.predictedFeatureName == ""


def test_exact_rank_mapping_declares_vectors_rank_4_for_the_inner_product():
    """A GELU switches the network to the exact-rank mapping. There an innerProduct reads a
    rank-3 blob as rows of its last axis (NeuralNetwork.proto, InnerProductLayerParams), so a
    vector declared (C, 1, 1) would be C rows of one value: it is declared (1, C, 1, 1), and
    the regressor's output likewise."""
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    graph = Graph(
        [TensorSpec("x", (3,))],
        ["y"],
        [
            Node("activation", "act", ["x"], ["h"], attrs={"kind": "gelu"}),
            Node("dense", "fc", ["h"], ["y"], weights={"weight": weight}, trainable=True),
        ],
    )
    spec = build_spec(graph, regressor=True)
    assert spec.neuralNetworkRegressor.arrayInputShapeMapping == 1  # EXACT_ARRAY_MAPPING
    assert list(spec.description.input[0].type.multiArrayType.shape) == [1, 3, 1, 1]
    assert list(spec.description.output[0].type.multiArrayType.shape) == [1, 2, 1, 1]


def _gelu_then_reshape(order: str = "chw") -> Graph:
    return Graph(
        [TensorSpec("x", (2, 3, 4))],
        ["y"],
        [
            Node("activation", "act", ["x"], ["h"], attrs={"kind": "gelu"}),
            Node("reshape", "r", ["h"], ["y"], attrs={"shape": (2, 1, 12), "order": order}),
        ],
    )


def test_exact_rank_mapping_writes_reshapes_as_reshape_static():
    """Under the exact-rank mapping blobs are rank 4, and Core ML's classic reshape takes rank
    5 only (validateRankCount(layer, "Reshape", 5, 5), every release): a channel-first
    reshape is written as the reshapeStatic it is, leading 1 included, and our runtime runs
    it as the classic one would."""
    from updatable_coreml.runtime.model import load

    spec = build_spec(_gelu_then_reshape())
    (layer,) = [layer for layer in spec.neuralNetwork.layers if layer.name == "r"]
    assert layer.WhichOneof("layer") == "reshapeStatic"
    assert list(layer.reshapeStatic.targetShape) == [1, 2, 1, 12]
    x = np.random.default_rng(0).normal(size=(1, 1, 2, 3, 4)).astype(np.float32)
    y = np.asarray(load(spec).predict({"x": x[0]})["y"])
    gelu = load(
        build_spec(Graph([TensorSpec("x", (2, 3, 4))], ["h"], _gelu_then_reshape().nodes[:1]))
    )
    h = np.asarray(gelu.predict({"x": x[0]})["h"])
    np.testing.assert_array_equal(y.reshape(-1), h.reshape(-1))
    assert y.shape[-4:] == (1, 2, 1, 12)


def test_exact_rank_mapping_refuses_a_channel_last_reshape():
    import pytest

    from updatable_coreml.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="layer 'r': a channel-last reshape"):
        build_spec(_gelu_then_reshape("hwc"))
