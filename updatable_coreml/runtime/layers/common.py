"""Blob views shared by every layer family (the conventions are in ``registry``).

* Classic (rank-5) layers see their input as ``(..., C, H, W)``: a ``(B, C)`` vector blob is
  ``(B, C, 1, 1)``, a ``(B, H, W)`` blob (a rank-2 tensor from an ND layer) is
  ``(B, 1, H, W)``, and from rank 4 up the leading axes are batch-like (:func:`to_nchw` folds
  them into N for 2-D windows, :func:`_classic` keeps them).
* A sequence travels batch first, ``(B, Seq, C, H, W)``; layers that act on Core ML's sequence
  axis see every blob that way (:func:`_with_sequence`).
* :func:`_restore` drops the axes a view added, so a layer keeps its input's rank whenever
  the result allows it.
* ND layers (names ending in ``ND``, ``Static``, ``Broadcastable``, transpose, squeeze, ...)
  see Core ML's tensor behind the batch axis: a per-example tensor of rank r is a blob of
  rank r + 1. Axes, shapes and per-axis lists in the file describe the Core ML tensor;
  :func:`_nd_axis` moves them past the batch axis, and constants get a batch of one.

Size helpers (``_per_example`` ...) serve the families' size estimates (see ``limits``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...errors import RuntimeLayerError

Blobs = Sequence[np.ndarray]


def _fail(layer, what: str) -> RuntimeLayerError:
    return RuntimeLayerError(f"layer {layer.name!r} ({layer.WhichOneof('layer')}): {what}")


def to_nchw(x: np.ndarray) -> np.ndarray:
    """View a blob as ``(N, C, H, W)``: vectors become 1x1 maps, extra leading axes fold into N."""
    if x.ndim == 2:
        return x[:, :, None, None]
    if x.ndim == 3:
        raise ValueError(f"needs a rank-1 or rank>=3 input per example, got shape {x.shape[1:]}")
    return x.reshape((-1,) + x.shape[-3:])


def from_nchw(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Give ``y`` (computed on ``to_nchw(like)``) the rank of ``like`` back."""
    if like.ndim == 2 and y.shape[2:] == (1, 1):
        return y.reshape(y.shape[:2])
    if like.ndim <= 4:
        return y
    return y.reshape(like.shape[:-3] + y.shape[1:])


def channel_shape(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Shape per-channel ``values`` (length C or 1) to broadcast over axis -3 of ``x``."""
    if values.size == 1:
        return values.reshape(())
    return values.reshape((-1,) + (1, 1) * (x.ndim >= 4))


def _classic(x: np.ndarray) -> np.ndarray:
    """View a blob as ``(..., C, H, W)``; see the module docstring."""
    if x.ndim == 3:
        return x[:, None]
    return x.reshape(x.shape + (1,) * (4 - x.ndim)) if x.ndim < 4 else x


def _with_sequence(layer, x: np.ndarray) -> np.ndarray:
    """View a blob as ``(B, Seq, C, H, W)``; blobs without a sequence axis have Seq = 1."""
    view = _classic(x)
    if view.ndim == 4:
        return view[:, None]
    if view.ndim != 5:
        raise _fail(layer, f"needs a (B, C), (B, C, H, W) or (B, Seq, C, H, W) blob, got {x.shape}")
    return view


def _restore(y: np.ndarray, rank: int) -> np.ndarray:
    """Undo :func:`_classic` / :func:`_with_sequence` where the result has unit axes there."""
    if rank < 5 and y.ndim == 5 and y.shape[1] == 1:
        y = y[:, 0]
    if rank == 3 and y.ndim == 4 and y.shape[1] == 1:
        y = y[:, 0]
    if rank < 3 and y.ndim == 4 and all(d == 1 for d in y.shape[rank:]):
        y = y.reshape(y.shape[:rank])
    return y


def _nd_axis(layer, axis: int, rank: int) -> int:
    """Blob axis of Core ML axis ``axis`` (negative counts from the end) of a rank-``rank``
    per-example tensor, i.e. one past it for the batch axis; refuses an axis outside it."""
    if not -rank <= axis < rank:
        raise _fail(layer, f"axis {axis} is out of range for a rank-{rank} tensor")
    return axis % rank + 1


def _same_rank(blobs: Blobs) -> list[np.ndarray]:
    """Give ND blobs one rank by inserting unit axes right after the batch axis.

    Core ML broadcasts ND tensors aligned at their last axis; the batch axis must stay first.
    """
    rank = max(b.ndim for b in blobs)
    return [b.reshape(b.shape[:1] + (1,) * (rank - b.ndim) + b.shape[1:]) for b in blobs]


def _common_batch(layer, blobs: Blobs) -> list[np.ndarray]:
    """Repeat batch-of-one blobs (loaded constants) to the batch of the others."""
    batch = max(len(b) for b in blobs)
    if any(len(b) not in (1, batch) for b in blobs):
        raise _fail(layer, f"inputs have different batch sizes {[len(b) for b in blobs]}")
    return [np.broadcast_to(b, (batch,) + b.shape[1:]) for b in blobs]


def _broadcast(layer, arrays: Blobs) -> None:
    try:
        np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise _fail(layer, f"input shapes {shapes} cannot be broadcast together") from None


def _param(layer, values: np.ndarray, shape: Sequence[int], what: str) -> np.ndarray:
    """Shape a classic parameter declared ``[1]``, ``[C]``, ``[1, H, W]`` or ``[C, H, W]``.

    The result broadcasts against a ``(..., C, H, W)`` view.
    """
    dims = tuple(int(d) for d in shape) or (values.size,)
    if len(dims) not in (1, 3) or math.prod(dims) != values.size:
        raise _fail(layer, f"{what} of {values.size} values does not fit declared shape {dims}")
    return values.reshape(dims + (1, 1) if len(dims) == 1 else dims)


def _per_example(blob: np.ndarray) -> int:
    return blob.size // blob.shape[0] if blob.ndim and blob.shape[0] else blob.size


def _spatial(blob: np.ndarray) -> tuple[int, int]:
    """H, W of a blob seen as ``(..., C, H, W)`` (1, 1 for vectors)."""
    return (blob.shape[-2], blob.shape[-1]) if blob.ndim >= 4 else (1, 1)


def _border_sum(amounts) -> tuple[int, int]:
    edges = [int(e.startEdgeSize) + int(e.endEdgeSize) for e in amounts.borderAmounts]
    edges += [0] * (2 - len(edges))
    return edges[0], edges[1]


def _positive(values, default: int = 1) -> list[int]:
    return [max(int(v), 1) for v in values] or [default, default]


def _values(layer, blob: np.ndarray, what: str) -> np.ndarray:
    """A parameter given as an input blob (a shape, repetitions, an index): the first
    example's values, which every example of the batch must share (one tensor shape per
    prediction, as in Core ML)."""
    blob = np.asarray(blob)
    if len(blob) > 1 and not (blob == blob[:1]).all():
        raise _fail(
            layer,
            f"the {what} input differs between the examples of the batch; predict "
            "them one at a time",
        )
    return blob[0].reshape(-1)


def _shape_of(layer, blob: np.ndarray, what: str) -> tuple[int, ...]:
    values = _values(layer, blob, what)
    if np.any(values != np.round(values)):
        raise _fail(layer, f"the {what} input holds non-integer values {values.tolist()}")
    return tuple(int(v) for v in values)
