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

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ...errors import ConfigError, UnsupportedError, UpdatableCoreMLError, first_line
from ...ir import Graph, Node, TensorSpec
from ...passes import same_pads
from ...registry import Registry
from ..common import ceil_mode_padding, unique_name

MIN_OPSET = 13
DEFAULT_DOMAINS = ("", "ai.onnx")
FLOAT_MAX = float(np.finfo(np.float32).max)
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
#: ops never evaluated at conversion time, even on constants: a random draw is not a weight
RANDOM_OPS = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "Bernoulli", "Multinomial")

Converter = Callable[["OnnxTranslation", Any], None]
CONVERTERS = Registry("converter for ONNX op")
#: ONNX op type (default domain) -> converter
converts = CONVERTERS.register


def default_opset(model: Any) -> int:
    """The default-domain opset, refused below 13 (older Softmax/Squeeze semantics)."""
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    opset = max(versions, default=0)
    if opset < MIN_OPSET:
        raise UnsupportedError(f"ONNX opset {opset} is older than {MIN_OPSET}: convert it first "
                               f"(onnx.version_converter.convert_version(model, {MIN_OPSET}))")
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
                "a Flatten, or move size-1 axes can be folded")
        if name in self.constants:
            raise UnsupportedError(f"{where(node)} takes constant {name!r} where it needs an "
                                   "activation; Core ML layers only take weights in their own slots")
        raise UnsupportedError(f"{where(node)} reads {name!r}, which no converted node produced")

    def constant(self, node: Any, index: int) -> Optional[np.ndarray]:
        """Input ``index`` of ``node`` as a constant array; None when the optional input is absent."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.constants:
            raise UnsupportedError(f"{where(node)}: input {index} ({name!r}) is computed in the "
                                   "graph; it must be a constant (an initializer)")
        return self.constants[name]

    def full_shape(self, name: str, node: Any) -> tuple[int, ...]:
        shape = self.shapes.get(name)
        if shape is None:
            raise UnsupportedError(f"{where(node)}: the shape of {name!r} is not static; export the "
                                   "ONNX model with static shapes (only the batch may be dynamic)")
        return shape

    def example_shape(self, name: str, node: Any) -> tuple[int, ...]:
        """Per-example (IR) shape: the batch axis dropped."""
        return self.full_shape(name, node)[1:]

    # writing ------------------------------------------------------------------------------

    def emit(self, node: Any, op: str, inputs: list[str], *, attrs: Optional[dict] = None,
             weights: Optional[dict[str, Optional[np.ndarray]]] = None, suffix: str = "",
             output: Optional[str] = None) -> Node:
        """Append an IR node for ONNX ``node``; it writes ONNX output 0 unless ``output`` names
        another tensor (the intermediate of a node written as two IR nodes)."""
        name = unique_name(self.taken, node.name + suffix)
        tensor = output or node.output[0]
        kept = {role: np.ascontiguousarray(array, dtype=np.float32)
                for role, array in (weights or {}).items() if array is not None}
        ir = Node(op=op, name=name, inputs=inputs, outputs=[tensor], attrs=dict(attrs or {}),
                  weights=kept, source=f"onnx.{node.op_type}")
        self.graph.nodes.append(ir)
        self.tensors[tensor] = tensor
        if kept:
            self.weight_sources[name] = {n for n in node.input if n in self.constants}
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
            raise UnsupportedError(f"{where(node)}: its {what} output {name!r} is used; only the "
                                   "main result can be exported")


# -- translation driver --------------------------------------------------------------------


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
    _apply_image_input(inputs, image_input)
    state = OnnxTranslation(Graph(inputs, []), shapes, constants, uses, opset,
                            tuple(value.name for value in model.graph.output))
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
        raise UnsupportedError(f"input {value.name!r} is of ONNX type "
                               f"{TensorProto.DataType.Name(elem_type)}; Core ML network inputs "
                               "here are float32 tensors")


def _input_spec(value: Any, shapes: dict[str, tuple[int, ...]]) -> TensorSpec:
    shape = shapes.get(value.name)
    if shape is None or len(shape) < 2:
        raise UnsupportedError(f"input {value.name!r} needs a static shape (batch, features...); "
                               "only the batch dimension may be dynamic")
    return TensorSpec(value.name, shape[1:])


def _apply_image_input(inputs: list[TensorSpec], image_input: Optional[dict]) -> None:
    """Make one input an image: ``image_input`` is ``{"name"?, "color", "scale", "bias"}``."""
    if not image_input:
        return
    options = dict(image_input)
    name = options.pop("name", None) or inputs[0].name
    spec = next((s for s in inputs if s.name == name), None)
    if spec is None:
        raise ConfigError(f"image_input names {name!r}, but the model's inputs are "
                          f"{[s.name for s in inputs]}")
    spec.image = options


def _convert(state: OnnxTranslation, node: Any) -> None:
    if node.domain not in DEFAULT_DOMAINS:
        raise UnsupportedError(f"{where(node)} is from operator domain {node.domain!r}; only "
                               "standard ONNX ops can be exported")
    if _foldable(state, node):
        _fold(state, node)
        return
    fn = CONVERTERS.get(node.op_type)
    if fn is None:
        raise UnsupportedError(f"{where(node)}: ONNX op {node.op_type!r} has no Core ML converter; "
                               "replace it with a supported op (see the ONNX exporter's op list)")
    try:
        fn(state, node)
    except UpdatableCoreMLError:
        raise
    except Exception as exc:  # a converter bug or an unexpected attribute form: name the node
        raise UnsupportedError(f"{where(node)} could not be converted ({type(exc).__name__}: "
                               f"{first_line(exc)}); please report it with the model") from exc


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
        state.constants[node.output[0]] = dims[a.get("start", 0):a.get("end", len(dims))]
        return
    from onnx.reference import ReferenceEvaluator

    feeds = {name: state.constants[name] for name in node.input if name}
    try:
        results = ReferenceEvaluator(node, opsets={"": state.opset}).run(None, feeds)
    except Exception as exc:
        raise UnsupportedError(f"{where(node)}: cannot evaluate it on its constant inputs "
                               f"({type(exc).__name__}: {first_line(exc)})") from None
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
    state.graph.nodes.append(Node("identity", unique_name(state.taken, f"{name}_identity"), [source], [name],
                                  source="onnx output"))
    return name


@dataclass(frozen=True)
class _GraphOutput:
    """Stands in for a node in error messages about a graph output."""

    name: str
    op_type: str = "graph output"


# -- layers with weights -------------------------------------------------------------------


def _vector_input(state: OnnxTranslation, node: Any) -> str:
    """Input 0 of a dense-like node, refused unless it is (batch, features)."""
    shape = state.full_shape(node.input[0], node)
    if len(shape) != 2:
        raise UnsupportedError(f"{where(node)} multiplies a rank-{len(shape)} tensor; Core ML's "
                               "innerProduct needs a flat (batch, features) input: flatten before it")
    return state.tensor(node.input[0], node)


@converts("Gemm")
def _gemm(state: OnnxTranslation, node: Any) -> None:
    a = node_attrs(node)
    if a.get("transA", 0):
        raise UnsupportedError(f"{where(node)}: transA=1 transposes the batch; export A as (batch, features)")
    x = _vector_input(state, node)
    weight = state.constant(node, 1)
    weight = float(a.get("alpha", 1.0)) * (weight if a.get("transB", 0) else weight.T)
    bias = state.constant(node, 2)
    vector = None if bias is None else _per_output(float(a.get("beta", 1.0)) * bias, weight.shape[0])
    if bias is not None and vector is None:
        raise UnsupportedError(f"{where(node)}: bias of shape {list(bias.shape)} differs per "
                               f"example; expected ({weight.shape[0]},)")
    state.emit(node, "dense", [x], weights={"weight": weight, "bias": vector})


def _per_output(bias: np.ndarray, size: int) -> Optional[np.ndarray]:
    """A constant that adds the same (size,) vector to every example of (batch, size), as that
    vector; None when it differs per example."""
    if bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1) or bias.size not in (1, size):
        return None
    return np.broadcast_to(bias.reshape(-1), (size,))


@converts("MatMul")
def _matmul(state: OnnxTranslation, node: Any) -> None:
    """``x @ W`` with a constant ``W`` (in, out); a following ``Add`` of a constant becomes
    its bias (see ``_fold_bias``)."""
    weight = state.constant(node, 1)
    if weight.ndim != 2:
        raise UnsupportedError(f"{where(node)}: the constant operand has shape {list(weight.shape)}; "
                               "only (in, out) matrices map to innerProduct")
    state.emit(node, "dense", [_vector_input(state, node)], weights={"weight": weight.T})


def _fold_bias(state: OnnxTranslation, node: Any, x: str, constant: np.ndarray) -> bool:
    """Fold ``Add(MatMul(x, W), b)`` into the dense layer's bias when nothing else reads the
    product. Returns whether it did."""
    producer = state.graph.producer(state.tensors.get(x, ""))
    if (producer is None or producer.source != "onnx.MatMul" or "bias" in producer.weights
            or state.uses.get(x, 0) != 1):
        return False
    vector = _per_output(constant, producer.weights["weight"].shape[0])
    if vector is None:
        return False
    producer.weights["bias"] = np.ascontiguousarray(vector, dtype=np.float32)
    producer.outputs = [node.output[0]]
    state.tensors[node.output[0]] = node.output[0]
    state.weight_sources[producer.name] |= {n for n in node.input if n in state.constants}
    return True


def explicit_pads(node: Any, attrs: dict, hw: tuple[int, ...], kernel: tuple[int, ...],
                  strides: tuple[int, ...], dilations: tuple[int, ...]) -> tuple[int, int, int, int]:
    """ONNX ``auto_pad``/``pads`` as IR (top, bottom, left, right)."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        (top, bottom), (left, right) = (same_pads(hw[i], kernel[i], strides[i], dilations[i])
                                        for i in range(2))
        if auto == "SAME_LOWER":  # the odd pixel goes to the start
            top, bottom, left, right = bottom, top, right, left
        return (top, bottom, left, right)
    pads = tuple(int(p) for p in attrs.get("pads", (0, 0, 0, 0)))
    if len(pads) != 4 or min(pads) < 0:
        raise UnsupportedError(f"{where(node)}: pads {list(pads)} are not 2-D (h_begin, w_begin, "
                               "h_end, w_end) >= 0")
    return (pads[0], pads[2], pads[1], pads[3])


