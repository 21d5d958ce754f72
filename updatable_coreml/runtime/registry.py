"""The reference runtime's per-layer tables (forward op, backward op, size estimate); weight
decoding lives in ``weights``. The layer families in ``layers/`` fill the tables; ``layers/__init__``
imports every family.

Conventions every op follows:

* A blob is a NumPy array whose first axis is the batch: a feature of shape ``(C, H, W)``
  travels as ``(B, C, H, W)``, a vector ``(C,)`` as ``(B, C)``. Classic (rank-5) layers view
  their input as ``(B, C, H, W)`` and keep its rank; sequences travel batch first,
  ``(B, Seq, C, H, W)``. ND layers see the Core ML tensor behind the batch axis: axes, shapes
  and permutations in the file describe the tensor without it, so ND ops shift them by one.
* A forward op is ``fn(layer, inputs, weight) -> list of outputs`` where ``layer`` is the
  ``NeuralNetworkLayer`` message, ``inputs`` the input blobs in ``layer.input`` order, and
  ``weight(field)`` returns the decoded, flat float array of the ``WeightParams`` named
  ``field`` in the layer's params message (the runtime's current value: updated weights
  after training).
* A backward op is ``fn(layer, x, y, gy, weight, want_input) -> (dx or None, {field: grad})``
  (see ``backward``); only layer types Core ML passes gradients through have one.
* A size estimate is ``fn(layer, inputs) -> values per example`` of the largest blob the
  layer would make, for layers whose output size comes from their parameters (see ``limits``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import RuntimeLayerError
from ..registry import Registry
from .weights import decode_weights  # noqa: F401  (its home before runtime/weights.py)

WeightGetter = Callable[[str], np.ndarray]
ForwardFn = Callable[[object, Sequence[np.ndarray], WeightGetter], list]
BackwardFn = Callable[
    [object, np.ndarray, np.ndarray, np.ndarray, WeightGetter, bool], tuple[np.ndarray | None, dict]
]
EstimateFn = Callable[[object, Sequence[np.ndarray]], int]

#: layer type (the ``NeuralNetworkLayer`` oneof name) -> forward op
FORWARD = Registry("forward op")
register_forward = FORWARD.register
#: layer type -> backward op (looked up through ``backward.backward_op``, which applies Core
#: ML's rule of which layers gradients pass)
BACKWARD = Registry("backward op")
register_backward = BACKWARD.register
#: layer type -> forward / backward op under the exact-rank mapping (EXACT_ARRAY_MAPPING), for
#: the layer types whose arithmetic depends on the Core ML rank of their input. Under the
#: rank-5 mapping a ``(C, H, W)`` feature is a rank-5 tensor, under the exact one a rank-3
#: tensor, and NeuralNetwork.proto reshapes the two differently (innerProduct: rank 3
#: ``(x1, x2, x3)`` -> ``(x1 * x2, x3)``, rank 5 -> ``(x1 * x2, x3 * x4 * x5)``).
FORWARD_EXACT_RANK = Registry("exact-rank forward op")
BACKWARD_EXACT_RANK = Registry("exact-rank backward op")
register_exact_rank_forward = FORWARD_EXACT_RANK.register
register_exact_rank_backward = BACKWARD_EXACT_RANK.register
#: layer type -> size estimate
ESTIMATES = Registry("size estimate")
register_estimate = ESTIMATES.register
#: className of a ``custom`` layer -> a Python implementation of it, the hook through which
#: the runtime runs a model with custom layers (Core ML runs the app's own ``MLCustomLayer``
#: class there, code no file holds). See ``layers/custom``; remove one with
#: ``CUSTOM_LAYERS.pop(className)``.
CUSTOM_LAYERS = Registry("custom layer class")
register_custom_layer = CUSTOM_LAYERS.register


def forward_op(layer, exact_rank: bool = False) -> ForwardFn:
    """The layer's forward op; ``exact_rank``: the network uses the exact-rank mapping."""
    kind = layer.WhichOneof("layer")
    if exact_rank and kind in FORWARD_EXACT_RANK:
        return FORWARD_EXACT_RANK[kind]
    try:
        return FORWARD[kind]
    except KeyError:
        raise RuntimeLayerError(
            f"layer {layer.name!r}: the reference runtime cannot run layer type {kind!r}"
        ) from None
