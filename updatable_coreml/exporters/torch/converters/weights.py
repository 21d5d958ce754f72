"""Layers with weights: linear (and its decomposed matmul forms), convolution, batch norm."""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import UnsupportedError
from .. import layout
from ..context import (
    Translation,
    _op_name,
    _pair,
    converter,
    example_shape,
    full_shape,
    where,
)
from .sequence import transpose_activation


@converter("linear")
def _linear(state: Translation, fx: Any, a: dict) -> None:
    view = layout.channel_last(state, a["input"])
    if view is not None:
        _linear_per_position(state, fx, a, view)
        return
    if len(example_shape(a["input"])) != 1:
        raise UnsupportedError(
            f"Linear on a rank-{len(full_shape(a['input']))} input in {where(fx)}: "
            "Core ML's innerProduct needs a flat (batch, features) input; "
            "flatten before it"
        )
    state.emit(
        fx,
        "dense",
        [state.tensor(a["input"])],
        weights={"weight": state.state(a["weight"]), "bias": state.state(a["bias"])},
    )


def _linear_per_position(state: Translation, fx: Any, a: dict, view: Any) -> None:
    """Linear over the last axis of a channel-last view (ConvNeXt's pointwise layers): the
    same map at every position, a 1x1 convolution of the (C, H, W) tensor behind it."""
    weight, fqn = state.weight(a["weight"])
    state.emit(
        fx,
        "conv2d",
        [view.tensor],
        attrs={"strides": (1, 1), "padding": "valid"},
        weights={
            "weight": (np.ascontiguousarray(weight[:, :, None, None]), fqn),
            "bias": state.state(a["bias"]),
        },
    )
    layout.emitted_channel_last(state, fx, (weight.shape[0], *view.base[1:]), view.made_by)


def _moved_axes(fx: Any, a: dict, rank: int) -> list[int]:
    """The axis order of a permute, transpose or t/numpy_T (all axes reversed)."""
    if _op_name(fx) == "permute":
        return [int(d) % rank for d in a["dims"]]
    axes = list(range(rank))
    if _op_name(fx) == "transpose":
        first, second = int(a["dim0"]) % rank, int(a["dim1"]) % rank
        axes[first], axes[second] = second, first
        return axes
    return axes[::-1]


@converter("permute", "t", "transpose", "numpy_T")
def _permute(state: Translation, fx: Any, a: dict) -> None:
    """A transposed weight (decomposed ``linear``); an activation's transpose is a sequence's
    when it is one (``converters/sequence.py``), else its axes move within each example
    (``layout``: a channel-last view, a channel shuffle)."""
    source = fx.args[0]
    if not state.is_weight(source) and len(full_shape(source)) == 3:
        if source.name not in state.views:
            transpose_activation(state, fx, a)
            return
    if not state.is_weight(source):
        axes = _moved_axes(fx, a, len(full_shape(source)))
        if axes[0] != 0:
            # refused when read, unless scaled_dot_product_attention reads it
            state.deferred[fx.name] = (
                f"{_op_name(fx)} of an activation in {where(fx)} moves the batch axis; "
                "Core ML layers see one example at a time: keep axis 0 first (except for "
                "the query, key and value of scaled_dot_product_attention)"
            )
            return
        per_example = [axis - 1 for axis in axes[1:]]
        layout.rearrange(state, fx, source, lambda index: index.transpose(per_example))
        return
    array, fqn = state.weight(source)
    axes = _moved_axes(fx, a, array.ndim)
    state.derived[fx.name] = (np.ascontiguousarray(array.transpose(axes)), fqn)


@converter("addmm", "mm")
def _matmul(state: Translation, fx: Any, a: dict) -> None:
    """``x @ W.T (+ b)`` with a weight operand: a dense layer, as in decomposed programs."""
    if (
        not state.is_weight(a["mat2"])
        or float(a.get("beta", 1)) != 1
        or float(a.get("alpha", 1)) != 1
    ):
        raise UnsupportedError(
            f"{_op_name(fx)} in {where(fx)} is not a linear layer (x @ W.T + b); "
            "only products with a weight are supported"
        )
    transposed, fqn = state.weight(a["mat2"])
    has_bias = _op_name(fx) == "addmm"  # addmm(bias, x, W.T); mm(x, W.T)
    bias = state.state(a["self"]) if has_bias else (None, "")
    state.emit(
        fx,
        "dense",
        [state.tensor(a["mat1"] if has_bias else a["self"])],
        weights={"weight": (np.ascontiguousarray(transposed.T), fqn), "bias": bias},
    )


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
    state.emit(
        fx,
        "conv2d",
        [state.tensor(a["input"])],
        attrs={
            "strides": _pair(a["stride"]),
            "dilations": _pair(a["dilation"]),
            "groups": int(a["groups"]),
            "padding": pads,
        },
        weights={"weight": state.state(a["weight"]), "bias": state.state(a["bias"])},
    )


@converter("batch_norm", "_native_batch_norm_legit_no_training")
def _batch_norm(state: Translation, fx: Any, a: dict) -> None:
    if a.get("training") or a["running_mean"] is None:
        raise UnsupportedError(
            f"batch norm in {where(fx)} normalizes with batch statistics in "
            "eval mode (track_running_stats=False); Core ML needs running "
            "mean and variance"
        )
    mean, mean_fqn = state.weight(a["running_mean"])
    channels = mean.shape[0]
    gamma = (
        state.state(a["weight"]) if a["weight"] is not None else (np.ones(channels, np.float32), "")
    )
    beta = state.state(a["bias"]) if a["bias"] is not None else (np.zeros(channels, np.float32), "")
    state.emit(
        fx,
        "batchnorm",
        [state.tensor(a["input"])],
        attrs={"eps": float(a["eps"])},
        weights={
            "gamma": gamma,
            "beta": beta,
            "mean": (mean, mean_fqn),
            "variance": state.state(a["running_var"]),
        },
    )
