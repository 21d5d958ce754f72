"""The reverse pass: which layers Core ML backpropagates through, its two losses, and the
walk over the graph (each layer family holds its own backward op).

Which layers pass gradients is Core ML's rule, read from ``coreml_rules`` (Apple's
``isLayerSupportedForBackprop``, the same in every release 3.0 to 9.0 except that
``uniDirectionalLSTM`` joined in 5.0b1): convolution, innerProduct, uniDirectionalLSTM,
flatten, pooling, batchnorm, and activation for ReLU, sigmoid and tanh. A classic ``reshape``
is not among them in any release, so the runtime refuses it on the trainable path like any
other layer outside the list. A softmax is differentiated only fused with the categorical
cross-entropy that reads it. Anything else on the path from the loss to an updatable layer is
refused with the layer's name, exactly where Core ML would refuse the model.

A backward op (``registry.BACKWARD``) is ``fn(layer, x, y, gy, weight, want_input) -> (dx or
None, {field: grad})``: ``x``/``y`` are the forward input/output blobs, ``gy`` the gradient of
the loss w.r.t. ``y``; parameter gradients are returned (flat, like the stored weights) only
for updatable layers.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

import numpy as np

from .. import coreml_rules
from ..errors import ConfigError, RuntimeLayerError
from .layers.activation import softmax_axis
from .registry import BACKWARD, BACKWARD_EXACT_RANK, BackwardFn

#: Layer types with several inputs or outputs whose gradient still flows from the first output
#: to the first input (an LSTM's extra inputs/outputs are its initial and final states).
MULTI_BLOB_TYPES = ("uniDirectionalLSTM",)


def backward_op(layer, through: bool = False, exact_rank: bool = False) -> BackwardFn:
    """The layer's backward op, or a RuntimeLayerError saying Core ML cannot train through it.

    ``through``: whether the gradient must reach the layer's input (an updatable layer lies
    before it). Core ML's rule does not depend on it; it is kept for the callers' plans.
    ``exact_rank``: the network uses the exact-rank mapping (registry.BACKWARD_EXACT_RANK).
    """
    kind = layer.WhichOneof("layer")
    activation = layer.activation.WhichOneof("NonlinearityType") if kind == "activation" else None
    what = f"activation {activation}" if kind == "activation" else kind
    single = len(layer.input) == 1 and len(layer.output) == 1
    if (
        coreml_rules.is_backpropagable(kind, activation)
        and kind in BACKWARD
        and (single or kind in MULTI_BLOB_TYPES)
    ):
        return BACKWARD_EXACT_RANK.get(kind, BACKWARD[kind]) if exact_rank else BACKWARD[kind]
    hints = {
        "softmax": " (a softmax is only allowed directly in front of the categorical "
        "cross-entropy loss)",
        "reshape": " (no Core ML release passes gradients through a classic reshape; use "
        "flatten, or reshape before the first updatable layer)",
    }
    raise RuntimeLayerError(
        f"layer {layer.name!r}: Core ML cannot backpropagate through {what}{hints.get(kind, '')}; "
        "it sits between the loss and an updatable layer: move it before the first updatable "
        "layer"
    )


# -- losses -----------------------------------------------------------------------------------


def _reduce_batch(per_example: np.ndarray, reduction: str) -> tuple[float, float]:
    """(batch loss, gradient scale per example) for a "mean" or "sum" batch reduction."""
    if reduction == "sum":
        return float(per_example.sum()), 1.0
    return float(per_example.mean()), 1.0 / per_example.shape[0]


def cross_entropy(probs: np.ndarray, classes: np.ndarray, reduction: str):
    """Loss of softmax outputs ``probs`` for class indices ``classes``, and its gradient
    w.r.t. the softmax *input* (``p - onehot``): the fused form Core ML requires."""
    batch = probs.shape[0]
    p = probs.reshape(batch, -1)
    if p.shape[1] != probs.shape[softmax_axis(probs)]:
        raise ConfigError(
            "categorical cross-entropy needs one probability vector per example, "
            f"got softmax output shape {probs.shape[1:]}"
        )
    bad = (classes < 0) | (classes >= p.shape[1])
    if bad.any():
        raise ConfigError(
            f"class index {int(classes[bad][0])} is out of range for {p.shape[1]} classes"
        )
    rows = np.arange(batch)
    picked = p[rows, classes]
    loss, scale = _reduce_batch(-np.log(np.maximum(picked, np.finfo(p.dtype).tiny)), reduction)
    grad = p.copy()
    grad[rows, classes] -= 1
    return loss, (grad * scale).reshape(probs.shape)


def mean_squared_error(
    pred: np.ndarray, target: np.ndarray, element_reduction: str, batch_reduction: str
):
    """Squared error per example reduced by ``element_reduction``, then over the batch."""
    batch = pred.shape[0]
    if target.size != pred.size:
        raise ConfigError(
            f"MSE target has {target.size // max(batch, 1)} values per example, "
            f"the loss input has {pred.size // max(batch, 1)}"
        )
    diff = pred - target.reshape(pred.shape).astype(pred.dtype, copy=False)
    squares = np.square(diff).reshape(batch, -1)
    per_example = squares.mean(axis=1) if element_reduction == "mean" else squares.sum(axis=1)
    loss, scale = _reduce_batch(per_example, batch_reduction)
    if element_reduction == "mean":
        scale /= squares.shape[1]
    return loss, diff * (2 * scale)


# -- the graph ----------------------------------------------------------------------------------


def backprop(
    network, order: Sequence[int], blobs: dict, grads: dict, needs_grad: Container[str]
) -> dict:
    """Reverse pass over layers ``order`` (given in forward order), seeded with ``grads``
    (blob -> dLoss/dblob). Input gradients are formed only for blobs in ``needs_grad`` (those
    downstream of an updatable layer), so a frozen prefix costs nothing.

    Returns {(layer index, field): gradient} for the updatable layers' weights and biases.
    """
    params: dict = {}
    for i in reversed(order):
        layer = network.layers[i]
        gy = grads.pop(layer.output[0], None)
        if gy is None:
            continue
        if any(name in grads for name in layer.output[1:]):
            raise RuntimeLayerError(
                f"layer {layer.name!r}: a gradient reaches one of its extra "
                "outputs (e.g. an LSTM's final states); only the first "
                "output can be trained through"
            )
        source = layer.input[0]
        want = source in needs_grad
        dx, layer_grads = backward_op(layer, want, network.exact_rank)(
            layer, blobs[source], blobs[layer.output[0]], gy, network.weight_getter(i), want
        )
        params.update(((i, field), grad) for field, grad in layer_grads.items())
        if want:
            grads[source] = grads[source] + dx if source in grads else dx
    return params