def _image_input(state: OnnxTranslation, node: Any) -> tuple[int, int, int]:
    """Input 0's per-example (C, H, W), refused for other ranks (1-D/3-D convs and pools)."""
    shape = state.example_shape(node.input[0], node)
    if len(shape) != 3:
        raise UnsupportedError(f"{where(node)} works on a rank-{len(shape) + 1} tensor; only 2-D "
                               "(batch, channels, height, width) is supported")
    return shape


@converts("Conv")
def _conv(state: OnnxTranslation, node: Any) -> None:
    a = node_attrs(node)
    _, height, width = _image_input(state, node)
    weight = state.constant(node, 1)
    strides = tuple(a.get("strides", (1, 1)))
    dilations = tuple(a.get("dilations", (1, 1)))
    pads = explicit_pads(node, a, (height, width), weight.shape[2:], strides, dilations)
    state.emit(node, "conv2d", [state.tensor(node.input[0], node)],
               attrs={"strides": strides, "dilations": dilations, "groups": int(a.get("group", 1)),
                      "padding": pads},
               weights={"weight": weight, "bias": state.constant(node, 2)})


@converts("BatchNormalization")
def _batchnorm(state: OnnxTranslation, node: Any) -> None:
    a = node_attrs(node)
    if a.get("training_mode", 0):
        raise UnsupportedError(f"{where(node)} is in training mode (batch statistics); export "
                               "the model in eval mode")
    _unused(state, node, "running statistics")
    gamma, beta, mean, variance = (state.constant(node, i) for i in range(1, 5))
    state.emit(node, "batchnorm", [state.tensor(node.input[0], node)],
               attrs={"eps": float(a.get("epsilon", 1e-5))},
               weights={"gamma": gamma, "beta": beta, "mean": mean, "variance": variance})


