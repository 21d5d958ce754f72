"""Shape ops that keep the batch axis, concatenation, and ops that compute nothing on device."""

from __future__ import annotations

from typing import Any

from ...common.rules import reshape_kind
from ..context import Translation, _op_name, channel_axis, converter, full_shape, where
from .sequence import bag_indices


@converter("flatten", "view", "reshape", "_unsafe_view", "squeeze", "unsqueeze")
def _reshape(state: Translation, fx: Any, a: dict) -> None:
    """Any shape change that keeps the batch axis: none, a flatten, or a reshape."""
    source = fx.args[0]
    if bag_indices(fx):
        return
    op, attrs = reshape_kind(full_shape(source), full_shape(fx), f"{_op_name(fx)} in {where(fx)}")
    if op == "alias":
        state.alias(fx, source)
    else:
        state.emit(fx, op, [state.tensor(source)], attrs=attrs)


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


@converter("clone", "contiguous", "alias", "detach", "lift_fresh_copy")
def _identity(state: Translation, fx: Any, a: dict) -> None:
    state.alias(fx, fx.args[0])


@converter("dropout", "feature_dropout", "alpha_dropout")
def _dropout(state: Translation, fx: Any, a: dict) -> None:
    """The in-place forms (``nn.Dropout(inplace=True)``) name their operand ``self``."""
    source = a["input"] if "input" in a else a["self"]
    state.emit(fx, "dropout", [state.tensor(source)], attrs={"rate": float(a["p"])})
