"""Translate a captured ``torch.export`` program into the IR: one converter per aten op.

Every ``call_function`` node of the program is looked up in ``CONVERTERS`` by its aten op
name (``"conv2d"``, ``"relu_"``); an op without a converter is an ``UnsupportedError`` that
names the op and the module it came from, never a silent skip. Converters read their
arguments by schema name (``args["stride"]``) so positional/keyword/default forms look alike,
and they know tensor shapes from the program's fake-tensor metadata.

Layouts need no conversion: torch is already channel-first. IR shapes are per example, so
the batch axis (axis 0 of every torch activation) is dropped and axis 1 is the IR channel.
IR layer names are the user's module paths (``layer4.1.conv2``); an op that is not the call
of a ``torch.nn`` module is named ``<module path>.<op>`` (``layer1.0.add``).

torch is imported by the caller; this module only touches the objects it is handed.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ...errors import ConfigError, UnsupportedError, UpdatableCoreMLError, first_line
from ...ir import Graph, Node, TensorSpec
from ...registry import Registry
from ..common import ceil_mode_padding, unique_name

Converter = Callable[["Translation", Any, dict], None]
CONVERTERS = Registry("converter for aten op")

#: aten ops that compute nothing the model needs (shape asserts export inserts).
_IGNORED = {"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size"}


#: aten op name (overload-independent) -> converter
converter = CONVERTERS.register


# -- the translation state -----------------------------------------------------------------


@dataclass
class Translation:
    """What converters read (the program) and write (IR nodes, tensor names, notes)."""

    program: Any
    graph: Graph
    #: fx node name -> IR tensor name (activations) for every converted node
    tensors: dict[str, str] = field(default_factory=dict)
    #: fx placeholder name -> fully qualified parameter/buffer/constant name
    state_names: dict[str, str] = field(default_factory=dict)
    #: IR node name -> {weight role: parameter fqn}, to map trainable parameters onto layers
    node_params: dict[str, dict[str, str]] = field(default_factory=dict)
    #: IR node name -> fx node, for error messages that name the module
    origin: dict[str, Any] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)
    #: IR softmax nodes that stand for the model's log_softmax output
    log_softmax: set[str] = field(default_factory=set)
    #: fx node name -> (array, fqn) for weights rearranged in the graph (a decomposed
    #: program computes ``linear`` as ``addmm(bias, x, permute(weight))``)
    derived: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)

    # reading ------------------------------------------------------------------------------

    def tensor(self, arg: Any) -> str:
        """IR tensor name of an activation argument."""
        name = getattr(arg, "name", None)
        if name in self.tensors:
            return self.tensors[name]
        if name in self.state_names:
            raise UnsupportedError(f"parameter {self.state_names[name]!r} is used as an "
                                   "activation (operand of an elementwise op); Core ML layers "
                                   "only take weights in their own slots")
        raise UnsupportedError(f"argument {arg!r} is not a tensor the exporter produced")

    def state(self, arg: Any) -> tuple[Optional[np.ndarray], str]:
        """A weight argument as a float32 copy (never aliasing the module) and its fqn."""
        if arg is None:
            return None, ""
        if getattr(arg, "name", None) in self.derived:
            return self.derived[arg.name]
        fqn = self.state_names.get(getattr(arg, "name", None))
        if fqn is None:
            raise UnsupportedError(f"weight argument {getattr(arg, 'name', arg)!r} is computed "
                                   "in the graph; only parameters, buffers and constants can be "
                                   "layer weights")
        value = self.program.state_dict.get(fqn)
        if value is None:
            value = self.program.constants[fqn]
        return np.array(value.detach().cpu(), dtype=np.float32), fqn

    # writing ------------------------------------------------------------------------------

    def emit(self, fx: Any, op: str, inputs: list[str], *, attrs: Optional[dict] = None,
             weights: Optional[dict[str, Any]] = None, suffix: str = "") -> Node:
        """Append an IR node for ``fx``; ``weights`` maps a role to a ``state()`` pair.

        The node's output tensor carries the node's name. A second node for the same fx node
        (``suffix``) becomes the one ``fx`` maps to.
        """
        name = unique_name(self.taken, layer_name(fx) + suffix)
        kept = {role: pair for role, pair in (weights or {}).items() if pair[0] is not None}
        node = Node(op=op, name=name, inputs=inputs, outputs=[name], attrs=dict(attrs or {}),
                    weights={role: array for role, (array, _) in kept.items()},
                    source=node_source(fx))
        self.graph.nodes.append(node)
        self.tensors[fx.name] = name
        self.origin[name] = fx
        params = {role: fqn for role, (_, fqn) in kept.items() if fqn}  # "" = made up here
        if params:
            self.node_params[name] = params
        return node

    def alias(self, fx: Any, source: Any) -> None:
        """``fx`` computes nothing (clone, a no-op view): it is its input."""
        self.tensors[fx.name] = self.tensor(source)


# -- naming and provenance -----------------------------------------------------------------


def _module_entry(fx: Any) -> tuple[str, str]:
    """(path, class) of the innermost module that called ``fx``; ("", "") at top level."""
    stack = fx.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    cls = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
    return path, cls


def _is_torch_layer(cls: str) -> bool:
    return cls.startswith("torch.nn.modules.")


def _op_name(fx: Any) -> str:
    return fx.target.name().split("::")[-1].split(".")[0] if hasattr(fx.target, "name") else str(fx.target)


def layer_name(fx: Any) -> str:
    """The user's module path for a ``torch.nn`` layer call, else ``<path>.<op>``."""
    path, cls = _module_entry(fx)
    if path and _is_torch_layer(cls):
        return path
    op = _op_name(fx).rstrip("_")
    return f"{path}.{op}" if path else op


