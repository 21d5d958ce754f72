"""Keras activation functions as IR activations, and a layer's fused ``activation=``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from ...errors import UnsupportedError
from .context import Context, Tensor, _keras, _source

#: Keras activation function name -> IR activation attrs (None: softmax op; {}: linear).
ACTIVATIONS: dict[str, Optional[dict]] = {
    "linear": {},
    "relu": {"kind": "relu"},
    "relu6": {"kind": "relu6", "min": 0.0, "max": 6.0},
    "sigmoid": {"kind": "sigmoid"},
    "tanh": {"kind": "tanh"},
    "softplus": {"kind": "softplus"},
    "softsign": {"kind": "softsign"},
    "elu": {"kind": "elu", "alpha": 1.0},
    "leaky_relu": {"kind": "leaky_relu", "alpha": 0.2},
    "hard_sigmoid": {"kind": "hard_sigmoid", "alpha": 1 / 6, "beta": 0.5},
    "hard_silu": {"kind": "hard_silu"},
    "hard_swish": {"kind": "hard_silu"},
    "silu": {"kind": "silu"},
    "swish": {"kind": "silu"},
    "gelu": {"kind": "gelu", "approximate": False},
    "softmax": None,
}


def _activation_name(fn, where: str) -> str:
    keras = _keras()
    name = getattr(fn, "__name__", "")
    try:
        known = keras.activations.get(name) is fn
    except (ValueError, TypeError):
        known = False
    if not known or name not in ACTIVATIONS:
        raise UnsupportedError(
            f"{where}: activation {name or fn!r} is not supported; use one of "
            + ", ".join(sorted(ACTIVATIONS))
        )
    return name


def _apply(
    ctx: Context,
    attrs: Optional[dict],
    name: str,
    x: Tensor,
    source: str,
    output: Optional[str] = None,
) -> str:
    """Add an activation node (or a softmax node for ``attrs=None``)."""
    if attrs is None:
        return ctx.add("softmax", name, [x], source=source, output=output)
    return ctx.add("activation", name, [x], attrs=attrs, source=source, output=output)


def _with_activation(
    ctx: Context, layer, build: Callable[[Optional[str]], str], shape: tuple[int, ...]
) -> str:
    """Run ``build(output_name)`` for the layer's linear part, then its ``activation=``.

    The layer's name stays on the weight node (people look for ``dense_1``); the activation
    node writes the tensor named after the layer.
    """
    kind = _activation_name(getattr(layer, "activation", None), f"layer {layer.name!r}")
    if kind == "linear":
        return build(None)
    linear = build(f"{layer.name}_preact")
    return _apply(
        ctx,
        ACTIVATIONS[kind],
        f"{layer.name}_{kind}",
        Tensor(linear, shape),
        _source(layer),
        output=layer.name,
    )
