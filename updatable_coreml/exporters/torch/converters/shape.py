"""Shape ops that keep the batch axis, concatenation, and ops that compute nothing on device."""

from __future__ import annotations

import operator
from typing import Any

from ....errors import UnsupportedError
from ...common.rules import reshape_kind
from .. import layout
from ..context import (
    Translation,
    _op_name,
    channel_axis,
    converter,
    example_shape,
    full_shape,
    where,
)
from .sequence import bag_indices
from .tokens import concatenate_tokens


@converter("flatten", "view", "reshape", "_unsafe_view", "squeeze", "unsqueeze")
def _reshape(state: Translation, fx: Any, a: dict) -> None:
    """Any shape change that keeps the batch axis: none, a flatten, or a reshape. A reshape of
    a rearranged activation, or to more axes than (C, H, W), rearranges the elements torch
    sees (``layout``): ShuffleNet's ``view(N, g, C / g, H, W)`` before its transpose."""
    source = fx.args[0]
    if bag_indices(fx):
        return
    op, attrs = reshape_kind(full_shape(source), full_shape(fx), f"{_op_name(fx)} in {where(fx)}")
    target = example_shape(fx)
    # an image reshaped to (C, H * W) is not a sequence: a ViT's patches on their way to tokens
    image_to_rank2 = len(target) == 2 and len(example_shape(source)) == 3
    if source.name in state.views or (op == "reshape" and (len(target) > 3 or image_to_rank2)):
        layout.rearrange(state, fx, source, lambda index: index.reshape(target))
    elif op == "alias":
        state.alias(fx, source)
    else:
        state.emit(fx, op, [state.tensor(source)], attrs=attrs)


@converter("cat", "concat")
def _cat(state: Translation, fx: Any, a: dict) -> None:
    """A concatenation; of one tensor (torchvision's DenseNet calls ``torch.cat([x], 1)``) it
    is that tensor: Core ML refuses a concat layer with fewer than 2 inputs. With a constant
    or tokens among the tensors, it is a class token joining tokens (``tokens``)."""
    tensors = list(a["tensors"])
    if len(tensors) == 1:
        state.alias(fx, tensors[0])
        return
    if any(state.is_weight(t) or t.name in state.views for t in tensors):
        concatenate_tokens(state, fx, tensors, int(a["dim"]))
        return
    channel_axis(fx, int(a["dim"]), "concatenation")
    state.emit(fx, "concat", [state.tensor(t) for t in tensors])


@converter("chunk", "split")
def _chunk(state: Translation, fx: Any, a: dict) -> None:
    """``torch.chunk`` / ``split`` along the channels (ShuffleNet's ``x.chunk(2, dim=1)``):
    one classic channel slice per piece that is read, written for the ``getitem`` that reads
    it (pieces of ``ceil(C / chunks)`` or ``split_size`` channels, the last one shorter, as
    torch cuts them)."""
    source = a["self"]
    rank = len(full_shape(source))
    if int(a["dim"]) % rank != 1 or rank != 4:
        raise UnsupportedError(
            f"{_op_name(fx)} along axis {a['dim']} of a rank-{rank} tensor in {where(fx)}: "
            "only the channels (torch dim 1) of an image can be cut into pieces"
        )
    channels = full_shape(source)[1]
    size = -(-channels // int(a["chunks"])) if _op_name(fx) == "chunk" else a["split_size"]
    if not isinstance(size, int) or size <= 0:
        raise UnsupportedError(
            f"{_op_name(fx)} in {where(fx)} into pieces of {size!r} channels; give one "
            "positive size (split into a list of sizes is not supported)"
        )
    bounds = [(start, min(start + size, channels)) for start in range(0, channels, size)]
    for user in list(fx.users):
        if user.target is not operator.getitem:
            raise UnsupportedError(
                f"the pieces of {_op_name(fx)} in {where(fx)} are used as a list; "
                "index them (x1, x2 = x.chunk(2, dim=1))"
            )
        index = int(user.args[1])
        start, end = bounds[index]
        node = state.emit(
            fx,
            "slice_channels",
            [state.tensor(source)],
            attrs={"start": start, "end": end},
            suffix=f"_{index % len(bounds)}",
        )
        state.tensors[user.name] = node.outputs[0]
    state.tensors.pop(fx.name, None)


@converter("clone", "contiguous", "alias", "detach", "lift_fresh_copy")
def _identity(state: Translation, fx: Any, a: dict) -> None:
    state.alias(fx, fx.args[0])


@converter("dropout", "feature_dropout", "alpha_dropout")
def _dropout(state: Translation, fx: Any, a: dict) -> None:
    """The in-place forms (``nn.Dropout(inplace=True)``) name their operand ``self``."""
    source = a["input"] if "input" in a else a["self"]
    state.emit(fx, "dropout", [state.tensor(source)], attrs={"rate": float(a["p"])})
