"""A vision transformer's tokens: constants added to activations, the class token, one token
or a run of tokens taken out.

torch holds tokens as (N, S, C); the IR holds them channel-first, as the (C, H, W) tensor
whose positions they are (a ViT's patches come from a convolution: ``x.reshape(N, C, H * W)
.permute(0, 2, 1)``), seen through a channel-last ``layout.View``. Per-token ops (Linear,
LayerNorm, GELU) are then the classic per-position layers. Once the class token joins, the
tensor is (C, 1, S): the tokens along the width, as a 1-D map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ....errors import UnsupportedError
from .. import layout
from ..context import Translation, converter, example_shape, full_shape, where


@converter("expand")
def _expand(state: Translation, fx: Any, a: dict) -> None:
    """A parameter repeated over the batch (a ViT's ``class_token.expand(N, -1, -1)``): every
    example reads the same values, so it stands for the parameter itself."""
    source = a["self"]
    shape = full_shape(fx)
    if state.is_weight(source):
        array, fqn = state.weight(source)
        if array.shape == (1, *shape[1:]):
            state.derived[fx.name] = (array, fqn)
            return
    raise UnsupportedError(
        f"expand to {list(shape)} in {where(fx)}: only a parameter shaped (1, ...) repeated "
        "over the batch axis (class_token.expand(N, -1, -1)) is supported; Core ML layers "
        "see one example at a time"
    )


def add_constant(state: Translation, fx: Any, source: Any, constant: Any) -> None:
    """``source + constant`` with a constant that is not one number (a ViT's position
    embedding, (1, S, C)): an ``add_constant`` holding the constant in the IR tensor's own
    layout, so it also works on a view (each element goes where the view reads it)."""
    if full_shape(fx) != full_shape(source):
        raise UnsupportedError(
            f"add of a {list(full_shape(source))} activation and a constant in {where(fx)} "
            f"makes {list(full_shape(fx))}: only a constant that broadcasts to the "
            "activation's shape can be added"
        )
    array, fqn = state.weight(constant)
    per_example = np.broadcast_to(array, full_shape(fx))[0]
    view = state.views.get(source.name)
    base = view.base if view is not None else example_shape(source)
    index = view.index if view is not None else np.arange(per_example.size)
    value = np.zeros(int(np.prod(base)), np.float32)
    value[index.reshape(-1)] = per_example.reshape(-1)
    tensor = view.tensor if view is not None else state.tensor(source)
    state.emit(fx, "add_constant", [tensor], weights={"value": (value.reshape(base), fqn)})
    if view is not None:
        layout.emitted_as(state, fx, view)


def concatenate_tokens(state: Translation, fx: Any, tensors: Sequence[Any], dim: int) -> None:
    """``torch.cat`` of one activation's tokens and constant tokens along the token axis (a
    ViT's ``cat([class_token, patches], dim=1)``): the tokens reshaped to (C, 1, T), zero
    columns padded in where the constants go, and an ``add_constant`` with the constants
    there. Classic layers only; the result is (C, 1, S) seen as tokens."""
    shape = full_shape(fx)
    activations = [t for t in tensors if not state.is_weight(t)]
    view = layout.channel_last(state, activations[0]) if len(activations) == 1 else None
    if len(shape) != 3 or dim % 3 != 1 or view is None or view.index.ndim != 2:
        raise UnsupportedError(
            f"concatenation of {len(activations)} activations and "
            f"{len(tensors) - len(activations)} constants along axis {dim} in {where(fx)}: "
            "along the token axis (dim 1 of (N, S, C)), only the tokens of one image with "
            "constant tokens (a class token) can be concatenated"
        )
    (tokens,) = activations
    count = full_shape(tokens)[1]
    channels, total = shape[2], shape[1]
    before = sum(full_shape(t)[1] for t in tensors[: list(tensors).index(tokens)])
    tensor = view.tensor
    if view.base != (channels, 1, count):
        tensor = state.emit(
            fx, "reshape", [tensor], attrs={"shape": (channels, 1, count)}, suffix=".tokens"
        ).outputs[0]
    padded = state.emit(
        fx,
        "pad",
        [tensor],
        attrs={"pads": (0, 0, before, total - before - count)},
        suffix=".padded",
    )
    value = np.zeros((channels, 1, total), np.float32)
    start, source = 0, ""  # the (first) constant's parameter, for the report
    for part in tensors:
        size = full_shape(part)[1]
        if part is not tokens:
            array, fqn = state.weight(part)
            value[:, 0, start : start + size] = np.broadcast_to(array, full_shape(part))[0].T
            source = source or fqn
        start += size
    state.emit(fx, "add_constant", padded.outputs, weights={"value": (value, source)})
    layout.emitted_channel_last(state, fx, (channels, 1, total), view.made_by)


def select_token(state: Translation, fx: Any, source: Any, dim: int, index: int) -> None:
    """``x[:, t]`` of tokens (a ViT's class token, ``x[:, 0]``): that position cropped out of
    the (C, H, W) tensor behind them and flattened to a (C,) vector."""
    view = layout.channel_last(state, source)
    rank = len(full_shape(source))
    if view is None or view.index.ndim != 2 or dim % rank != 1:
        raise UnsupportedError(
            f"select (index {index} of axis {dim}) of a rearranged activation in {where(fx)}: "
            "only one token of (N, S, C) tokens (x[:, t]) can be taken"
        )
    _, height, width = view.base
    row, column = divmod(index % (height * width), width)
    crop = state.emit(
        fx,
        "crop",
        [view.tensor],
        attrs={"crops": (row, height - 1 - row, column, width - 1 - column)},
        suffix=".token",
    )
    state.emit(fx, "flatten", crop.outputs)


@converter("slice")
def _slice(state: Translation, fx: Any, a: dict) -> None:
    """A slice that keeps a whole axis computes nothing (export writes ``x[:, ...]`` so); a
    run of tokens (``x[:, 1:]``, the patches without the class token, before a mean) is the
    same run of positions cropped out of the (C, 1, S) tensor behind them."""
    source = a["self"]
    rank = len(full_shape(source))
    dim, step = int(a["dim"]) % rank, int(a["step"])
    count = full_shape(source)[dim]
    start = 0 if a["start"] is None else int(a["start"])
    end = count if a["end"] is None else int(a["end"])
    start, end = (max(0, min(count, v + count if v < 0 else v)) for v in (start, end))
    view = state.views.get(source.name)
    if (start, end, step) == (0, count, 1):
        if view is not None:
            state.views[fx.name] = view
        else:
            state.alias(fx, source)
        return
    view = layout.channel_last(state, source)
    if view is None or view.index.ndim != 2 or view.base[1] != 1 or dim != 1 or step != 1:
        raise UnsupportedError(
            f"slice along axis {a['dim']} in {where(fx)}: only a run of tokens (x[:, a:b] of "
            "(N, S, C) tokens, step 1) can be sliced; an image's channels are cut with chunk "
            "or split"
        )
    state.emit(fx, "crop", [view.tensor], attrs={"crops": (0, 0, start, count - end)})
    layout.emitted_channel_last(state, fx, (view.base[0], 1, end - start), view.made_by)