# -- activations ---------------------------------------------------------------------------


def _activation(kind: str, **defaults: float) -> Converter:
    """Converter of an ONNX activation whose attributes (``alpha``, ``beta``) keep their name."""

    def convert(state: OnnxTranslation, node: Any) -> None:
        a = node_attrs(node)
        attrs = {"kind": kind, **{key: float(a.get(key, value)) for key, value in defaults.items()}}
        _elementwise_activation(state, node, attrs)

    return convert


def _elementwise_activation(state: OnnxTranslation, node: Any, attrs: dict) -> None:
    """An activation; on a pending transpose it runs on the untransposed data and the
    transpose stays pending (they commute), so a later inverse transpose can still cancel."""
    pending = state.transposes.get(node.input[0])
    if pending is None:
        state.emit(node, "activation", [state.tensor(node.input[0], node)], attrs=attrs)
        return
    untransposed = f"{node.output[0]}_untransposed"
    state.emit(node, "activation", [state.tensor(pending.source, node)], attrs=attrs,
               output=untransposed)
    state.shapes[untransposed] = state.full_shape(pending.source, node)
    state.transposes[node.output[0]] = dataclasses.replace(pending, source=untransposed)


for _op, _kind, _defaults in (("Relu", "relu", {}), ("Sigmoid", "sigmoid", {}), ("Tanh", "tanh", {}),
                              ("Softplus", "softplus", {}), ("LeakyRelu", "leaky_relu", {"alpha": 0.01}),
                              ("Elu", "elu", {"alpha": 1.0}),
                              ("HardSigmoid", "hard_sigmoid", {"alpha": 0.2, "beta": 0.5})):
    converts(_op)(_activation(_kind, **_defaults))