def node_source(fx: Any) -> str:
    path, cls = _module_entry(fx)
    if path and _is_torch_layer(cls):
        return f"torch.nn.{cls.rsplit('.', 1)[-1]}"
    return f"aten.{_op_name(fx)}"


def where(fx: Any) -> str:
    """'module 'features.3' (Fire)' or 'the top-level forward', for error messages."""
    path, cls = _module_entry(fx)
    if not path:
        return "the model's top-level forward"
    return f"module {path!r} ({cls.rsplit('.', 1)[-1]})"


# -- shapes --------------------------------------------------------------------------------


def full_shape(arg: Any) -> tuple[int, ...]:
    """Shape of an fx value including the batch axis, from export's fake-tensor metadata."""
    value = arg.meta.get("val")
    if value is None or not hasattr(value, "shape"):
        raise UnsupportedError(f"{arg.name}: export recorded no tensor shape")
    try:
        return tuple(int(d) for d in value.shape)
    except TypeError:
        raise UnsupportedError(f"{arg.name}: dynamic shapes are not supported; export with "
                               "static example inputs") from None


def example_shape(arg: Any) -> tuple[int, ...]:
    """Per-example (IR) shape: the batch axis dropped."""
    return full_shape(arg)[1:]


def channel_axis(fx: Any, dim: int, what: str) -> None:
    """Refuse ``dim`` unless it is axis 1 (the IR channel axis)."""
    if dim % len(full_shape(fx)) != 1:
        raise UnsupportedError(f"{what} along axis {dim} in {where(fx)}: Core ML's layer works on "
                               "the channel axis (torch dim 1) only")


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


# -- translation driver --------------------------------------------------------------------


