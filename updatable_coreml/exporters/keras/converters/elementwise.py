"""Activation layers, merges, softmax, and per-channel affine layers (Rescaling,
Normalization)."""

from __future__ import annotations

import numpy as np

from .... import ops
from ....errors import UnsupportedError
from ....ir import Node
from ..activations import ACTIVATIONS, _activation_name, _apply
from ..context import Context, LayerCall, _keras, _source, converts


@converts("Activation")
def _activation_layer(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    kind = _activation_name(layer.activation, f"layer {layer.name!r}")
    if kind == "linear":
        return ctx.add("identity", layer.name, [x], source=_source(layer))
    return _apply(ctx, ACTIVATIONS[kind], layer.name, x, _source(layer))


@converts("ReLU")
def _relu(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    max_value, slope, threshold = (
        layer.max_value,
        float(layer.negative_slope),
        float(layer.threshold),
    )
    if threshold != 0 or (slope != 0 and max_value is not None):
        raise UnsupportedError(
            f"layer {layer.name!r}: ReLU with threshold={threshold} and "
            f"negative_slope={slope}, max_value={max_value} has no Core ML "
            "equivalent; use max_value or negative_slope alone"
        )
    if slope:
        attrs = {"kind": "leaky_relu", "alpha": slope}
    elif max_value is not None:
        attrs = {"kind": "clip", "min": 0.0, "max": float(max_value)}
    else:
        attrs = {"kind": "relu"}
    return ctx.add("activation", layer.name, [x], attrs=attrs, source=_source(layer))


@converts("LeakyReLU")
def _leaky_relu(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    slope = float(getattr(layer, "negative_slope", getattr(layer, "alpha", 0.3)))
    return ctx.add(
        "activation",
        layer.name,
        [x],
        attrs={"kind": "leaky_relu", "alpha": slope},
        source=_source(layer),
    )


@converts("ELU")
def _elu(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    return ctx.add(
        "activation",
        layer.name,
        [x],
        attrs={"kind": "elu", "alpha": float(layer.alpha)},
        source=_source(layer),
    )


@converts("Softmax")
def _softmax(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
    if axis not in (-1, len(x.shape)):
        raise UnsupportedError(
            f"layer {layer.name!r}: softmax over axis {layer.axis}; Core ML's "
            "softmax works on the channel (last) axis"
        )
    if call.kwargs.get("mask") is not None:
        raise UnsupportedError(f"layer {layer.name!r}: masked softmax is not supported")
    return ctx.add("softmax", layer.name, [x], source=_source(layer))


def _merge(op: str):
    def convert(ctx: Context, layer, call: LayerCall):
        # Broadcasting as Core ML's classic add/multiply do it, (C, 1, 1) against (C, H, W)
        # as in squeeze-excitation blocks, is checked by the op's shape rule (ops/elementwise).
        if any(len(t.shape) != len(call.out_shape) for t in call.inputs):
            raise UnsupportedError(
                f"layer {layer.name!r}: inputs of shapes "
                f"{[t.shape for t in call.inputs]} differ in rank; give all "
                "inputs the same rank"
            )
        ops.output_shape(Node(op, layer.name, [], []), [t.shape for t in call.inputs])
        return ctx.add(op, layer.name, call.inputs, source=_source(layer))

    return convert


def _scalar_operand(layer, call: LayerCall) -> tuple:
    """(tensor, number, tensor_first) of an arithmetic op between a tensor and a number."""
    operands = call.kwargs.get("operands", [])
    numbers = [o for o in operands if isinstance(o, (int, float)) and not isinstance(o, bool)]
    if len(operands) != 2 or len(numbers) != 1 or len(call.inputs) != 1:
        raise UnsupportedError(
            f"operation {layer.name!r} ({type(layer).__name__}) of "
            f"{len(call.inputs)} tensor(s) and {len(numbers)} number(s) is not "
            "supported; use a tensor and a number, or an Add/Multiply layer"
        )
    return call.inputs[0], float(numbers[0]), not isinstance(operands[0], (int, float))


def _affine_op(kind: str):
    """x + c, c + x, x - c, c - x, x * c, c * x, x / c as a linear activation (alpha x + beta)."""

    def convert(ctx: Context, layer, call: LayerCall):
        if kind in ("add", "mul") and len(call.inputs) == 2:
            return _merge(kind)(ctx, layer, call)
        x, c, tensor_first = _scalar_operand(layer, call)
        alpha, beta = {
            "add": (1.0, c),
            "mul": (c, 0.0),
            "sub": (1.0, -c) if tensor_first else (-1.0, c),
        }.get(kind, (1.0, 0.0))
        if kind == "div":
            if not tensor_first or c == 0:
                raise UnsupportedError(
                    f"operation {layer.name!r}: only a tensor divided by a "
                    "non-zero number is supported"
                )
            alpha = 1.0 / c
        return ctx.add(
            "activation",
            layer.name,
            [x],
            attrs={"kind": "linear", "alpha": alpha, "beta": beta},
            source=_source(layer),
        )

    return convert


converts("ops.Add")(_affine_op("add"))
converts("ops.Multiply")(_affine_op("mul"))
converts("ops.Subtract")(_affine_op("sub"))
converts("ops.TrueDivide", "ops.Divide")(_affine_op("div"))
converts("Add")(_merge("add"))
converts("Multiply")(_merge("mul"))


@converts("Concatenate")
def _concatenate(ctx: Context, layer, call: LayerCall):
    rank = len(call.out_shape)
    if layer.axis not in (-1, rank) or rank == 2:
        raise UnsupportedError(
            f"layer {layer.name!r}: concatenation along axis {layer.axis}; only "
            "the channel (last) axis of vectors or images is supported"
        )
    return ctx.add("concat", layer.name, call.inputs, source=_source(layer))


def _per_channel(value, channels: int, where: str) -> np.ndarray:
    array = np.asarray(_keras().ops.convert_to_numpy(value), dtype=np.float64)
    if array.size not in (1, channels) or array.size != max(array.shape, default=1):
        raise UnsupportedError(
            f"{where}: expected a scalar or one value per channel, got shape {array.shape}"
        )
    return np.broadcast_to(array.reshape(-1), (channels,)).astype(np.float32)


@converts("Rescaling")
def _rescaling(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    where = f"layer {layer.name!r}"
    channels = x.shape[0]
    weights = {
        "scale": _per_channel(layer.scale, channels, where),
        "bias": _per_channel(layer.offset, channels, where),
    }
    return ctx.add("scale", layer.name, [x], weights=weights, source=_source(layer))


@converts("Normalization")
def _normalization(ctx: Context, layer, call: LayerCall):
    (x,) = call.inputs
    where = f"layer {layer.name!r}"
    axis = layer.axis if isinstance(layer.axis, (tuple, list)) else (layer.axis,)
    if layer.invert or tuple(axis) not in ((-1,), (len(x.shape),)):
        raise UnsupportedError(
            f"{where}: only normalization over the last axis (invert=False) is supported"
        )
    channels = x.shape[0]
    mean = _per_channel(layer.mean, channels, where).astype(np.float64)
    std = np.maximum(
        np.sqrt(_per_channel(layer.variance, channels, where).astype(np.float64)),
        _keras().backend.epsilon(),
    )
    weights = {"scale": (1 / std).astype(np.float32), "bias": (-mean / std).astype(np.float32)}
    return ctx.add("scale", layer.name, [x], weights=weights, source=_source(layer))