@converts("Clip")
def _clip(state: OnnxTranslation, node: Any) -> None:
    low, high = (state.constant(node, i) for i in (1, 2))
    low = -FLOAT_MAX if low is None else number(low)
    high = FLOAT_MAX if high is None else number(high)
    if (low, high) == (0.0, FLOAT_MAX):
        attrs: dict = {"kind": "relu"}
    elif (low, high) == (0.0, 6.0):
        attrs = {"kind": "relu6"}
    else:
        attrs = {"kind": "clip", "min": low, "max": high}
    _elementwise_activation(state, node, attrs)


# -- pooling -------------------------------------------------------------------------------


def _pool(kind: str) -> Converter:
    def convert(state: OnnxTranslation, node: Any) -> None:
        a = node_attrs(node)
        _unused(state, node, "indices")
        _, height, width = _image_input(state, node)
        kernel = tuple(int(k) for k in a["kernel_shape"])
        strides = tuple(int(s) for s in a.get("strides", (1, 1)))
        if tuple(a.get("dilations", (1, 1))) != (1, 1):
            raise UnsupportedError(f"{where(node)}: dilated pooling is not supported")
        pads = explicit_pads(node, a, (height, width), kernel, strides, (1, 1))
        include_pad = kind == "avg" and bool(a.get("count_include_pad", 0))
        if a.get("ceil_mode", 0):
            pads = _ceil_pads(node, pads, (height, width), kernel, strides, include_pad)
        state.emit(node, "pool2d", [state.tensor(node.input[0], node)],
                   attrs={"kind": kind, "kernel": kernel, "strides": strides, "padding": pads,
                          "global": False, "count_include_pad": include_pad})

    return convert


converts("MaxPool")(_pool("max"))
converts("AveragePool")(_pool("avg"))


def _ceil_pads(node: Any, pads: tuple[int, int, int, int], hw: tuple[int, int],
               kernel: tuple[int, ...], strides: tuple[int, ...],
               include_pad: bool) -> tuple[int, int, int, int]:
    """Explicit pads that give ceil-mode output sizes with floor-mode Core ML pooling."""
    top, bottom, left, right = pads
    if top != bottom or left != right:
        raise UnsupportedError(f"{where(node)}: ceil_mode with asymmetric pads is not supported")
    extra_h = ceil_mode_padding(hw[0], kernel[0], strides[0], top)
    extra_w = ceil_mode_padding(hw[1], kernel[1], strides[1], left)
    if include_pad and (extra_h or extra_w):
        raise UnsupportedError(f"{where(node)}: ceil_mode with count_include_pad=1 counts the "
                               "padding but not the ceil-mode overhang, which Core ML cannot "
                               "express; use count_include_pad=0 or ceil_mode=0")
    return (top, bottom + extra_h, left, right + extra_w)


def _global_pool(kind: str) -> Converter:
    def convert(state: OnnxTranslation, node: Any) -> None:
        _global(state, node, kind, keep_dims=True)

    return convert