def translate(program: Any, image_input: Optional[dict] = None,
              input_names: Optional[Sequence[str]] = None) -> Translation:
    """Build the IR graph of an ``ExportedProgram`` (inputs, nodes, outputs).

    Inputs keep forward()'s argument names unless ``input_names`` renames them (in order);
    ``image_input`` makes the first input an image (see ``ir.TensorSpec.image``).
    """
    signature = program.graph_signature
    state_names = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
                   **getattr(signature, "inputs_to_lifted_tensor_constants", {})}
    user_inputs = list(signature.user_inputs)
    names = list(input_names) if input_names is not None else user_inputs
    if len(names) != len(user_inputs) or len(set(names)) != len(names):
        raise ConfigError(f"input_names {names} must be {len(user_inputs)} distinct names, one per "
                          f"forward() input ({', '.join(user_inputs)})")
    fx_nodes = {node.name: node for node in program.graph.nodes}
    inputs = [TensorSpec(name, example_shape(fx_nodes[fx_name]))
              for name, fx_name in zip(names, user_inputs)]
    if image_input is not None and inputs:
        inputs[0].image = dict(image_input)
    state = Translation(program, Graph(inputs=inputs, outputs=[]), state_names=state_names)
    state.tensors.update(zip(user_inputs, names))
    state.taken.update(names)
    for node in program.graph.nodes:
        if node.op == "call_function":
            _convert(state, node)
        elif node.op == "output":
            state.graph.outputs = [state.tensor(arg) for arg in _flat_outputs(node.args[0])]
        elif node.op != "placeholder":
            raise UnsupportedError(f"graph node {node.name} ({node.op}) in {where(node)} is not "
                                   "an op call; export the model without submodule calls")
    return state


