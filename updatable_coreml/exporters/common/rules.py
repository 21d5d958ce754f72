"""Translation rules the torch and ONNX frontends share: both see (N, C, H, W) tensors with a
batch axis, and both meet the same constructs Core ML can only take in one form."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

from ...errors import UnsupportedError

#: The largest float32: ONNX's Clip without a bound, torch's hardtanh up to "infinity".
FLOAT_MAX = float(np.finfo(np.float32).max)

#: Why log_softmax may only be the model's output.
LOG_SOFTMAX_ONLY_AS_OUTPUT = (
    "Core ML has no log-softmax layer: log_softmax is only supported as the model's output, "
    "exported as softmax (softmax(log_softmax(x)) == softmax(x), so cross-entropy on the "
    "probabilities trains like NLL on the log-probabilities)"
)


def reshape_kind(before: Sequence[int], after: Sequence[int], where: str) -> tuple[str, dict]:
    """A shape change that keeps the batch axis as an IR op: ``("alias", {})`` when nothing
    changes, ``("flatten", {})`` to (batch, features), else ``("reshape", {"shape": ...})``.

    Core ML has no batch axis inside a layer, so a reshape that moves data across examples
    cannot be expressed: refused.
    """
    before, after = tuple(before), tuple(after)
    if after[:1] != before[:1]:
        raise UnsupportedError(
            f"{where} reshapes across the batch axis ({list(before)} -> "
            f"{list(after)}); keep axis 0 as the batch (and export with a batch "
            "of 2 or more to make this unambiguous)"
        )
    if after == before:
        return "alias", {}
    if len(after) == 2:
        return "flatten", {}
    return "reshape", {"shape": after[1:]}


def clip_activation(low: Optional[float], high: Optional[float]) -> dict:
    """IR activation attrs for clamping to [low, high] (None: unbounded): ReLU for [0, inf),
    ReLU6 for [0, 6] (Core ML's own layers), else a clip."""
    low = -FLOAT_MAX if low is None else float(low)
    high = FLOAT_MAX if high is None else float(high)
    if (low, high) == (0.0, FLOAT_MAX):
        return {"kind": "relu"}
    if (low, high) == (0.0, 6.0):
        return {"kind": "relu6"}
    return {"kind": "clip", "min": low, "max": high}


def require_spatial_axes(axes: Sequence[int], rank: int, what: str, where: str) -> None:
    """A mean/max over the spatial axes of (N, C, H, W) is global pooling; refuse any other."""
    if rank != 4 or sorted(int(a) % rank for a in axes) != [2, 3]:
        raise UnsupportedError(
            f"{what} over axes {list(axes)} of a rank-{rank} tensor in {where}: "
            "only the spatial axes [2, 3] of (N, C, H, W) (global pooling) "
            "are supported"
        )