def _global(state: OnnxTranslation, node: Any, kind: str, keep_dims: bool) -> None:
    """Global pooling; without ``keep_dims`` followed by a flatten to (batch, channels)."""
    _, height, width = _image_input(state, node)
    pooled = node.output[0] if keep_dims else f"{node.output[0]}_pooled"
    state.emit(node, "pool2d", [state.tensor(node.input[0], node)], output=pooled,
               suffix="" if keep_dims else "_pool",
               attrs={"kind": kind, "kernel": (height, width), "strides": (1, 1),
                      "padding": "valid", "global": True, "count_include_pad": False})
    if not keep_dims:
        state.emit(node, "flatten", [pooled])


converts("GlobalAveragePool")(_global_pool("avg"))
converts("GlobalMaxPool")(_global_pool("max"))


def _reduce(kind: str) -> Converter:
    """ReduceMean/ReduceMax over the spatial axes of (N, C, H, W): global pooling."""

    def convert(state: OnnxTranslation, node: Any) -> None:
        a = node_attrs(node)
        rank = len(state.full_shape(node.input[0], node))
        axes = a.get("axes")
        if axes is None:
            axes = state.constant(node, 1)
        axes = sorted(_axis(int(v), rank) for v in (axes if axes is not None else range(rank)))
        if rank != 4 or axes != [2, 3]:
            raise UnsupportedError(f"{where(node)} reduces axes {axes} of a rank-{rank} tensor; only "
                                   "the spatial axes [2, 3] of (N, C, H, W) (global pooling) are supported")
        _global(state, node, kind, keep_dims=bool(a.get("keepdims", 1)))

    return convert


converts("ReduceMean")(_reduce("avg"))
converts("ReduceMax")(_reduce("max"))


# -- shape ops -----------------------------------------------------------------------------


def _reshape_to(state: OnnxTranslation, node: Any, source: str) -> None:
    """Any shape change that keeps the batch axis: none, a flatten, or a reshape."""
    before = _source_shape(state, node, source)
    after = state.full_shape(node.output[0], node)
    if after[:1] != before[:1]:
        raise UnsupportedError(f"{where(node)} reshapes across the batch axis ({list(before)} -> "
                               f"{list(after)}); keep axis 0 as the batch")
    pending = state.transposes.get(source)
    if pending is not None and pending.perm == NCHW_TO_NHWC and len(after) == 2:
        state.emit(node, "flatten", [state.tensor(pending.source, node)], attrs={"order": "hwc"})
    elif after == before:
        state.alias(node, state.tensor(source, node))
    elif len(after) == 2:
        state.emit(node, "flatten", [state.tensor(source, node)])
    else:
        state.emit(node, "reshape", [state.tensor(source, node)], attrs={"shape": after[1:]})


def _source_shape(state: OnnxTranslation, node: Any, source: str) -> tuple[int, ...]:
    pending = state.transposes.get(source)
    if pending is None:
        return state.full_shape(source, node)
    shape = state.full_shape(pending.source, node)
    return tuple(shape[i] for i in pending.perm)


@converts("Reshape", "Squeeze", "Unsqueeze")
def _reshape(state: OnnxTranslation, node: Any) -> None:
    _reshape_to(state, node, node.input[0])


@converts("Flatten")
def _flatten(state: OnnxTranslation, node: Any) -> None:
    rank = len(_source_shape(state, node, node.input[0]))
    if _axis(int(node_attrs(node).get("axis", 1)), rank) != 1:
        raise UnsupportedError(f"{where(node)}: Flatten must keep axis 0 as the batch (axis=1)")
    _reshape_to(state, node, node.input[0])


@converts("Transpose")
def _transpose(state: OnnxTranslation, node: Any) -> None:
    source = node.input[0]
    rank = len(_source_shape(state, node, source))
    perm = tuple(int(p) for p in node_attrs(node).get("perm", range(rank - 1, -1, -1)))
    pending = state.transposes.get(source)
    if pending is not None:  # transpose of a transpose: one permutation of the original
        source, perm = pending.source, tuple(pending.perm[i] for i in perm)
    if perm[0] != 0:
        raise UnsupportedError(f"{where(node)} moves the batch axis (perm {list(perm)})")
    if perm == tuple(range(rank)):
        state.alias(node, state.tensor(source, node))
    elif _keeps_order(state.full_shape(source, node), perm):
        _reshape_to(state, node, source)
    elif perm == NHWC_TO_NCHW and _is_sole_input_reader(state, source):
        _channel_first_input(state, node, source)
    else:
        state.transposes[node.output[0]] = PendingTranspose(source, perm, node.name)