def _flat_outputs(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return [item for sub in value for item in _flat_outputs(sub)]
    return [value]


def _convert(state: Translation, fx: Any) -> None:
    if fx.target is operator.getitem:
        _getitem(state, fx)
        return
    op = _op_name(fx)
    if op in _IGNORED:
        return
    fn = CONVERTERS.get(op) if getattr(fx.target, "namespace", "") == "aten" else None
    if fn is None:
        raise UnsupportedError(f"torch op {op!r} in {where(fx)} has no Core ML converter; "
                               "replace it with a supported layer (see the exporter's op list)")
    try:
        fn(state, fx, arguments(fx))
    except UpdatableCoreMLError:
        raise
    except Exception as exc:  # a converter bug or an unexpected argument form: name the layer
        raise UnsupportedError(f"torch op {op!r} in {where(fx)} could not be converted "
                               f"({type(exc).__name__}: {first_line(exc)}); please report it "
                               "with the model") from exc


def arguments(fx: Any) -> dict[str, Any]:
    """The op's arguments by schema name, defaults filled in."""
    values: dict[str, Any] = {}
    for i, arg in enumerate(fx.target._schema.arguments):
        if i < len(fx.args) and not arg.kwarg_only:
            values[arg.name] = fx.args[i]
        elif arg.name in fx.kwargs:
            values[arg.name] = fx.kwargs[arg.name]
        else:
            values[arg.name] = arg.default_value if arg.has_default_value() else None
    return values


def _getitem(state: Translation, fx: Any) -> None:
    """Element 0 of a multi-output op (batch norm, dropout) is its result; the rest are
    statistics/masks nothing downstream may use."""
    source, index = fx.args
    if index != 0 or source.name not in state.tensors:
        raise UnsupportedError(f"output {index} of {source.name} in {where(fx)} is used; only "
                               "the main result of an op can be exported")
    state.alias(fx, source)


# -- layers with weights -------------------------------------------------------------------


@converter("linear")
def _linear(state: Translation, fx: Any, a: dict) -> None:
    if len(example_shape(a["input"])) != 1:
        raise UnsupportedError(f"Linear on a rank-{len(full_shape(a['input']))} input in {where(fx)}: "
                               "Core ML's innerProduct needs a flat (batch, features) input; "
                               "flatten before it")
    state.emit(fx, "dense", [state.tensor(a["input"])],
               weights={"weight": state.state(a["weight"]), "bias": state.state(a["bias"])})


def _is_weight(state: Translation, arg: Any) -> bool:
    name = getattr(arg, "name", None)
    return name in state.state_names or name in state.derived


@converter("permute", "t", "transpose", "numpy_T")
def _permute_weight(state: Translation, fx: Any, a: dict) -> None:
    """A transposed weight (decomposed ``linear``); activations are never permuted."""
    source = fx.args[0]
    if not _is_weight(state, source):
        raise UnsupportedError(f"{_op_name(fx)} of an activation in {where(fx)}: Core ML layers "
                               "keep the channel-first layout; permuting axes is not supported")
    array, fqn = state.state(source)
    axes = list(range(array.ndim))[::-1]
    if _op_name(fx) == "permute":
        axes = [int(d) % array.ndim for d in a["dims"]]
    elif _op_name(fx) == "transpose":
        axes = list(range(array.ndim))
        first, second = int(a["dim0"]) % array.ndim, int(a["dim1"]) % array.ndim
        axes[first], axes[second] = second, first
    state.derived[fx.name] = (np.ascontiguousarray(array.transpose(axes)), fqn)


@converter("addmm", "mm")
def _matmul(state: Translation, fx: Any, a: dict) -> None:
    """``x @ W.T (+ b)`` with a weight operand: a dense layer, as in decomposed programs."""
    if not _is_weight(state, a["mat2"]) or float(a.get("beta", 1)) != 1 or float(a.get("alpha", 1)) != 1:
        raise UnsupportedError(f"{_op_name(fx)} in {where(fx)} is not a linear layer (x @ W.T + b); "
                               "only products with a weight are supported")
    transposed, fqn = state.state(a["mat2"])
    has_bias = _op_name(fx) == "addmm"  # addmm(bias, x, W.T); mm(x, W.T)
    bias = state.state(a["self"]) if has_bias else (None, "")
    state.emit(fx, "dense", [state.tensor(a["mat1"] if has_bias else a["self"])],
               weights={"weight": (np.ascontiguousarray(transposed.T), fqn), "bias": bias})


@converter("conv2d", "convolution")
def _conv2d(state: Translation, fx: Any, a: dict) -> None:
    if a.get("transposed"):
        raise UnsupportedError(f"transposed convolution in {where(fx)} is not supported")
    padding = a["padding"]
    if isinstance(padding, str):
        pads: Any = padding
    else:
        ph, pw = _pair(padding)
        pads = (ph, ph, pw, pw)
    state.emit(fx, "conv2d", [state.tensor(a["input"])],
               attrs={"strides": _pair(a["stride"]), "dilations": _pair(a["dilation"]),
                      "groups": int(a["groups"]), "padding": pads},
               weights={"weight": state.state(a["weight"]), "bias": state.state(a["bias"])})


@converter("batch_norm", "_native_batch_norm_legit_no_training")
def _batch_norm(state: Translation, fx: Any, a: dict) -> None:
    if a.get("training") or a["running_mean"] is None:
        raise UnsupportedError(f"batch norm in {where(fx)} normalizes with batch statistics in "
                               "eval mode (track_running_stats=False); Core ML needs running "
                               "mean and variance")
    mean, mean_fqn = state.state(a["running_mean"])
    channels = mean.shape[0]
    gamma = state.state(a["weight"]) if a["weight"] is not None else (np.ones(channels, np.float32), "")
    beta = state.state(a["bias"]) if a["bias"] is not None else (np.zeros(channels, np.float32), "")
    state.emit(fx, "batchnorm", [state.tensor(a["input"])], attrs={"eps": float(a["eps"])},
               weights={"gamma": gamma, "beta": beta, "mean": (mean, mean_fqn),
                        "variance": state.state(a["running_var"])})


# -- activations ---------------------------------------------------------------------------


def _activation(kind: str, **attrs: Any) -> Converter:
    def convert(state: Translation, fx: Any, a: dict) -> None:
        state.emit(fx, "activation", [state.tensor(a["self"])], attrs={"kind": kind, **attrs})

    return convert


for _ops, _kind in ((("relu", "relu_"), "relu"), (("relu6",), "relu6"),
                    (("sigmoid", "sigmoid_"), "sigmoid"), (("tanh", "tanh_"), "tanh"),
                    (("silu", "silu_"), "silu")):
    converter(*_ops)(_activation(_kind))


@converter("hardtanh", "hardtanh_")
def _hardtanh(state: Translation, fx: Any, a: dict) -> None:
    low, high = float(a["min_val"]), float(a["max_val"])
    attrs = {"kind": "relu6"} if (low, high) == (0.0, 6.0) else {"kind": "clip", "min": low, "max": high}
    state.emit(fx, "activation", [state.tensor(a["self"])], attrs=attrs)


@converter("leaky_relu", "leaky_relu_")
def _leaky_relu(state: Translation, fx: Any, a: dict) -> None:
    state.emit(fx, "activation", [state.tensor(a["self"])],
               attrs={"kind": "leaky_relu", "alpha": float(a["negative_slope"])})


@converter("elu", "elu_")
def _elu(state: Translation, fx: Any, a: dict) -> None:
    if float(a["scale"]) != 1.0 or float(a["input_scale"]) != 1.0:
        raise UnsupportedError(f"scaled ELU (SELU/CELU) in {where(fx)} is not supported; use nn.ELU")
    state.emit(fx, "activation", [state.tensor(a["self"])],
               attrs={"kind": "elu", "alpha": float(a["alpha"])})


@converter("softplus")
def _softplus(state: Translation, fx: Any, a: dict) -> None:
    if float(a["beta"]) != 1.0:
        raise UnsupportedError(f"Softplus with beta={a['beta']} in {where(fx)}: Core ML's softplus "
                               "has beta 1")
    # torch returns x itself above `threshold`; log1p(exp(x)) differs from x by < exp(-x) there.
    state.emit(fx, "activation", [state.tensor(a["self"])], attrs={"kind": "softplus"})


def _softsign_div(fx: Any) -> Any | None:
    """The ``div`` of ``x / (abs(x) + 1)`` (what ``nn.Softsign`` / ``F.softsign`` export as)
    that ``fx`` (the abs, the add or the div) belongs to, or None."""

    def is_op(node: Any, name: str) -> bool:
        return hasattr(node, "target") and _op_name(node) == name

    node = fx
    for step in ("abs", "add"):
        if is_op(node, step):
            if len(node.users) != 1:
                return None
            node = next(iter(node.users))
    if not is_op(node, "div") or len(node.args) != 2 or node.kwargs.get("rounding_mode"):
        return None
    x, denominator = node.args
    if not is_op(denominator, "add") or len(denominator.users) != 1 or denominator.kwargs:
        return None
    magnitude = denominator.args[0]
    one = denominator.args[1] if len(denominator.args) > 1 else None
    if one != 1 or not is_op(magnitude, "abs") or len(magnitude.users) != 1 \
            or magnitude.args[0] is not x:
        return None
    return node


@converter("abs", "div")
def _softsign(state: Translation, fx: Any, a: dict) -> None:
    """Softsign: the abs and add are skipped, the div becomes Core ML's softsign activation.
    Core ML has neither a division of two tensors nor an abs activation, so both appear
    only in this pattern."""
    div = _softsign_div(fx)
    if div is None:
        raise UnsupportedError(f"{_op_name(fx)} in {where(fx)} is supported only as part of "
                               "softsign, x / (abs(x) + 1); use nn.Softsign")
    if div is fx:
        state.emit(fx, "activation", [state.tensor(fx.args[0])], attrs={"kind": "softsign"})


@converter("gelu", "gelu_")
def _gelu(state: Translation, fx: Any, a: dict) -> None:
    state.emit(fx, "activation", [state.tensor(a["self"])],
               attrs={"kind": "gelu", "approximate": a["approximate"] == "tanh"})


# -- pooling -------------------------------------------------------------------------------


def _pool_geometry(fx: Any, a: dict) -> tuple[tuple[int, int], tuple[int, int], tuple[int, ...]]:
    kernel = _pair(a["kernel_size"])
    strides = _pair(a["stride"]) if a["stride"] else kernel
    ph, pw = _pair(a["padding"])
    _, _, height, width = full_shape(a["self"])
    extra_h, extra_w = ((ceil_mode_padding(height, kernel[0], strides[0], ph),
                         ceil_mode_padding(width, kernel[1], strides[1], pw)) if a["ceil_mode"] else (0, 0))
    return kernel, strides, (ph, ph + extra_h, pw, pw + extra_w)


@converter("max_pool2d", "max_pool2d_with_indices")
def _max_pool2d(state: Translation, fx: Any, a: dict) -> None:
    if _pair(a["dilation"]) != (1, 1):
        raise UnsupportedError(f"dilated max pooling in {where(fx)} is not supported")
    kernel, strides, pads = _pool_geometry(fx, a)
    state.emit(fx, "pool2d", [state.tensor(a["self"])],
               attrs={"kind": "max", "kernel": kernel, "strides": strides,
                      "padding": pads, "global": False, "count_include_pad": False})


@converter("avg_pool2d")
def _avg_pool2d(state: Translation, fx: Any, a: dict) -> None:
    if a["divisor_override"] is not None:
        raise UnsupportedError(f"avg pooling with divisor_override in {where(fx)} is not supported")
    kernel, strides, pads = _pool_geometry(fx, a)
    if a["count_include_pad"] and (pads[1] != pads[0] or pads[3] != pads[2]):
        raise UnsupportedError(f"avg pooling with ceil_mode=True and count_include_pad=True in "
                               f"{where(fx)}: torch counts the padding but not the ceil-mode "
                               "overhang in its divisor, which explicit Core ML padding cannot "
                               "express; use count_include_pad=False or ceil_mode=False")
    state.emit(fx, "pool2d", [state.tensor(a["self"])],
               attrs={"kind": "avg", "kernel": kernel, "strides": strides, "padding": pads,
                      "global": False, "count_include_pad": bool(a["count_include_pad"])})


def _global_avg_pool(state: Translation, fx: Any, source: Any, suffix: str = "") -> Node:
    return state.emit(fx, "pool2d", [state.tensor(source)], suffix=suffix,
                      attrs={"kind": "avg", "kernel": example_shape(source)[1:], "strides": (1, 1),
                             "padding": "valid", "global": True, "count_include_pad": False})


@converter("adaptive_avg_pool2d")
def _adaptive_avg_pool2d(state: Translation, fx: Any, a: dict) -> None:
    _, height, width = example_shape(a["self"])
    out_h, out_w = _pair(a["output_size"])
    if (out_h, out_w) == (1, 1):
        _global_avg_pool(state, fx, a["self"])
    elif (out_h, out_w) == (height, width):
        state.alias(fx, a["self"])
    elif height % out_h == 0 and width % out_w == 0:
        kernel = (height // out_h, width // out_w)
        state.emit(fx, "pool2d", [state.tensor(a["self"])],
                   attrs={"kind": "avg", "kernel": kernel, "strides": kernel, "padding": "valid",
                          "global": False, "count_include_pad": False})
    else:
        raise UnsupportedError(f"adaptive avg pooling from {height}x{width} to {out_h}x{out_w} in "
                               f"{where(fx)}: the windows overlap unevenly; use an output size "
                               "that divides the input")


@converter("mean")
def _mean(state: Translation, fx: Any, a: dict) -> None:
    rank = len(full_shape(a["self"]))
    dims = sorted(int(d) % rank for d in (a["dim"] or ()))
    if rank != 4 or dims != [2, 3]:
        raise UnsupportedError(f"mean over dims {a['dim']} in {where(fx)}: only the spatial mean "
                               "of an (N, C, H, W) tensor (global average pooling) is supported")
    if a["keepdim"]:
        _global_avg_pool(state, fx, a["self"])
        return
    pooled = _global_avg_pool(state, fx, a["self"], suffix=".pool")
    state.emit(fx, "flatten", pooled.outputs)


# -- shape ops -----------------------------------------------------------------------------


@converter("flatten", "view", "reshape", "_unsafe_view", "squeeze", "unsqueeze")
def _reshape(state: Translation, fx: Any, a: dict) -> None:
    """Any shape change that keeps the batch axis: none, a flatten, or a reshape."""
    source = fx.args[0]
    before, after = full_shape(source), full_shape(fx)
    if after[:1] != before[:1]:
        raise UnsupportedError(f"{_op_name(fx)} in {where(fx)} reshapes across the batch axis "
                               f"({list(before)} -> {list(after)}); keep dim 0 as the batch "
                               "(and export with a batch of 2 or more to make this unambiguous)")
    if after == before:
        state.alias(fx, source)
    elif len(after) == 2:
        state.emit(fx, "flatten", [state.tensor(source)])
    else:
        state.emit(fx, "reshape", [state.tensor(source)], attrs={"shape": after[1:]})


@converter("cat", "concat")
def _cat(state: Translation, fx: Any, a: dict) -> None:
    """A concatenation; of one tensor (torchvision's DenseNet calls ``torch.cat([x], 1)``) it
    is that tensor: Core ML refuses a concat layer with fewer than 2 inputs."""
    tensors = list(a["tensors"])
    if len(tensors) == 1:
        state.alias(fx, tensors[0])
        return
    channel_axis(fx, int(a["dim"]), "concatenation")
    state.emit(fx, "concat", [state.tensor(t) for t in tensors])


@converter("clone", "contiguous", "alias", "detach", "detach_", "lift_fresh_copy")
def _identity(state: Translation, fx: Any, a: dict) -> None:
    state.alias(fx, fx.args[0])


@converter("dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout")
def _dropout(state: Translation, fx: Any, a: dict) -> None:
    """The in-place forms (``nn.Dropout(inplace=True)``) name their operand ``self``."""
    source = a["input"] if "input" in a else a["self"]
    state.emit(fx, "dropout", [state.tensor(source)], attrs={"rate": float(a["p"])})


# -- elementwise ---------------------------------------------------------------------------


def _scalar(state: Translation, value: Any) -> Optional[float]:
    """``value`` as a Python float if it is a number or a one-element constant, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if getattr(value, "name", None) in state.state_names:
        array, _ = state.state(value)
        return float(array.reshape(-1)[0]) if array.size == 1 else None
    return None


def _binary(state: Translation, fx: Any, op: str, other: Any) -> None:
    left = fx.args[0]
    if full_shape(left) != full_shape(other):
        raise UnsupportedError(f"{op} of tensors shaped {list(full_shape(left))} and "
                               f"{list(full_shape(other))} in {where(fx)}: broadcasting is not "
                               "supported; give both operands the same shape")
    state.emit(fx, op, [state.tensor(left), state.tensor(other)])


@converter("add", "add_")
def _add(state: Translation, fx: Any, a: dict) -> None:
    if _softsign_div(fx) is not None:
        return  # the softsign's div writes it
    alpha, constant = float(a.get("alpha", 1)), _scalar(state, a["other"])
    if constant is not None:
        state.emit(fx, "activation", [state.tensor(a["self"])],
                   attrs={"kind": "linear", "alpha": 1.0, "beta": alpha * constant})
    elif alpha != 1.0:
        raise UnsupportedError(f"add with alpha={alpha} in {where(fx)} is not supported")
    else:
        _binary(state, fx, "add", a["other"])


@converter("mul", "mul_")
def _mul(state: Translation, fx: Any, a: dict) -> None:
    constant = _scalar(state, a["other"])
    if constant is not None:
        state.emit(fx, "activation", [state.tensor(a["self"])],
                   attrs={"kind": "linear", "alpha": constant, "beta": 0.0})
    else:
        _binary(state, fx, "mul", a["other"])


@converter("softmax", "_softmax")
def _softmax(state: Translation, fx: Any, a: dict) -> None:
    channel_axis(fx, int(a["dim"]), "softmax")
    state.emit(fx, "softmax", [state.tensor(a["self"])])


@converter("log_softmax", "_log_softmax")
def _log_softmax(state: Translation, fx: Any, a: dict) -> None:
    """Only as the model's output, exported as softmax: Core ML's cross-entropy reads
    probabilities, and softmax(log_softmax(x)) == softmax(x), so NLL on log-probabilities
    trains exactly like CCE on the probabilities."""
    channel_axis(fx, int(a["dim"]), "log_softmax")
    if any(user.op != "output" for user in fx.users):
        raise UnsupportedError(f"log_softmax in {where(fx)} feeds other ops; Core ML has no "
                               "log-softmax layer: it is only supported as the model's output "
                               "(exported as softmax, for NLLLoss/CrossEntropyLoss)")
    node = state.emit(fx, "softmax", [state.tensor(a["self"])])
    state.log_softmax.add(node.name)
