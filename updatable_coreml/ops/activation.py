"""Activations (one IR op, ``activation``, with a ``kind``) and the softmax.

Each kind says which Core ML layers it writes; whether gradients pass through it follows from
those layers and Core ML's rules (``coreml_rules.BACKPROP_ACTIVATIONS``), so a kind written as
two layers (silu = x * sigmoid(x)) or with iOS 12 stand-ins (clip) does not pass gradients even
though its first layer might.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import coreml_rules
from .._proto import NeuralNetwork_pb2
from ..errors import UnsupportedError
from ..ir import Node
from ._spec import new_layer, one_layer
from ._table import Layer, Shapes, define, same_shape, writes


def _affine(params: Any, alpha: float, beta: float) -> None:
    params.alpha, params.beta = alpha, beta


#: Kind -> (``ActivationParams`` oneof name, attrs it reads besides ``kind``, fill the params
#: from the node's attrs): the activations Core ML writes as a single ``activation`` layer
#: (also the ones an LSTM can use).
NONLINEARITIES: dict[str, tuple[str, str, Callable[[Any, Mapping[str, Any]], None]]] = {
    "relu": ("ReLU", "", lambda p, a: p.ReLU.SetInParent()),
    "sigmoid": ("sigmoid", "", lambda p, a: p.sigmoid.SetInParent()),
    "tanh": ("tanh", "", lambda p, a: p.tanh.SetInParent()),
    "softplus": ("softplus", "", lambda p, a: p.softplus.SetInParent()),
    "softsign": ("softsign", "", lambda p, a: p.softsign.SetInParent()),
    "leaky_relu": (
        "leakyReLU",
        "alpha",
        lambda p, a: setattr(p.leakyReLU, "alpha", float(a["alpha"])),
    ),
    "elu": ("ELU", "alpha", lambda p, a: setattr(p.ELU, "alpha", float(a.get("alpha", 1.0)))),
    "hard_sigmoid": (
        "sigmoidHard",
        "alpha, beta",
        lambda p, a: _affine(p.sigmoidHard, float(a["alpha"]), float(a["beta"])),
    ),
    "linear": (
        "linear",
        "alpha, beta",
        lambda p, a: _affine(p.linear, float(a.get("alpha", 1.0)), float(a.get("beta", 0.0))),
    ),
}


def fill_nonlinearity(params: Any, attrs: Mapping[str, Any], where: str) -> None:
    """Fill an ``ActivationParams`` message for ``attrs['kind']`` (default linear)."""
    kind = attrs.get("kind", "linear")
    if kind not in NONLINEARITIES:
        known = ", ".join(sorted(NONLINEARITIES))
        raise UnsupportedError(
            f"layer {where!r}: activation {kind!r} cannot be written as one "
            f"Core ML activation; use one of {known}"
        )
    NONLINEARITIES[kind][2](params, attrs)


def fill_recurrent_activation(params: Any, attrs: Mapping[str, Any], where: str) -> None:
    """Fill an activation of a recurrent layer, refusing what its Core ML layer does not
    support (``coreml_rules.RECURRENT_ACTIVATIONS``): a hard sigmoid other than
    0.2 * x + 0.5 (Keras 3's is x / 6 + 0.5) would pass Apple's validator with unknown
    results on device."""
    fill_nonlinearity(params, attrs, where)
    kind = params.WhichOneof("NonlinearityType")
    if kind not in coreml_rules.RECURRENT_ACTIVATIONS:
        known = ", ".join(sorted(coreml_rules.RECURRENT_ACTIVATIONS))
        raise UnsupportedError(
            f"layer {where!r}: Core ML's recurrent layers cannot use the {kind} activation "
            f"(NeuralNetwork.proto); use one of {known}"
        )
    required = coreml_rules.RECURRENT_ACTIVATIONS[kind] or {}
    actual = getattr(params, kind)
    if any(abs(getattr(actual, key) - value) > 1e-6 for key, value in required.items()):
        wanted = ", ".join(f"{key}={value:.4g}" for key, value in required.items())
        got = ", ".join(f"{key}={getattr(actual, key):.4g}" for key in required)
        raise UnsupportedError(
            f"layer {where!r}: Core ML's recurrent layers support the {kind} activation "
            f"only with {wanted} (NeuralNetwork.proto), not {got}; use sigmoid or tanh"
        )


@dataclass(frozen=True)
class Kind:
    """One activation kind: the Core ML layers it writes and the writer."""

    attrs: str  # the attrs it reads besides ``kind``
    layers: Callable[[Mapping[str, Any]], tuple[Layer, ...]]
    write: Callable[[Any, Node], None]


def _single(kind: str) -> Kind:
    oneof, attrs, fill = NONLINEARITIES[kind]

    def write(nn: Any, node: Node) -> None:
        fill(new_layer(nn, node.name, node.inputs, node.outputs).activation, node.attrs)

    return Kind(attrs, lambda _: (("activation", oneof),), write)


def _clip_layers(attrs: Mapping[str, Any]) -> tuple[Layer, ...]:
    relu = float(attrs.get("min", 0.0)) == 0.0
    floor: Layer = ("activation", "ReLU") if relu else ("unary", None)
    return (floor, ("unary", None), ("activation", "linear"))


def _write_clip(nn: Any, node: Node) -> None:
    """``min(max(x, low), high)`` with iOS 12 layers (the clip layer is iOS 13's, and would
    force the exact-rank shape mapping on the whole network): max(x, low), then
    max(-y, -high), then negate. Negation is exact, so this is exactly the clip."""
    low, high = float(node.attrs.get("min", 0.0)), float(node.attrs.get("max", 6.0))
    floor, ceiling = f"{node.name}_max", f"{node.name}_min_negated"
    if low == 0.0:
        new_layer(nn, floor, node.inputs, [floor]).activation.ReLU.SetInParent()
    else:
        unary = new_layer(nn, floor, node.inputs, [floor]).unary
        unary.type, unary.alpha = unary.THRESHOLD, low
    unary = new_layer(nn, ceiling, [floor], [ceiling]).unary
    unary.type, unary.alpha, unary.scale = unary.THRESHOLD, -high, -1.0
    negate = new_layer(nn, node.name, [ceiling], node.outputs).activation.linear
    negate.alpha = -1.0


def _write_gelu(nn: Any, node: Node) -> None:
    """Core ML's iOS 13 ``gelu`` layer (the backend switches to the exact-rank mapping)."""
    layer = new_layer(nn, node.name, node.inputs, node.outputs)
    modes = NeuralNetwork_pb2.GeluLayerParams
    layer.gelu.mode = modes.TANH_APPROXIMATION if node.attrs.get("approximate") else modes.EXACT


def _write_silu(nn: Any, node: Node) -> None:
    """silu = x * sigmoid(x): a sigmoid layer, then a multiply."""
    gate = f"{node.name}_sigmoid"
    new_layer(nn, gate, node.inputs, [gate]).activation.sigmoid.SetInParent()
    new_layer(nn, node.name, [node.inputs[0], gate], node.outputs).multiply.SetInParent()


def _write_hard_silu(nn: Any, node: Node) -> None:
    """hard_silu (torch hardswish) = x * relu6(x + 3) / 6 = x * hard_sigmoid(x): a
    ``sigmoidHard`` layer (min(max(x / 6 + 0.5, 0), 1)), then a multiply."""
    gate = f"{node.name}_hard_sigmoid"
    params = new_layer(nn, gate, node.inputs, [gate]).activation.sigmoidHard
    params.alpha, params.beta = 1 / 6, 0.5
    new_layer(nn, node.name, [node.inputs[0], gate], node.outputs).multiply.SetInParent()


#: IR activation kind -> definition.
KINDS: dict[str, Kind] = {
    **{kind: _single(kind) for kind in NONLINEARITIES},
    "relu6": Kind("", _clip_layers, _write_clip),
    "clip": Kind("min, max", _clip_layers, _write_clip),
    "gelu": Kind("approximate", lambda attrs: (("gelu", None),), _write_gelu),
    "silu": Kind("", lambda attrs: (("activation", "sigmoid"), ("multiply", None)), _write_silu),
    "hard_silu": Kind(
        "", lambda attrs: (("activation", "sigmoidHard"), ("multiply", None)), _write_hard_silu
    ),
}


def _kind(attrs: Mapping[str, Any], where: str = "") -> Kind:
    name = attrs.get("kind")
    if name not in KINDS:
        at = f"layer {where!r}: " if where else ""
        raise UnsupportedError(f"{at}activation {name!r} has no Core ML layer")
    return KINDS[name]


def _activation_layers(attrs: Mapping[str, Any]) -> tuple[Layer, ...]:
    return _kind(attrs).layers(attrs)


def _write_activation(nn: Any, node: Node, shapes: Shapes) -> None:
    """The kind's layer(s); the last one is named after the node and writes its output."""
    _kind(node.attrs, node.name).write(nn, node)


def _write_softmax(layer: Any, node: Node, shapes: Shapes) -> None:
    """A classic ``softmax`` over the channel axis (the only form Core ML's cross-entropy
    accepts as its input)."""
    layer.softmax.SetInParent()


def _kinds_doc() -> str:
    return (
        "|".join(KINDS)
        + "; attrs by kind: "
        + ", ".join(f"{name} ({kind.attrs})" for name, kind in KINDS.items() if kind.attrs)
    )


#: One node's attrs per kind (the required ones filled in), for the docs and the table test.
_VARIANTS: tuple[Mapping[str, Any], ...] = tuple(
    {
        "kind": name,
        **{
            "leaky_relu": {"alpha": 0.2},
            "hard_sigmoid": {"alpha": 0.2, "beta": 0.5},
            "clip": {"min": -1.0, "max": 1.0},
        }.get(name, {}),
    }
    for name in KINDS
)

define(
    "activation",
    family="activation",
    doc=f"a: kind {_kinds_doc()}",
    shape=same_shape,
    write=_write_activation,
    layers=_activation_layers,
    variants=_VARIANTS,
)
define(
    "softmax",
    family="activation",
    doc="over the channel axis",
    shape=same_shape,
    write=one_layer(_write_softmax),
    layers=writes("softmax"),
)
