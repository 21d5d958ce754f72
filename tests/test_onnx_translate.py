"""ONNX -> IR translation: loading untrusted files, external data, what trains, and the
refusals that name the node and say what to do (no Core ML file needed for most)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnx_helpers import FEATURES, const, export, model, rng
from updatable_coreml.errors import ConfigError, ModelFileError, UnsupportedError
from updatable_coreml.exporters.onnx import load_onnx, onnx_to_graph
from updatable_coreml.exporters.onnx.translate import CONVERTERS

SUPPORTED = {
    "Gemm",
    "MatMul",
    "Conv",
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Clip",
    "Elu",
    "Softplus",
    "HardSigmoid",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Concat",
    "Add",
    "Mul",
    "Softmax",
    "LogSoftmax",
    "Dropout",
    "Identity",
    "Pad",
    "Transpose",
}


def node(op, inputs, output=FEATURES, **attrs):
    return helper.make_node(op, list(inputs), [output], name=f"{op.lower()}_{output}", **attrs)


def dense_model(**kwargs) -> onnx.ModelProto:
    """x (6,) -> MatMul + Add (fc) -> Relu -> head."""
    return model(
        [
            node("MatMul", ["x", "fc.weight"], "m"),
            node("Add", ["m", "fc.bias"], "h"),
            node("Relu", ["h"]),
        ],
        (6,),
        initializers=[const("fc.weight", rng().normal(size=(6, 4))), const("fc.bias", np.ones(4))],
        **kwargs,
    )


def graph(built, **kwargs):
    state, notes = onnx_to_graph(built.SerializeToString(), **kwargs)
    return state.graph, notes


def test_every_listed_op_has_a_converter():
    assert SUPPORTED <= set(CONVERTERS)


def test_layers_keep_onnx_node_names_and_matmul_add_is_one_dense_layer():
    ir, _ = graph(dense_model(), trainable="all")
    assert [(n.name, n.op) for n in ir.nodes] == [
        ("matmul_m", "dense"),
        ("relu_features", "activation"),
        ("head", "dense"),
    ]
    dense = ir.nodes[0]
    assert dense.outputs == ["h"] and np.allclose(dense.weights["bias"], 1.0)
    assert dense.weights["weight"].shape == (4, 6)


@pytest.mark.parametrize(
    "trainable, expected",
    [
        (None, ["head"]),
        ("all", ["matmul_m", "head"]),
        (["fc"], ["matmul_m"]),
        (["fc.bias"], ["matmul_m"]),
        (["head"], ["head"]),
        (["head.weight", "fc"], ["matmul_m", "head"]),
    ],
)
def test_trainable_by_node_initializer_or_prefix(trainable, expected):
    ir, notes = graph(dense_model(), trainable=trainable)
    assert [n.name for n in ir.nodes if n.trainable] == expected
    assert bool(notes) == (trainable is None)


def test_unknown_trainable_name_suggests_close_ones():
    with pytest.raises(ConfigError, match="did you mean 'head'"):
        graph(dense_model(), trainable=["haed"])


def test_unknown_op_names_node_and_op_type():
    built = model([node("Relu", ["x"], "r"), node("Erf", ["r"])], (6,))
    with pytest.raises(
        UnsupportedError, match=r"node 'erf_features' \(Erf\).*'Erf' has no Core ML"
    ):
        graph(built)


def test_custom_domain_op_is_refused():
    custom = helper.make_node("Fancy", ["x"], [FEATURES], name="fancy", domain="com.example")
    built = model([custom], (6,), head=None, output=FEATURES)
    built.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedError, match="'fancy'.*domain 'com.example'"):
        graph(built)


def test_old_opset_is_refused_with_the_fix():
    with pytest.raises(UnsupportedError, match="opset 12 .*version_converter"):
        graph(dense_model(opset=12))


@pytest.mark.parametrize(
    "nodes, inits, shape, message",
    [
        (
            [node("Transpose", ["x"], "t", perm=[0, 2, 1, 3]), node("Relu", ["t"])],
            [],
            (4, 5, 6),
            "Transpose node 'transpose_t'",
        ),
        ([node("Add", ["x", "c"])], [const("c", np.ones((5, 6)))], (4, 5, 6), "per channel"),
        ([node("Softmax", ["x"], axis=2)], [], (4, 5, 6), "channel axis"),
        ([node("Concat", ["x", "x"], axis=2)], [], (4, 5, 6), "channel axis"),
        (
            [node("Pad", ["x", "p"], mode="reflect")],
            [const("p", [0] * 8, np.int64)],
            (4, 5, 6),
            "'reflect'",
        ),
        (
            [node("Reshape", ["x", "s"])],
            [const("s", [2, -1], np.int64)],
            (4, 5, 6),
            "across the batch",
        ),
        ([node("MatMul", ["x", "w"])], [const("w", np.ones((6, 3)))], (4, 5, 6), "flat"),
        ([node("Conv", ["x", "w"])], [const("w", np.ones((2, 4, 3)))], (4, 9), "2-D"),
        (
            [node("Relu", ["x"], "r"), node("LogSoftmax", ["r"], "l"), node("Relu", ["l"])],
            [],
            (6,),
            "log-softmax",
        ),
    ],
)
def test_unsupported_constructs_are_refused_with_the_node(nodes, inits, shape, message):
    with pytest.raises(UnsupportedError, match=message):
        graph(model(nodes, shape, initializers=inits, head=None, output=FEATURES))


def test_dropout_mask_in_use_is_refused():
    drop = helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop")
    cast = helper.make_node("Cast", ["mask"], [FEATURES], name="cast", to=TensorProto.FLOAT)
    with pytest.raises(UnsupportedError, match="'drop'.*mask"):
        graph(model([drop, cast], (6,), head=None, output=FEATURES))


def test_integer_input_is_refused():
    built = dense_model()
    built.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(UnsupportedError, match="input 'x' .*INT64"):
        graph(built)


# -- loading untrusted files -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"\xff\x00 not onnx at all", "not an ONNX model"),
        (b"\x08\x07", "no graph"),
    ],
)
def test_bad_files_are_clean_errors(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        load_onnx(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_onnx(tmp_path / "absent.onnx")


def external(tmp_path, location: str = "weights.bin"):
    built = dense_model()
    onnx.save_model(
        built,
        tmp_path / "m.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return tmp_path / "m.onnx"


def test_external_data_is_loaded(tmp_path):
    path = external(tmp_path)
    report = export(path, tmp_path / "m.mlmodel")
    assert report.trainable == ["head"]
    loaded = load_onnx(path)
    assert onnx.numpy_helper.to_array(loaded.graph.initializer[0]).shape == (6, 4)


def test_missing_external_data_names_the_file(tmp_path):
    path = external(tmp_path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelFileError, match="'weights.bin' not found"):
        export(path, tmp_path / "m.mlmodel")
    assert not (tmp_path / "m.mlmodel").exists()


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    inner = tmp_path / "inner"
    inner.mkdir()
    path = external(inner)
    built = onnx.load(path, load_external_data=False)
    for tensor in built.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    (inner / "weights.bin").rename(tmp_path / "weights.bin")
    onnx.save_model(built, path)
    with pytest.raises(ModelFileError, match="outside the model's folder"):
        load_onnx(path)


def test_loaded_proto_with_external_data_asks_for_the_path(tmp_path):
    built = onnx.load(external(tmp_path), load_external_data=False)
    with pytest.raises(ModelFileError, match="pass the .onnx path"):
        load_onnx(built)


def test_a_prefix_selects_the_layers_core_ml_can_train_not_batch_norms():
    inits = [
        const("block.conv.weight", rng().normal(size=(4, 3, 3, 3))),
        const("block.bn.weight", np.ones(4)),
        const("block.bn.bias", np.zeros(4)),
        const("block.bn.mean", np.zeros(4)),
        const("block.bn.var", np.ones(4)),
    ]
    nodes = [
        node("Conv", ["x", "block.conv.weight"], "c"),
        node(
            "BatchNormalization",
            ["c", "block.bn.weight", "block.bn.bias", "block.bn.mean", "block.bn.var"],
        ),
    ]
    ir, _ = graph(model(nodes, (3, 6, 6), initializers=inits), trainable=["block"])
    assert [n.name for n in ir.nodes if n.trainable] == ["conv_c"]


def test_random_ops_are_never_folded_into_weights():
    built = model(
        [node("RandomNormal", [], "noise", shape=[1, 6]), node("Add", ["x", "noise"])], (6,)
    )
    with pytest.raises(UnsupportedError, match="'RandomNormal' has no Core ML converter"):
        graph(built)
