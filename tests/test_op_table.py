"""The op table holds together: every IR op has a shape rule and a writer, writes the Core ML
layers it declares, gets the shape its rule says when our runtime runs the written layer, and
every layer type it writes (or Core ML passes gradients through) has a runtime forward
(backward). A new op needs one line in ``EXAMPLES`` below, or these tests fail."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from updatable_coreml import coreml_rules, ops, runtime
from updatable_coreml._proto import NeuralNetwork_pb2
from updatable_coreml.backend import build_spec
from updatable_coreml.errors import UnsupportedError
from updatable_coreml.ir import Graph, Node, TensorSpec
from updatable_coreml.ops.activation import KINDS
from updatable_coreml.passes import infer_shapes
from updatable_coreml.runtime import registry
from updatable_coreml.spec_io import neural_network

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return RNG.normal(0, 0.5, shape).astype(np.float32)


_LSTM = {"hidden": 4, "activation": {"kind": "tanh"}, "recurrent_activation": {"kind": "sigmoid"}}

#: IR op -> examples: (input shapes, attrs, weights). One line per op; every op needs one.
EXAMPLES: dict[str, list[tuple[list[tuple[int, ...]], dict, dict]]] = {
    "dense": [([(4,)], {}, {"weight": _w(3, 4), "bias": _w(3)})],
    "conv2d": [
        (
            [(2, 7, 6)],
            {"strides": (2, 1), "padding": "same", "dilations": (1, 2)},
            {"weight": _w(3, 2, 3, 3), "bias": _w(3)},
        ),
        ([(4, 5, 5)], {"groups": 2, "padding": (1, 0, 2, 1)}, {"weight": _w(4, 2, 2, 3)}),
    ],
    "pool2d": [
        ([(2, 7, 6)], {"kind": "max", "kernel": (3, 2), "strides": (2, 2), "padding": "same"}, {}),
        (
            [(2, 7, 6)],
            {"kind": "avg", "kernel": (2, 2), "strides": (1, 2), "padding": (1, 1, 0, 1)},
            {},
        ),
        ([(2, 5, 4)], {"kind": "avg", "global": True}, {}),
        ([(2, 5, 4)], {"kind": "max", "global": True, "keepdims": True}, {}),
    ],
    "batchnorm": [
        (
            [(3, 2, 2)],
            {"eps": 1e-3},
            {"gamma": _w(3), "beta": _w(3), "mean": _w(3), "variance": np.abs(_w(3)) + 0.5},
        )
    ],
    "scale": [([(3, 2, 2)], {}, {"scale": _w(3), "bias": _w(3)})],
    "flatten": [([(2, 3, 4)], {}, {}), ([(2, 3, 4)], {"order": "hwc"}, {})],
    "reshape": [([(2, 3, 4)], {"shape": (4, 3, 2)}, {})],
    "concat": [([(2, 3, 3), (1, 3, 3)], {}, {})],
    "pad": [([(2, 3, 3)], {"pads": (1, 2, 0, 3), "value": 0.5}, {})],
    "add": [([(2, 3, 3), (2, 3, 3)], {}, {}), ([(1, 3, 3), (2, 3, 3)], {}, {})],
    "mul": [
        ([(5,), (5,)], {}, {}),
        ([(3, 1, 1), (3, 4, 5)], {}, {}),
        ([(3, 4, 5), (1, 4, 5), (1, 1, 1)], {}, {}),
    ],
    "crop": [([(2, 6, 5)], {"crops": (1, 2, 0, 1)}, {})],
    "slice_channels": [([(5, 3, 2)], {"start": 1, "end": 4}, {})],
    "permute_channels": [([(4, 3, 2)], {"order": (2, 0, 3, 1)}, {})],
    "channel_layer_norm": [
        ([(4, 3, 2)], {"eps": 1e-5}, {"gamma": _w(4), "beta": _w(4)}),
        ([(6,)], {"eps": 1e-3}, {}),
    ],
    "adaptive_avg_pool2d": [([(2, 3, 3)], {"output": (7, 7)}, {})],
    "activation": [([(2, 3, 3)], dict(attrs), {}) for attrs in ops.OPS["activation"].variants],
    "softmax": [([(4,)], {}, {})],
    "embedding": [([(5, 1)], {}, {"weight": _w(7, 3)})],
    "lstm": [
        ([(5, 3)], {**_LSTM, "return_sequences": True}, {"W_ih": _w(16, 3), "W_hh": _w(16, 4)}),
        ([(5, 3)], _LSTM, {"W_ih": _w(16, 3), "W_hh": _w(16, 4), "bias": _w(16)}),
    ],
    "gru": [
        ([(5, 3)], {**_LSTM, "return_sequences": True}, {"W_ih": _w(12, 3), "W_hh": _w(12, 4)}),
        ([(5, 3)], _LSTM, {"W_ih": _w(12, 3), "W_hh": _w(12, 4), "bias": _w(12)}),
    ],
    "simple_rnn": [
        ([(5, 3)], {**_LSTM, "return_sequences": True}, {"W_ih": _w(4, 3), "W_hh": _w(4, 4)}),
        ([(5, 3)], _LSTM, {"W_ih": _w(4, 3), "W_hh": _w(4, 4), "bias": _w(4)}),
    ],
    "bilstm": [
        (
            [(5, 3)],
            {**_LSTM, "return_sequences": True},
            {"W_ih": _w(16, 3), "W_hh": _w(16, 4), "W_ih_back": _w(16, 3), "W_hh_back": _w(16, 4)},
        ),
    ],
    "gru_reset_after": [
        (
            [(5, 3)],
            {**_LSTM, "steps": 5, "return_sequences": True, "bias": True},
            {"W_ih": _w(12, 3), "W_hh": _w(12, 4), "b_ih": _w(12), "b_hh": _w(12)},
        ),
        ([(5, 3)], {**_LSTM, "steps": 5, "bias": False}, {"W_ih": _w(12, 3), "W_hh": _w(12, 4)}),
    ],
    "sequence_to_width": [([(5, 3)], {}, {})],
    "width_to_sequence": [([(3, 1, 5)], {}, {})],
    "add_constant": [([(2, 3, 4)], {}, {"value": _w(2, 3, 4)}), ([(5,)], {}, {"value": _w(5)})],
    "self_attention": [
        ([(4, 1, 5)], {"heads": 2}, {"in_weight": _w(12, 4), "out_weight": _w(4, 4)}),
        (
            [(6, 2, 3)],
            {"heads": 3},
            {"in_weight": _w(18, 6), "in_bias": _w(18), "out_weight": _w(6, 6), "out_bias": _w(6)},
        ),
    ],
    "dot_product_attention": [([(4, 1, 5)] * 3, {"heads": 2, "scale": 0.7}, {})],
    "dropout": [([(3,)], {}, {})],
    "identity": [([(3,)], {}, {})],
}


def _cases():
    for name, examples in EXAMPLES.items():
        for index, example in enumerate(examples):
            label = example[1].get("kind", index) if name == "activation" else index
            yield pytest.param(name, *example, id=f"{name}-{label}")


def _graph(op: str, shapes, attrs, weights) -> Graph:
    inputs = [TensorSpec(f"x{i}", shape) for i, shape in enumerate(shapes)]
    node = Node(op, "n", [t.name for t in inputs], ["y"], dict(attrs), dict(weights))
    return Graph(inputs, ["y"], [node])


def test_every_op_has_an_example_a_shape_rule_and_a_writer_or_is_removed_by_the_passes():
    assert set(EXAMPLES) == set(ops.OPS), "add the op to EXAMPLES (one line)"
    for name, definition in ops.OPS.items():
        assert callable(definition.shape), name
        assert definition.doc, name
        # writer None exactly for the ops the passes remove, which write no layer
        assert (definition.write is None) == (not definition.layer_types()), name


def test_activation_variants_cover_every_kind():
    assert [v["kind"] for v in ops.OPS["activation"].variants] == list(KINDS)


@pytest.mark.parametrize("op, shapes, attrs, weights", _cases())
def test_writer_emits_the_declared_layers_and_the_runtime_agrees_with_the_shape_rule(
    op, shapes, attrs, weights
):
    graph = _graph(op, shapes, attrs, weights)
    definition = ops.OPS[op]
    if definition.write is None:
        with pytest.raises(UnsupportedError, match="run the passes first"):
            ops.write(NeuralNetwork_pb2.NeuralNetwork(), graph.nodes[0], infer_shapes(graph))
        return
    nn = NeuralNetwork_pb2.NeuralNetwork()
    ops.write(nn, graph.nodes[0], infer_shapes(graph))
    written = tuple(
        (
            layer.WhichOneof("layer"),
            layer.activation.WhichOneof("NonlinearityType")
            if layer.WhichOneof("layer") == "activation"
            else None,
        )
        for layer in nn.layers
    )
    assert written == definition.layers(attrs)
    assert nn.layers[-1].name == "n" and list(nn.layers[-1].output[:1]) == ["y"]

    spec = build_spec(graph)
    model = runtime.load(spec)
    feeds = {t.name: _batch(t.shape, integers=op == "embedding") for t in graph.inputs}
    expected = _batch(infer_shapes(graph)["y"]).shape
    if neural_network(spec).arrayInputShapeMapping == NeuralNetwork_pb2.EXACT_ARRAY_MAPPING:
        # iOS 13 layers (gelu): blobs are declared at the rank the classic layers need there
        declared = {f.name: tuple(f.type.multiArrayType.shape) for f in spec.description.input}
        feeds = {name: x.reshape((2, *declared[name])) for name, x in feeds.items()}
        (output,) = spec.description.output
        expected = (2, *output.type.multiArrayType.shape)
    assert np.shape(model.predict(feeds)["y"]) == expected


def _batch(shape: tuple[int, ...], integers: bool = False) -> np.ndarray:
    """Two examples of per-example IR ``shape`` in Core ML's layout: a sequence ``(Seq, C)``
    travels as ``[Seq, 1, C]`` per example (see backend._describe_array)."""
    layout = (2, shape[0], 1, shape[1]) if len(shape) == 2 else (2, *shape)
    values = RNG.integers(0, 7, layout) if integers else RNG.normal(size=layout)
    return values.astype(np.float32)


def test_an_op_missing_from_the_table_raises_instead_of_keeping_its_input_shape():
    graph = _graph("softsign_typo", [(3,)], {}, {})
    with pytest.raises(UnsupportedError, match="'softsign_typo' is not in the op table"):
        infer_shapes(graph)


def test_every_layer_type_an_op_writes_has_a_runtime_forward():
    written = {layer for definition in ops.OPS.values() for layer in definition.layer_types()}
    assert written - set(registry.FORWARD) == set()


def _runtime_backward():
    """The runtime's backward registry (in ``runtime.registry`` once the runtime keeps both
    registries there, in ``runtime.backward`` before)."""
    found = getattr(registry, "BACKWARD", None)
    return (
        found
        if found is not None
        else importlib.import_module("updatable_coreml.runtime.backward").BACKWARD
    )


def test_every_layer_core_ml_passes_gradients_through_has_a_runtime_backward():
    assert set(coreml_rules.BACKPROP_LAYER_TYPES) - set(_runtime_backward()) == set()


def test_capabilities_follow_the_rules_table():
    # a channel permutation is written as a 1x1 convolution (exact, iOS 11): Core ML could
    # update it and passes gradients through it; no frontend gives it trainable weights
    updatable = {name for name, d in ops.OPS.items() if d.updatable()}
    assert updatable == {"dense", "conv2d", "lstm", "permute_channels"}
    through = {name for name, d in ops.OPS.items() if name != "activation" and d.passes_gradients()}
    assert through == {
        "dense",
        "conv2d",
        "lstm",
        "pool2d",
        "flatten",
        "batchnorm",
        "permute_channels",
    }
    kinds = {kind for kind in KINDS if ops.OPS["activation"].passes_gradients({"kind": kind})}
    assert kinds == {"relu", "sigmoid", "tanh"}


@pytest.mark.parametrize("op", ["lstm", "gru", "bilstm"])
def test_recurrent_layers_refuse_activation_parameters_core_ml_does_not_support(op):
    """NeuralNetwork.proto: a recurrent hard sigmoid only as 0.2 * x + 0.5 (Keras 3's is
    x / 6 + 0.5); Apple's validator does not check it, so the writer does."""
    shapes, attrs, weights = EXAMPLES[op][0]
    ok = {**attrs, "recurrent_activation": {"kind": "hard_sigmoid", "alpha": 0.2, "beta": 0.5}}
    graph = _graph(op, shapes, ok, weights)
    ops.write(NeuralNetwork_pb2.NeuralNetwork(), graph.nodes[0], infer_shapes(graph))
    keras_3 = {**ok, "recurrent_activation": {"kind": "hard_sigmoid", "alpha": 1 / 6, "beta": 0.5}}
    graph = _graph(op, shapes, keras_3, weights)
    with pytest.raises(UnsupportedError, match="'n'.*only with alpha=0.2, beta=0.5.*alpha=0.1667"):
        ops.write(NeuralNetwork_pb2.NeuralNetwork(), graph.nodes[0], infer_shapes(graph))


def test_an_unrolled_gru_over_one_step_returns_its_sequence_without_a_one_input_concat():
    """Apple's validateConcatLayer wants two inputs or more; one step is repeated once."""
    attrs = {**_LSTM, "steps": 1, "return_sequences": True, "bias": False}
    graph = _graph("gru_reset_after", [(1, 3)], attrs, {"W_ih": _w(12, 3), "W_hh": _w(12, 4)})
    nn = NeuralNetwork_pb2.NeuralNetwork()
    ops.write(nn, graph.nodes[0], infer_shapes(graph))
    last = nn.layers[-1]
    assert last.WhichOneof("layer") == "sequenceRepeat" and list(last.input) == ["n_t0_h"]
    assert "concat" not in {layer.WhichOneof("layer") for layer in nn.layers}
