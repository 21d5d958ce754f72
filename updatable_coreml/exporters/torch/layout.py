"""Activations torch rearranges (permute, transpose, view) that Core ML layers cannot hold.

Core ML's classic layers keep one layout, channel-first (C, H, W); torch code moves axes
around it: ConvNeXt's blocks look at an image channel-last (``permute(0, 2, 3, 1)``), apply
per-position ops (layer norm over the last axis, Linear, GELU) and permute back; ShuffleNet
shuffles channels with ``view(N, g, C/g, H, W)``, ``transpose(1, 2)``, ``view(N, C, H, W)``;
a vision transformer sees an image's positions as (N, S, C) tokens
(``x.flatten(2).transpose(1, 2)``) and keeps them so.

Such a value is held as a ``View``: the IR tensor it reads and, for every element torch sees,
the flat (C-order) position it reads in that tensor. Axis moves and reshapes only rearrange
that index, so they are exact by construction. A view becomes an IR tensor again when its
index is the identity (no layer) or a channel permutation (``permute_channels``); until then,
only ops that act on each element alone (activations, copies) or, on a channel-last view,
on each position alone (``layer_norm`` over the last axis, ``linear``, a per-channel scale)
may read it, and, on tokens, the ops of ``converters/tokens.py`` and
``converters/attention.py``. Any other op reading it is refused by ``Translation.tensor``,
naming the op that made the view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..common.rules import reshape_kind
from .context import Translation, _op_name, example_shape, where

#: aten ops that compute each element from that element alone (or copy it): on a view they
#: run on the tensor behind it, and their result is the same view of their output.
PER_ELEMENT = frozenset(
    {
        "relu",
        "relu6",
        "sigmoid",
        "tanh",
        "silu",
        "hardswish",
        "hardsigmoid",
        "hardtanh",
        "leaky_relu",
        "elu",
        "softplus",
        "gelu",
        "clone",
        "contiguous",
        "alias",
        "detach",
        "dropout",
        "feature_dropout",
        "alpha_dropout",
    }
)


@dataclass(frozen=True)
class View:
    """IR tensor ``tensor`` (per-example shape ``base``) as torch sees it: ``index`` has
    torch's per-example shape, each entry the flat position it reads in ``tensor``."""

    tensor: str
    base: tuple[int, ...]
    index: np.ndarray
    made_by: str  # "permute of an activation in module 'x' (Permute)", for refusals


def _identity(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)


def channel_last_index(base: tuple[int, ...]) -> np.ndarray:
    """The index of ``permute(0, 2, 3, 1)`` of a (C, H, W) tensor: (H, W, C)."""
    return _identity(base).transpose(1, 2, 0)


def is_channel_last(view: View) -> bool:
    """``view`` reads a (C, H, W) tensor position by position with the channels last: torch
    sees (H, W, C) (ConvNeXt) or the positions flattened in row-major order, (H * W, C) (a
    ViT's tokens, ``x.reshape(N, C, H * W).permute(0, 2, 1)``)."""
    if len(view.base) != 3 or view.index.ndim not in (2, 3):
        return False
    if view.index.shape[-1] != view.base[0]:
        return False
    return np.array_equal(view.index.reshape(-1), channel_last_index(view.base).reshape(-1))


def _as_view(state: Translation, arg: Any) -> View:
    """The view behind ``arg``, or the identity view of a plain IR tensor."""
    found = state.views.get(str(getattr(arg, "name", "")))
    if found is not None:
        return found
    base = example_shape(arg)
    return View(state.tensor(arg), base, _identity(base), "")


def rearrange(
    state: Translation, fx: Any, source: Any, move: Callable[[np.ndarray], np.ndarray]
) -> None:
    """``fx`` rearranges ``source`` per example: ``move`` maps its index to ``fx``'s."""
    before = _as_view(state, source)
    index = np.asarray(move(before.index))
    if index.shape != example_shape(fx):
        raise AssertionError(f"{fx.name}: rearranged index {index.shape} != {example_shape(fx)}")
    made_by = before.made_by or f"{_op_name(fx)} of an activation in {where(fx)}"
    settle(state, fx, View(before.tensor, before.base, index, made_by))


