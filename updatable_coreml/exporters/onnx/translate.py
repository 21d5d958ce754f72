"""Translate an ONNX graph (opset >= 13) into the IR: one converter per ONNX op type.

Every node is looked up in ``CONVERTERS`` by its op type (``@converts("Conv")``); a node
without one is an ``UnsupportedError`` naming the node and its op type, never a silent skip.

Conventions:

* Axis 0 of every activation is the batch; IR shapes drop it (ONNX is already channel-first).
  A symbolic batch dimension is pinned to 1 for shape inference, so every shape is static and
  shape arithmetic (``Shape`` -> ``Gather`` -> ``Concat`` -> ``Reshape``, what exporters emit
  for ``x.view(x.size(0), -1)``) folds to constants.
* A node whose inputs are all constants is evaluated now with ONNX's reference evaluator.
  Layer weights must be constants: initializers, ``Constant`` nodes, or what folds from them.
* IR tensors keep the ONNX tensor names and IR layers the ONNX node names (``/fc/Gemm``);
  ``weight_sources`` remembers which initializers each layer took, so a layer to train can be
  named by its initializer too.
* ``Transpose`` is folded where Core ML needs no layer for it: identity permutations, moves
  of size-1 axes, pairs that undo each other, NCHW -> NHWC before a flatten (a channel-last
  flatten, fixed up by the shared passes), and NHWC -> NCHW right after a graph input (the
  Core ML input becomes channel-first). Any other transpose is refused where it is used.

onnx is imported inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ...errors import UnsupportedError, first_line
from ...ir import Graph, TensorSpec
from ..common.builder import append_node, run_converter
from ..common.image import apply_image_input
from . import converters  # noqa: F401  (importing registers the converters)
from .context import (
    CONVERTERS,
    DEFAULT_DOMAINS,
    RANDOM_OPS,
    OnnxTranslation,
    default_opset,
    node_attrs,
    static_shapes,
    where,
)


def translate(model: Any, image_input: Optional[dict] = None) -> OnnxTranslation:
    """Build the IR graph of an ONNX model (inputs, nodes, outputs; nothing marked trainable)."""
    from onnx import numpy_helper

    opset = default_opset(model)
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [value for value in model.graph.input if value.name not in initializers]
    for value in graph_inputs:
        _check_float(value)
    shapes = static_shapes(model)
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for value in model.graph.output:
        uses[value.name] = uses.get(value.name, 0) + 1
    inputs = [_input_spec(value, shapes) for value in graph_inputs]
    apply_image_input(image_input, inputs)
    state = OnnxTranslation(
        Graph(inputs, []),
        shapes,
        constants,
        uses,
        opset,
        tuple(value.name for value in model.graph.output),
    )
    state.tensors.update({spec.name: spec.name for spec in inputs})
    state.taken.update(spec.name for spec in inputs)
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node = _named(node, f"{node.op_type}_{index}")
        _convert(state, node)
    state.graph.outputs = [_output(state, value.name) for value in model.graph.output]
    return state


def _named(node: Any, name: str) -> Any:
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = name
    return copy


def _check_float(value: Any) -> None:
    from onnx import TensorProto

    elem_type = value.type.tensor_type.elem_type
    if elem_type != TensorProto.FLOAT:
        raise UnsupportedError(
            f"input {value.name!r} is of ONNX type "
            f"{TensorProto.DataType.Name(elem_type)}; Core ML network inputs "
            "here are float32 tensors"
        )


def _input_spec(value: Any, shapes: dict[str, tuple[int, ...]]) -> TensorSpec:
    shape = shapes.get(value.name)
    if shape is None or len(shape) < 2:
        raise UnsupportedError(
            f"input {value.name!r} needs a static shape (batch, features...); "
            "only the batch dimension may be dynamic"
        )
    return TensorSpec(value.name, shape[1:])


def _convert(state: OnnxTranslation, node: Any) -> None:
    if node.domain not in DEFAULT_DOMAINS:
        raise UnsupportedError(
            f"{where(node)} is from operator domain {node.domain!r}; only "
            "standard ONNX ops can be exported"
        )
    if _foldable(state, node):
        _fold(state, node)
        return
    fn = CONVERTERS.get(node.op_type)
    if fn is None:
        raise UnsupportedError(
            f"{where(node)}: ONNX op {node.op_type!r} has no Core ML converter; "
            "replace it with a supported op (see the ONNX exporter's op list)"
        )
    run_converter(fn, where(node), state, node, node_attrs(node))


def _foldable(state: OnnxTranslation, node: Any) -> bool:
    if node.op_type in RANDOM_OPS:
        return False
    if node.op_type == "Shape":
        return node.input[0] in state.shapes
    return all(name in state.constants for name in node.input if name)


def _fold(state: OnnxTranslation, node: Any) -> None:
    """Evaluate a node of constants (or a ``Shape`` of a static tensor) into new constants."""
    if node.op_type == "Shape":
        a = node_attrs(node)
        dims = np.asarray(state.shapes[node.input[0]], dtype=np.int64)
        state.constants[node.output[0]] = dims[a.get("start", 0) : a.get("end", len(dims))]
        return
    from onnx.reference import ReferenceEvaluator

    feeds = {name: state.constants[name] for name in node.input if name}
    try:
        results = ReferenceEvaluator(node, opsets={"": state.opset}).run(None, feeds)
    except Exception as exc:
        raise UnsupportedError(
            f"{where(node)}: cannot evaluate it on its constant inputs "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from None
    for name, value in zip(node.output, results):
        if name:
            state.constants[name] = np.asarray(value)


def _output(state: OnnxTranslation, name: str) -> str:
    """The IR tensor of graph output ``name``, keeping the ONNX name when it was aliased."""
    if name in state.constants:
        raise UnsupportedError(f"output {name!r} is a constant; it does not depend on the input")
    source = state.tensor(name, _GraphOutput(name))
    if source == name:
        return name
    append_node(
        state.graph.nodes,
        state.taken,
        "identity",
        f"{name}_identity",
        [source],
        [name],
        source="onnx output",
    )
    return name


@dataclass(frozen=True)
class _GraphOutput:
    """Stands in for a node in error messages about a graph output."""

    name: str
    op_type: str = "graph output"
