"""What every ONNX converter shares: the translation state (``OnnxTranslation``), the
converter table, node attributes and constants, and the geometry helpers that convolution and
pooling both need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ...errors import UnsupportedError, first_line
from ...ir import Graph, Node
from ...passes import same_pads
from ...registry import Registry
from ..common.builder import append_node

MIN_OPSET = 13
DEFAULT_DOMAINS = ("", "ai.onnx")
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
#: ops never evaluated at conversion time, even on constants: a random draw is not a weight
RANDOM_OPS = (
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Bernoulli",
    "Multinomial",
)

Converter = Callable[["OnnxTranslation", Any, dict], None]
CONVERTERS = Registry("converter for ONNX op")
#: ONNX op type (default domain) -> converter
converts = CONVERTERS.register


def default_opset(model: Any) -> int:
    """The default-domain opset, refused below 13 (older Softmax/Squeeze semantics)."""
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    opset = max(versions, default=0)
    if opset < MIN_OPSET:
        raise UnsupportedError(
            f"ONNX opset {opset} is older than {MIN_OPSET}: convert it first "
            f"(onnx.version_converter.convert_version(model, {MIN_OPSET}))"
        )
    return opset


def static_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Full static shape of every tensor, from ONNX shape inference with the batch pinned."""
    import onnx

    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    for value in (*pinned.graph.input, *pinned.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    try:
        inferred = onnx.shape_inference.infer_shapes(pinned, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise UnsupportedError(f"ONNX shape inference failed: {first_line(exc)}") from None
    shapes = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        tensor_type = value.type.tensor_type
        dims = tensor_type.shape.dim
        if tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


# -- the translation state -----------------------------------------------------------------


@dataclass(frozen=True)
class PendingTranspose:
    """A transpose not written yet: ``source`` (ONNX tensor) permuted by ``perm``."""

    source: str
    perm: tuple[int, ...]
    node: str


@dataclass
class OnnxTranslation:
    """What converters read (constants, shapes, uses) and write (IR nodes, tensor names)."""

    graph: Graph
    shapes: dict[str, tuple[int, ...]]
    constants: dict[str, np.ndarray]
    uses: dict[str, int]  # readers of each tensor (node inputs and graph outputs)
    opset: int
    model_outputs: tuple[str, ...] = ()
    #: ONNX tensor -> IR tensor, for every activation converted so far
    tensors: dict[str, str] = field(default_factory=dict)
    transposes: dict[str, PendingTranspose] = field(default_factory=dict)
    #: IR node name -> names of the constants (initializers) it took its weights from
    weight_sources: dict[str, set[str]] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)

    # reading ------------------------------------------------------------------------------

    def tensor(self, name: str, node: Any) -> str:
        """IR tensor of an activation input of ``node``."""
        if name in self.tensors:
            return self.tensors[name]
        if name in self.transposes:
            pending = self.transposes[name]
            raise UnsupportedError(
                f"Transpose node {pending.node!r} (perm {list(pending.perm)}) feeds {where(node)}, "
                "which needs channel-first data; only transposes that cancel out, reorder before "
                "a Flatten, or move size-1 axes can be folded"
            )
        if name in self.constants:
            raise UnsupportedError(
                f"{where(node)} takes constant {name!r} where it needs an "
                "activation; Core ML layers only take weights in their own slots"
            )
        raise UnsupportedError(f"{where(node)} reads {name!r}, which no converted node produced")

    def constant(self, node: Any, index: int) -> Optional[np.ndarray]:
        """Input ``index`` of ``node`` as a constant array; None when the optional input is absent."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.constants:
            raise UnsupportedError(
                f"{where(node)}: input {index} ({name!r}) is computed in the "
                "graph; it must be a constant (an initializer)"
            )
        return self.constants[name]

    def required_constant(self, node: Any, index: int) -> np.ndarray:
        """``constant(node, index)`` for an input the operator cannot do without."""
        value = self.constant(node, index)
        if value is None:
            raise UnsupportedError(
                f"{where(node)}: input {index} is missing; it must be a constant (an initializer)"
            )
        return value

    def full_shape(self, name: str, node: Any) -> tuple[int, ...]:
        shape = self.shapes.get(name)
        if shape is None:
            raise UnsupportedError(
                f"{where(node)}: the shape of {name!r} is not static; export the "
                "ONNX model with static shapes (only the batch may be dynamic)"
            )
        return shape

    def example_shape(self, name: str, node: Any) -> tuple[int, ...]:
        """Per-example (IR) shape: the batch axis dropped."""
        return self.full_shape(name, node)[1:]

    # writing ------------------------------------------------------------------------------

    def emit(
        self,
        node: Any,
        op: str,
        inputs: list[str],
        *,
        attrs: Optional[dict] = None,
        weights: Optional[dict[str, Optional[np.ndarray]]] = None,
        suffix: str = "",
        output: Optional[str] = None,
    ) -> Node:
        """Append an IR node for ONNX ``node``; it writes ONNX output 0 unless ``output`` names
        another tensor (the intermediate of a node written as two IR nodes)."""
        tensor = output or node.output[0]
        kept = {
            role: np.ascontiguousarray(array, dtype=np.float32)
            for role, array in (weights or {}).items()
            if array is not None
        }
        ir = append_node(
            self.graph.nodes,
            self.taken,
            op,
            node.name + suffix,
            inputs,
            [tensor],
            attrs=attrs,
            weights=kept,
            source=f"onnx.{node.op_type}",
        )
        self.tensors[tensor] = tensor
        if kept:
            self.weight_sources[ir.name] = {n for n in node.input if n in self.constants}
        return ir

    def alias(self, node: Any, source: str) -> None:
        """ONNX output 0 of ``node`` computes nothing: it is IR tensor ``source``."""
        self.tensors[node.output[0]] = source


def where(node: Any) -> str:
    return f"node {node.name!r} ({node.op_type})"


def node_attrs(node: Any) -> dict[str, Any]:
    """The node's attributes as Python values (strings decoded)."""
    from onnx import helper

    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        values[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return values


def number(value: np.ndarray) -> float:
    """A one-element constant (any rank) as a float."""
    return float(np.asarray(value).reshape(-1)[0])


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _unused(state: OnnxTranslation, node: Any, what: str) -> None:
    """Refuse when an extra output of ``node`` (a mask, indices, statistics) is read."""
    for name in node.output[1:]:
        if name and state.uses.get(name):
            raise UnsupportedError(
                f"{where(node)}: its {what} output {name!r} is used; only the "
                "main result can be exported"
            )


# -- geometry convolution and pooling share -----------------------------------------------


def explicit_pads(
    node: Any,
    attrs: dict,
    hw: tuple[int, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
) -> tuple[int, int, int, int]:
    """ONNX ``auto_pad``/``pads`` as IR (top, bottom, left, right)."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        (top, bottom), (left, right) = (
            same_pads(hw[i], kernel[i], strides[i], dilations[i]) for i in range(2)
        )
        if auto == "SAME_LOWER":  # the odd pixel goes to the start
            top, bottom, left, right = bottom, top, right, left
        return (top, bottom, left, right)
    pads = tuple(int(p) for p in attrs.get("pads", (0, 0, 0, 0)))
    if len(pads) != 4 or min(pads) < 0:
        raise UnsupportedError(
            f"{where(node)}: pads {list(pads)} are not 2-D (h_begin, w_begin, h_end, w_end) >= 0"
        )
    return (pads[0], pads[2], pads[1], pads[3])


def _image_input(state: OnnxTranslation, node: Any) -> tuple[int, int, int]:
    """Input 0's per-example (C, H, W), refused for other ranks (1-D/3-D convs and pools)."""
    shape = state.example_shape(node.input[0], node)
    if len(shape) != 3:
        raise UnsupportedError(
            f"{where(node)} works on a rank-{len(shape) + 1} tensor; only 2-D "
            "(batch, channels, height, width) is supported"
        )
    return shape
