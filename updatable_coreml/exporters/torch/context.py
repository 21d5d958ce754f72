"""What every torch converter shares: the translation state (``Translation``), the
converter table, naming and provenance of layers, and shapes from export's metadata.

Layouts need no conversion: torch is already channel-first. IR shapes are per example, so
the batch axis (axis 0 of every torch activation) is dropped and axis 1 is the IR channel.
IR layer names are the user's module paths (``layer4.1.conv2``); an op that is not the call
of a ``torch.nn`` module is named ``<module path>.<op>`` (``layer1.0.add``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ...errors import UnsupportedError
from ...ir import Graph, Node
from ...registry import Registry
from ..common.builder import append_node

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
    #: fx node name -> how a sequence tensor stands for torch's: time-major (L, N, C), a
    #: recurrent output that is only its last step, an LSTM's h_n (converters/sequence.py)
    layouts: dict[str, str] = field(default_factory=dict)
    #: IR node name -> why it must stay frozen although Core ML can update its layer type
    frozen_only: dict[str, str] = field(default_factory=dict)
    #: fx node name -> ``layout.View``: an activation torch sees with its axes moved (a
    #: channel-last view of a (C, H, W) tensor, a shuffle in progress); never also in
    #: ``tensors``
    views: dict[str, Any] = field(default_factory=dict)
    #: module paths of calls converted as a whole (``nn.MultiheadAttention``,
    #: converters/attention.py): their aten ops are not converted one by one
    modules: set[str] = field(default_factory=set)
    #: fx node name -> why it cannot be read as it is: an activation whose batch axis torch
    #: moved (timm's packed q, k, v: ``permute(2, 0, 3, 1, 4)``), and the shape ops after it,
    #: held until ``scaled_dot_product_attention`` reads them (converters/attention.py)
    deferred: dict[str, str] = field(default_factory=dict)

    # reading ------------------------------------------------------------------------------

    def tensor(self, arg: Any) -> str:
        """IR tensor name of an activation argument."""
        name = getattr(arg, "name", None)
        if name in self.tensors:
            return self.tensors[name]
        if name in self.deferred:
            raise UnsupportedError(self.deferred[name])
        if name in self.views:
            raise UnsupportedError(
                f"{self.views[name].made_by}: Core ML layers keep the channel-first "
                "layout; an activation with moved or merged axes can only be a channel "
                "permutation, a channel-last view (permute(0, 2, 3, 1)) read by per-position "
                "ops (layer_norm over the last axis, Linear, activations) and permuted back, "
                "or (N, S, C) tokens (x.flatten(2).transpose(1, 2)) read by those, "
                "nn.MultiheadAttention, a class token, x[:, t] and x.mean(1)"
            )
        if name in self.state_names:
            raise UnsupportedError(
                f"parameter {self.state_names[name]!r} is used as an "
                "activation (operand of an elementwise op); Core ML layers "
                "only take weights in their own slots"
            )
        raise UnsupportedError(f"argument {arg!r} is not a tensor the exporter produced")

    def is_weight(self, arg: Any) -> bool:
        """``arg`` is a parameter, buffer or constant, or one rearranged in the graph."""
        name = getattr(arg, "name", None)
        return name in self.state_names or name in self.derived

    def state(self, arg: Any) -> tuple[Optional[np.ndarray], str]:
        """A weight argument as a float32 copy (never aliasing the module) and its fqn."""
        if arg is None:
            return None, ""
        if getattr(arg, "name", None) in self.derived:
            return self.derived[arg.name]
        name = getattr(arg, "name", None)
        fqn = self.state_names.get(name) if isinstance(name, str) else None
        if fqn is None:
            raise UnsupportedError(
                f"weight argument {getattr(arg, 'name', arg)!r} is computed "
                "in the graph; only parameters, buffers and constants can be "
                "layer weights"
            )
        value = self.program.state_dict.get(fqn)
        if value is None:
            value = self.program.constants[fqn]
        return np.array(value.detach().cpu(), dtype=np.float32), fqn

    def weight(self, arg: Any) -> tuple[np.ndarray, str]:
        """``state(arg)`` for an argument that must be a weight (not an absent bias)."""
        array, fqn = self.state(arg)
        if array is None:
            raise UnsupportedError(
                f"a weight argument is missing (None) where {arg!r} was "
                "expected to be a parameter, buffer or constant"
            )
        return array, fqn

    # writing ------------------------------------------------------------------------------

    def emit(
        self,
        fx: Any,
        op: str,
        inputs: list[str],
        *,
        attrs: Optional[dict] = None,
        weights: Optional[dict[str, Any]] = None,
        suffix: str = "",
    ) -> Node:
        """Append an IR node for ``fx``; ``weights`` maps a role to a ``state()`` pair.

        The node's output tensor carries the node's name. A second node for the same fx node
        (``suffix``) becomes the one ``fx`` maps to.
        """
        kept = {role: pair for role, pair in (weights or {}).items() if pair[0] is not None}
        node = append_node(
            self.graph.nodes,
            self.taken,
            op,
            layer_name(fx) + suffix,
            inputs,
            attrs=attrs,
            weights={role: array for role, (array, _) in kept.items()},
            source=node_source(fx),
        )
        name = node.name
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
    return (
        fx.target.name().split("::")[-1].split(".")[0]
        if hasattr(fx.target, "name")
        else str(fx.target)
    )


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
        raise UnsupportedError(
            f"{arg.name}: dynamic shapes are not supported; export with static example inputs"
        ) from None


def example_shape(arg: Any) -> tuple[int, ...]:
    """Per-example (IR) shape: the batch axis dropped."""
    return full_shape(arg)[1:]


def channel_axis(fx: Any, dim: int, what: str) -> None:
    """Refuse ``dim`` unless it is axis 1 (the IR channel axis)."""
    if dim % len(full_shape(fx)) != 1:
        raise UnsupportedError(
            f"{what} along axis {dim} in {where(fx)}: Core ML's layer works on "
            "the channel axis (torch dim 1) only"
        )


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


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