def _keeps_order(shape: tuple[int, ...], perm: tuple[int, ...]) -> bool:
    """Whether the permutation only moves size-1 axes (the data order is unchanged)."""
    moved = [axis for axis in perm if shape[axis] != 1]
    return moved == sorted(moved)


def _is_sole_input_reader(state: OnnxTranslation, source: str) -> bool:
    return any(spec.name == source for spec in state.graph.inputs) and state.uses.get(source) == 1


def _channel_first_input(state: OnnxTranslation, node: Any, source: str) -> None:
    """NHWC input -> NCHW: declare the Core ML input channel-first instead of transposing."""
    inputs = state.graph.inputs
    index = next(i for i, spec in enumerate(inputs) if spec.name == source)
    height, width, channels = inputs[index].shape
    inputs[index] = dataclasses.replace(inputs[index], shape=(channels, height, width))
    state.alias(node, source)
    state.graph.notes.append(f"input {source!r} is channel-first ({channels}, {height}, {width}) in "
                             f"Core ML: the ONNX model's NHWC -> NCHW transpose {node.name!r} was "
                             "folded into it")


@converts("Concat")
def _concat(state: OnnxTranslation, node: Any) -> None:
    rank = len(state.full_shape(node.output[0], node))
    if _axis(int(node_attrs(node)["axis"]), rank) != 1:
        raise UnsupportedError(f"{where(node)} concatenates along axis {node_attrs(node)['axis']}; "
                               "Core ML's concat works on the channel axis (1) only")
    if len(node.input) == 1:  # Core ML refuses a concat layer with fewer than 2 inputs
        state.alias(node, state.tensor(node.input[0], node))
        return
    state.emit(node, "concat", [state.tensor(name, node) for name in node.input])