def _channel_order(view: View) -> Optional[list[int]]:
    """The channel order when ``view`` is a (C, H, W) tensor with its channels reordered."""
    if view.index.shape != view.base or len(view.base) != 3:
        return None
    channels, height, width = view.base
    plane = height * width
    order = view.index[:, 0, 0] // plane
    expected = order[:, None, None] * plane + _identity((height, width))[None]
    if not np.array_equal(view.index, expected):
        return None
    return [int(c) for c in order]


def settle(state: Translation, fx: Any, view: View) -> None:
    """Record ``fx`` as ``view``: the tensor itself when nothing moved; a channel-last view
    stays one (of a (C, 1, 1) tensor it is also a mere reshape, but the ops after it read it
    per position); a reshape or flatten when only the shape changed to one the IR holds
    (rank 1 or 3; rank 2 would be a sequence); a ``permute_channels``
    node when only channels moved; else a pending view."""
    state.views.pop(fx.name, None)
    if view.index.shape == view.base and np.array_equal(view.index, _identity(view.base)):
        state.tensors[fx.name] = view.tensor
        return
    in_order = np.array_equal(view.index.reshape(-1), _identity(view.base).reshape(-1))
    # rank 2 in the IR is a sequence: an image seen as (C, H * W) stays a view (of tokens)
    as_sequence = view.index.ndim == 2 and len(view.base) != 2
    if in_order and not is_channel_last(view) and view.index.ndim <= 3 and not as_sequence:
        # the elements in their own order, another shape: a plain reshape or flatten
        op, attrs = reshape_kind((1, *view.base), (1, *view.index.shape), where(fx))
        state.emit(fx, op, [view.tensor], attrs=attrs)
        return
    order = _channel_order(view)
    if order is not None:
        state.emit(fx, "permute_channels", [view.tensor], attrs={"order": tuple(order)})
        return
    state.tensors.pop(fx.name, None)
    state.views[fx.name] = view


def channel_last(state: Translation, arg: Any) -> Optional[View]:
    """The view behind ``arg`` when it is a (C, H, W) tensor seen channel-last (as (H, W, C)
    or as tokens (H * W, C), ``is_channel_last``), else None."""
    view = state.views.get(str(getattr(arg, "name", "")))
    return view if view is not None and is_channel_last(view) else None


def emitted_channel_last(state: Translation, fx: Any, base: tuple[int, ...], made_by: str) -> None:
    """``fx`` was just emitted as a (C, H, W) IR tensor of shape ``base`` for a per-position
    op on a channel-last view: torch sees it channel-last too, in its own shape."""
    tensor = state.tensors.pop(fx.name)
    index = channel_last_index(base).reshape(example_shape(fx))
    state.views[fx.name] = View(tensor, base, index, made_by)


def per_element(state: Translation, fx: Any, run: Callable[[], None]) -> bool:
    """Run a per-element op on the tensor behind its one view input; False when ``fx`` reads
    no view (the caller converts it as usual)."""
    inputs = [node for node in fx.all_input_nodes if node.name in state.views]
    if not inputs:
        return False
    (source,) = inputs
    view = state.views[source.name]
    state.tensors[source.name] = view.tensor  # seen plain only while the op converts
    try:
        run()
    finally:
        del state.tensors[source.name]
    emitted_as(state, fx, view)
    return True


def emitted_as(state: Translation, fx: Any, view: View) -> None:
    """``fx`` was just emitted as an IR tensor shaped like ``view``'s base by an op that kept
    each element in place: torch sees it the way ``view`` is seen."""
    tensor = state.tensors.pop(fx.name)
    state.views[fx.name] = View(tensor, view.base, view.index, view.made_by)
