"""Small ONNX graphs built with onnx.helper, and the parity check the ONNX tests share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
FEATURES = "features"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def const(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def model(
    nodes: Sequence[onnx.NodeProto],
    input_shape: Sequence[int],
    *,
    initializers: Sequence[onnx.TensorProto] = (),
    output: str = "y",
    head: Optional[int] = 5,
    opset: int = OPSET,
    input_name: str = "x",
    seed: int = 0,
) -> onnx.ModelProto:
    """A model reading ``input_name`` (batch axis dynamic, ``N``) through ``nodes``.

    With ``head``, the nodes end in tensor ``features`` and a Flatten + Gemm(``head`` units)
    named ``head`` produces ``output``: every op-under-test case then has a layer to train.
    """
    nodes, inits = list(nodes), list(initializers)
    if head:
        generator = rng(seed + 100)
        nodes += [
            helper.make_node("Flatten", [FEATURES], ["flat"], name="flatten"),
            helper.make_node(
                "Gemm", ["flat", "head.weight", "head.bias"], [output], name="head", transB=1
            ),
        ]
        features = _flat_size(nodes, input_shape, inits, input_name, opset)
        inits += [
            const("head.weight", generator.normal(0, 0.3, (head, features))),
            const("head.bias", generator.normal(0, 0.3, head)),
        ]
    graph = helper.make_graph(
        nodes,
        "case",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    built.ir_version = 8
    return built


def _flat_size(nodes, input_shape, inits, input_name, opset) -> int:
    """Size of ``flat`` per example, from ONNX shape inference on the body."""
    graph = helper.make_graph(
        nodes[:-1],
        "probe",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, *input_shape])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    value = next(v for v in inferred.graph.output if v.name == "flat")
    return int(value.type.tensor_type.shape.dim[1].dim_value)


def onnxruntime_run(built, feeds: dict) -> np.ndarray:
    """Output 0 of ``built`` (a ModelProto or serialized bytes) on ``feeds``."""
    import onnxruntime as ort

    data = built if isinstance(built, bytes) else built.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def runtime_run(path, feeds: dict) -> dict:
    from updatable_coreml.runtime import load

    return load(path).predict(feeds)


def export(built, path, **kwargs):
    from updatable_coreml.exporters.onnx import export_onnx
    from updatable_coreml.training import SGD

    kwargs.setdefault("loss", "mse")
    kwargs.setdefault("optimizer", SGD())
    kwargs.setdefault("trainable", ["head"])
    kwargs.setdefault("seed", 0)
    source = built.SerializeToString() if isinstance(built, onnx.ModelProto) else built
    return export_onnx(source, path, **kwargs)