@converts("Pad")
def _pad(state: OnnxTranslation, node: Any) -> None:
    mode = node_attrs(node).get("mode", "constant")
    if mode != "constant":
        raise UnsupportedError(f"{where(node)}: {mode!r} padding is not supported, only constant")
    rank = len(state.full_shape(node.input[0], node))
    pads = [int(p) for p in state.constant(node, 1)]
    value = state.constant(node, 2)
    axes = state.constant(node, 3)
    begins, ends = [0] * rank, [0] * rank
    for i, axis in enumerate(range(rank) if axes is None else (_axis(int(v), rank) for v in axes)):
        begins[axis], ends[axis] = pads[i], pads[i + len(pads) // 2]
    if rank != 4 or begins[:2] != [0, 0] or ends[:2] != [0, 0] or min(begins + ends) < 0:
        raise UnsupportedError(f"{where(node)}: only non-negative padding of height and width of "
                               f"(N, C, H, W) is supported, got pads {pads}")
    state.emit(node, "pad", [state.tensor(node.input[0], node)],
               attrs={"pads": (begins[2], ends[2], begins[3], ends[3]),
                      "value": 0.0 if value is None else number(value)})


@converts("Identity")
def _identity(state: OnnxTranslation, node: Any) -> None:
    state.alias(node, state.tensor(node.input[0], node))


@converts("Dropout")
def _dropout(state: OnnxTranslation, node: Any) -> None:
    training = state.constant(node, 2)
    if training is not None and number(training):
        raise UnsupportedError(f"{where(node)} is in training mode; export the model in eval mode")
    _unused(state, node, "mask")
    ratio = state.constant(node, 1)
    state.emit(node, "dropout", [state.tensor(node.input[0], node)],
               attrs={"rate": 0.5 if ratio is None else number(ratio)})


# -- softmax -------------------------------------------------------------------------------


def _channel_axis(state: OnnxTranslation, node: Any, what: str) -> None:
    rank = len(state.full_shape(node.input[0], node))
    axis = _axis(int(node_attrs(node).get("axis", -1)), rank)
    if axis != 1 or rank not in (2, 4):
        raise UnsupportedError(f"{where(node)}: {what} over axis {axis} of a rank-{rank} tensor; "
                               "Core ML's layer works on the channel axis (1) of (N, C) or (N, C, H, W)")


@converts("Softmax")
def _softmax(state: OnnxTranslation, node: Any) -> None:
    _channel_axis(state, node, "softmax")
    state.emit(node, "softmax", [state.tensor(node.input[0], node)])


@converts("LogSoftmax")
def _log_softmax(state: OnnxTranslation, node: Any) -> None:
    """Only as the model output, written as softmax: softmax(log_softmax(x)) == softmax(x), so
    cross-entropy on the probabilities trains like NLL on the log-probabilities."""
    _channel_axis(state, node, "log-softmax")
    if state.uses.get(node.output[0]) != 1 or node.output[0] not in state.model_outputs:
        raise UnsupportedError(f"{where(node)} feeds other nodes; Core ML has no log-softmax "
                               "layer: it is only supported as the model's output (exported as softmax)")
    state.emit(node, "softmax", [state.tensor(node.input[0], node)])
    state.graph.notes.append(f"LogSoftmax {node.name!r} exported as softmax: the model outputs "
                             "probabilities, not log-probabilities")


# -- elementwise ---------------------------------------------------------------------------


def _per_channel(state: OnnxTranslation, node: Any, x: str, constant: np.ndarray) -> Optional[np.ndarray]:
    """``constant`` as a (C,) vector when it broadcasts over ``x`` one value per channel."""
    shape = state.full_shape(x, node)
    if constant.ndim > len(shape):
        return None
    full = constant.reshape((1,) * (len(shape) - constant.ndim) + constant.shape)
    if full.shape[1] not in (1, shape[1]) or any(d != 1 for i, d in enumerate(full.shape) if i != 1):
        return None
    return np.broadcast_to(full.reshape(-1), (shape[1],))


def _elementwise(op: str) -> Converter:
    """Add/Sub/Mul/Div: of two same-shaped activations (Add/Mul), or of an activation and a
    constant scalar (a linear activation) or per-channel constant (a scale layer)."""

    def convert(state: OnnxTranslation, node: Any) -> None:
        left, right = node.input
        if left not in state.constants and right not in state.constants:
            _binary(state, node, {"Add": "add", "Mul": "mul"}.get(op))
            return
        swapped = left in state.constants
        if swapped and op in ("Sub", "Div"):
            raise UnsupportedError(f"{where(node)}: only an activation {op.lower()} a constant is "
                                   f"supported, not a constant {op.lower()} an activation")
        x, constant = (right, state.constants[left]) if swapped else (left, state.constants[right])
        constant = constant.astype(np.float64)
        if op == "Add" and _fold_bias(state, node, x, constant):
            return
        scale, bias = {"Add": (1.0, constant), "Sub": (1.0, -constant),
                       "Mul": (constant, 0.0), "Div": (1.0 / constant, 0.0)}[op]
        _affine(state, node, x, scale, bias)

    return convert


def _affine(state: OnnxTranslation, node: Any, x: str, scale: Any, bias: Any) -> None:
    """``x * scale + bias`` with scalar or per-channel constants."""
    scale, bias = np.asarray(scale, np.float64), np.asarray(bias, np.float64)
    if scale.size == 1 and bias.size == 1:
        state.emit(node, "activation", [state.tensor(x, node)],
                   attrs={"kind": "linear", "alpha": float(scale.reshape(-1)[0]),
                          "beta": float(bias.reshape(-1)[0])})
        return
    channel_scale = _per_channel(state, node, x, scale)
    channel_bias = _per_channel(state, node, x, bias)
    if channel_scale is None or channel_bias is None:
        raise UnsupportedError(f"{where(node)}: the constant of shape "
                               f"{list((scale if scale.size > 1 else bias).shape)} does not "
                               "broadcast per channel; only scalars and per-channel constants are supported")
    state.emit(node, "scale", [state.tensor(x, node)],
               weights={"scale": channel_scale, "bias": channel_bias})


def _binary(state: OnnxTranslation, node: Any, op: Optional[str]) -> None:
    if op is None:
        raise UnsupportedError(f"{where(node)} of two activations is not supported (only Add and Mul)")
    shapes = [state.full_shape(name, node) for name in node.input]
    if shapes[0] != shapes[1]:
        raise UnsupportedError(f"{where(node)} of tensors shaped {list(shapes[0])} and "
                               f"{list(shapes[1])}: broadcasting is not supported")
    state.emit(node, op, [state.tensor(name, node) for name in node.input])


for _op in ("Add", "Sub", "Mul", "Div"):
    converts(_op)(_elementwise(_op))

