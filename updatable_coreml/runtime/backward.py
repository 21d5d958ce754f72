"""Gradients of the layers Core ML can backpropagate through, and of its two losses.

Which layers pass gradients is Core ML's rule, read from ``coreml_rules`` (Apple's
``isLayerSupportedForBackprop``, the same in every release 3.0 to 9.0 except that
``uniDirectionalLSTM`` joined in 5.0b1): convolution, innerProduct, uniDirectionalLSTM,
flatten, pooling, batchnorm, and activation for ReLU, sigmoid and tanh. A classic ``reshape``
is not among them in any release, so the runtime refuses it on the trainable path like any
other layer outside the list. A softmax is differentiated only fused with the categorical
cross-entropy that reads it. Anything else on the path from the loss to an updatable layer is
refused with the layer's name, exactly where Core ML would refuse the model.

A backward op is ``fn(layer, x, y, gy, weight, want_input) -> (dx or None, {field: grad})``:
``x``/``y`` are the forward input/output blobs, ``gy`` the gradient of the loss w.r.t. ``y``;
parameter gradients are returned (flat, like the stored weights) only for updatable layers.
"""

from __future__ import annotations

import math
from typing import Callable, Container, Optional, Sequence

import numpy as np

from .. import coreml_rules
from ..errors import ConfigError, RuntimeLayerError
from ..registry import Registry
from . import ops_core as ops
from . import ops_extra as ox
from .registry import FORWARD, WeightGetter

BackwardFn = Callable[[object, np.ndarray, np.ndarray, np.ndarray, WeightGetter, bool],
                      tuple[Optional[np.ndarray], dict]]
BACKWARD = Registry("backward op")
register_backward = BACKWARD.register
#: Layer types with several inputs or outputs whose gradient still flows from the first output
#: to the first input (an LSTM's extra inputs/outputs are its initial and final states).
MULTI_BLOB_TYPES = ("uniDirectionalLSTM",)


def backward_op(layer, through: bool = False) -> BackwardFn:
    """The layer's backward op, or a RuntimeLayerError saying Core ML cannot train through it.

    ``through``: whether the gradient must reach the layer's input (an updatable layer lies
    before it). Core ML's rule does not depend on it; it is kept for the callers' plans.
    """
    kind = layer.WhichOneof("layer")
    activation = layer.activation.WhichOneof("NonlinearityType") if kind == "activation" else None
    what = f"activation {activation}" if kind == "activation" else kind
    single = len(layer.input) == 1 and len(layer.output) == 1
    if (coreml_rules.is_backpropagable(kind, activation) and kind in BACKWARD
            and (single or kind in MULTI_BLOB_TYPES)):
        return BACKWARD[kind]
    hints = {"softmax": " (a softmax is only allowed directly in front of the categorical "
                        "cross-entropy loss)",
             "reshape": " (no Core ML release passes gradients through a classic reshape; use "
                        "flatten, or reshape before the first updatable layer)"}
    raise RuntimeLayerError(
        f"layer {layer.name!r}: Core ML cannot backpropagate through {what}{hints.get(kind, '')}; "
        "it sits between the loss and an updatable layer: move it before the first updatable "
        "layer")


# -- layers -----------------------------------------------------------------------------------


@register_backward("convolution")
def conv_backward(layer, x, y, gy, weight, want_input):
    params = layer.convolution
    x4, g4 = ops.to_nchw(x), ops.to_nchw(gy)
    w = ops.conv_weights(params, weight, x4.shape[1])
    if params.isDeconvolution:
        return _deconv_backward(layer, x, x4, g4, w, want_input)
    win = ops.conv_windows(params, x4.shape[2:])
    groups = ops.conv_groups(params)
    cin, cout = x4.shape[1] // groups, w.shape[0] // groups
    grads = {}
    if layer.isUpdatable:
        cols = win.view(ops.pad2d(x4, win.pads))
        parts = [np.tensordot(g4[:, g * cout:(g + 1) * cout], cols[:, g * cin:(g + 1) * cin],
                              axes=([0, 2, 3], [0, 2, 3])) for g in range(groups)]
        grads["weights"] = np.concatenate(parts).ravel()
        if params.hasBias:
            grads["bias"] = g4.sum(axis=(0, 2, 3))
    if not want_input:
        return None, grads
    padded = win.padded_hw(x4.shape[2:])
    parts = [win.scatter(np.tensordot(g4[:, g * cout:(g + 1) * cout], w[g * cout:(g + 1) * cout],
                                      axes=([1], [0])).transpose(0, 3, 4, 5, 1, 2), padded)
             for g in range(groups)]
    dx = win.unpad(parts[0] if groups == 1 else np.concatenate(parts, axis=1), x4.shape[2:])
    return dx.reshape(x.shape), grads


def _deconv_backward(layer, x, x4, g4, w, want_input):
    """A transposed convolution scatters ``x * w`` into a full map then crops it, so both
    gradients read the un-cropped output gradient through the same windows."""
    params = layer.convolution
    groups = ops.conv_groups(params)
    win, crop = ops.deconv_windows(params, x4.shape[2:])
    full = tuple((n - 1) * s + k for n, s, k in zip(x4.shape[2:], win.stride, win.kernel))
    (top, height), (left, width) = crop
    g_full = np.zeros(g4.shape[:2] + full, dtype=g4.dtype)
    part = g_full[:, :, top: top + height, left: left + width]
    part[...] = g4[:, :, : part.shape[2], : part.shape[3]]
    cols = win.view(g_full)  # (B, C_out, H_in, W_in, kh, kw)
    cin, cout = x4.shape[1] // groups, w.shape[1]
    grads = {}
    if layer.isUpdatable:
        parts = [np.tensordot(x4[:, g * cin:(g + 1) * cin], cols[:, g * cout:(g + 1) * cout],
                              axes=([0, 2, 3], [0, 2, 3])) for g in range(groups)]
        grads["weights"] = np.concatenate(parts).ravel()
        if params.hasBias:
            grads["bias"] = g4.sum(axis=(0, 2, 3))
    if not want_input:
        return None, grads
    parts = [np.tensordot(cols[:, g * cout:(g + 1) * cout], w[g * cin:(g + 1) * cin],
                          axes=([1, 4, 5], [1, 2, 3])) for g in range(groups)]
    dx = np.concatenate(parts, axis=3).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(dx).reshape(x.shape), grads


@register_backward("innerProduct")
def inner_product_backward(layer, x, y, gy, weight, want_input):
    params = layer.innerProduct
    cin, cout = int(params.inputChannels), int(params.outputChannels)
    g = gy.reshape(-1, cout)
    grads = {}
    if layer.isUpdatable:
        grads["weights"] = (g.T @ ops.ip_matrix(x, cin)).ravel()
        if params.hasBias:
            grads["bias"] = g.sum(axis=0)
    if not want_input:
        return None, grads
    return (g @ weight("weights").reshape(cout, cin)).reshape(x.shape), grads


@register_backward("batchnorm")
def batchnorm_backward(layer, x, y, gy, weight, want_input):
    """Inference-mode stats give a per-channel scale; batch/instance stats the full formula."""
    if not want_input:
        return None, {}
    params = layer.batchnorm
    x4, g4 = ops.to_nchw(x), ops.to_nchw(gy)
    mean, inv_std, gamma = ops.batchnorm_parts(params, x4, weight)
    axes = ops.batchnorm_stats_axes(params)
    dxhat = g4 * gamma
    if axes is None:
        return (dxhat * inv_std).reshape(x.shape), {}
    xhat = (x4 - mean) * inv_std
    dx = inv_std * (dxhat - dxhat.mean(axis=axes, keepdims=True)
                    - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))
    return dx.astype(x.dtype, copy=False).reshape(x.shape), {}


@register_backward("activation")
def activation_backward(layer, x, y, gy, weight, want_input):
    if not want_input:
        return None, {}
    kind = layer.activation.WhichOneof("NonlinearityType")
    if kind == "ReLU":
        return gy * (x > 0), {}
    if kind == "sigmoid":
        return gy * y * (1 - y), {}
    return gy * (1 - y * y), {}


@register_backward("pooling")
def pooling_backward(layer, x, y, gy, weight, want_input):
    if not want_input:
        return None, {}
    params = layer.pooling
    x4, y4, g4 = ops.to_nchw(x), ops.to_nchw(y), ops.to_nchw(gy)
    win = ops.pool_windows(params, x4.shape[2:])
    dx = (_global_pool_backward(params.type, x4, y4, g4) if params.globalPooling
          else _window_pool_backward(params, win, x4, y4, g4))
    return dx.reshape(x.shape), {}


def _global_pool_backward(kind, x4, y4, g4) -> np.ndarray:
    if kind == ops.AVERAGE:
        return np.broadcast_to(g4 / (x4.shape[2] * x4.shape[3]), x4.shape).copy()
    if kind == ops.L2:
        return g4 * x4 / np.where(y4 > 0, y4, 1)
    flat = x4.reshape(x4.shape[0], x4.shape[1], -1)
    dx = np.zeros_like(flat)
    np.put_along_axis(dx, flat.argmax(axis=2)[..., None], g4.reshape(dx.shape[:2] + (1,)), 2)
    return dx.reshape(x4.shape)


def _window_pool_backward(params, win, x4, y4, g4) -> np.ndarray:
    """Route each window's gradient back through the taps it read (MAX: to the first maximum
    in row-major window order, as torch does)."""
    hw = x4.shape[2:]
    dxp = np.zeros(x4.shape[:2] + win.padded_hw(hw), dtype=x4.dtype)
    if params.type == ops.MAX:
        xp = ops.pad2d(x4, win.pads, -np.inf)
        taken = np.zeros(y4.shape, dtype=bool)
        for _, _, rows, columns in win.tap_slices():
            hit = (xp[:, :, rows, columns] == y4) & ~taken
            dxp[:, :, rows, columns] += g4 * hit
            taken |= hit
    elif params.type == ops.AVERAGE:
        share = g4 / ops.pool_divisor(win, hw, params.avgPoolExcludePadding).astype(x4.dtype)
        for _, _, rows, columns in win.tap_slices():
            dxp[:, :, rows, columns] += share
    else:
        xp = ops.pad2d(x4, win.pads)
        ratio = g4 / np.where(y4 > 0, y4, 1)
        for _, _, rows, columns in win.tap_slices():
            dxp[:, :, rows, columns] += ratio * xp[:, :, rows, columns]
    return win.unpad(dxp, hw)


@register_backward("flatten")
def flatten_backward(layer, x, y, gy, weight, want_input):
    """Flatten only moves values: send each gradient back to where its value came from, found
    by running the forward op on the element indices."""
    if not want_input:
        return None, {}
    count = math.prod(x.shape[1:])
    index = np.arange(count).reshape((1,) + x.shape[1:])
    source = FORWARD[layer.WhichOneof("layer")](layer, [index], weight)[0].reshape(-1)
    dx = np.empty((x.shape[0], count), dtype=gy.dtype)
    dx[:, source] = gy.reshape(x.shape[0], -1)
    return dx.reshape(x.shape), {}


@register_backward("uniDirectionalLSTM")
def lstm_backward(layer, x, y, gy, weight, want_input):
    """Backpropagation through time from ``gy`` on ``y`` (all steps, or the last one).

    The forward run is repeated to get every step's gates; the layer must start from zero
    states (one input) and have no peepholes or coupled gate. Core ML passes the gradient on
    to the LSTM's input (coremltools >= 5.0b1), so an updatable layer may sit before it. Per step, with ``dh``/``dc``
    the gradients reaching h_t/c_t: ``do = dh*h(c)``, ``dc += dh*o*h'(c)`` (zero where the cell
    was clipped), ``di = dc*g``, ``df = dc*c_{t-1}``, ``dg = dc*i``, each times its activation's
    slope (zero where the pre-activation was clipped); those four pre-activation gradients
    feed ``dh_{t-1} = W_h^T dz`` and ``dc_{t-1} = dc*f``, and sum into the weight gradients.
    """
    spec = layer.uniDirectionalLSTM
    params = spec.params
    if len(layer.input) != 1 or params.hasPeepholeVectors or params.coupledInputAndForgetGate:
        raise RuntimeLayerError(f"layer {layer.name!r}: training through an LSTM with "
                                "initial-state inputs, peepholes or a coupled input/forget gate "
                                "is not supported by the reference runtime")
    seq = ox.lstm_sequence(layer, x)
    weights = ox.lstm_weights(layer, weight, x.dtype)
    batch, steps = seq.shape[:2]
    hidden = int(spec.outputVectorSize)
    zeros = np.zeros((batch, hidden), dtype=x.dtype)
    trace = ox.lstm_run(layer, seq, weights, zeros, zeros)
    gate_act, block_act, out_act = ox.lstm_activations(layer)
    g_out = gy.reshape(batch, -1, hidden)
    dz = np.zeros_like(trace.z)
    dh, dc = zeros, zeros
    for t in reversed(range(steps)):
        if params.sequenceOutput or t == steps - 1:
            dh = dh + g_out[:, t if params.sequenceOutput else 0]
        gate_i, forget, block, gate_o = (trace.gates[:, t, k] for k in range(4))
        c_prev = trace.c[:, t - 1] if t else zeros
        dc = (dc + dh * gate_o * out_act.slope(trace.c[:, t], trace.hc[:, t])) * trace.c_open[:, t]
        z = trace.z[:, t]
        dz[:, t] = np.stack([dc * block * gate_act.slope(z[:, 0], gate_i),
                             dc * c_prev * gate_act.slope(z[:, 1], forget),
                             dc * gate_i * block_act.slope(z[:, 2], block),
                             dh * trace.hc[:, t] * gate_act.slope(z[:, 3], gate_o)], axis=1)
        dz[:, t] *= trace.z_open[:, t]
        dh = dz[:, t].reshape(batch, -1) @ weights.w_h
        dc = dc * forget
    flat = dz.reshape(batch, steps, -1)
    grads = {}
    if layer.isUpdatable:
        h_prev = np.concatenate([zeros[:, None], trace.h[:, :-1]], axis=1)
        parts = {"WeightMatrix": np.tensordot(flat, seq, axes=([0, 1], [0, 1])),
                 "RecursionMatrix": np.tensordot(flat, h_prev, axes=([0, 1], [0, 1]))}
        if params.hasBiasVectors:
            parts["BiasVector"] = flat.sum(axis=(0, 1))
        for suffix, stacked in parts.items():
            for gate, part in zip(ox.LSTM_GATES, np.split(stacked, 4)):
                grads[f"weightParams.{gate}{suffix}"] = part.ravel()
    if not want_input:
        return None, grads
    return (flat @ weights.w_x).reshape(x.shape), grads


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
    if p.shape[1] != probs.shape[ops.softmax_axis(probs)]:
        raise ConfigError("categorical cross-entropy needs one probability vector per example, "
                          f"got softmax output shape {probs.shape[1:]}")
    bad = (classes < 0) | (classes >= p.shape[1])
    if bad.any():
        raise ConfigError(f"class index {int(classes[bad][0])} is out of range for "
                          f"{p.shape[1]} classes")
    rows = np.arange(batch)
    picked = p[rows, classes]
    loss, scale = _reduce_batch(-np.log(np.maximum(picked, np.finfo(p.dtype).tiny)), reduction)
    grad = p.copy()
    grad[rows, classes] -= 1
    return loss, (grad * scale).reshape(probs.shape)


def mean_squared_error(pred: np.ndarray, target: np.ndarray, element_reduction: str,
                       batch_reduction: str):
    """Squared error per example reduced by ``element_reduction``, then over the batch."""
    batch = pred.shape[0]
    if target.size != pred.size:
        raise ConfigError(f"MSE target has {target.size // max(batch, 1)} values per example, "
                          f"the loss input has {pred.size // max(batch, 1)}")
    diff = pred - target.reshape(pred.shape).astype(pred.dtype, copy=False)
    squares = np.square(diff).reshape(batch, -1)
    per_example = squares.mean(axis=1) if element_reduction == "mean" else squares.sum(axis=1)
    loss, scale = _reduce_batch(per_example, batch_reduction)
    if element_reduction == "mean":
        scale /= squares.shape[1]
    return loss, diff * (2 * scale)


# -- the graph ----------------------------------------------------------------------------------


def backprop(network, order: Sequence[int], blobs: dict, grads: dict,
             needs_grad: Container[str]) -> dict:
    """Reverse pass over layers ``order`` (given in forward order), seeded with ``grads``
    (blob -> dLoss/dblob). Input gradients are formed only for blobs in ``needs_grad`` (those
    downstream of an updatable layer), so a frozen prefix costs nothing.

    Returns {(layer index, field): gradient} for the updatable layers' weights and biases.
    """
    params = {}
    for i in reversed(order):
        layer = network.layers[i]
        gy = grads.pop(layer.output[0], None)
        if gy is None:
            continue
        if any(name in grads for name in layer.output[1:]):
            raise RuntimeLayerError(f"layer {layer.name!r}: a gradient reaches one of its extra "
                                    "outputs (e.g. an LSTM's final states); only the first "
                                    "output can be trained through")
        source = layer.input[0]
        want = source in needs_grad
        dx, layer_grads = backward_op(layer, want)(layer, blobs[source], blobs[layer.output[0]],
                                                   gy, network.weight_getter(i), want)
        params.update(((i, field), grad) for field, grad in layer_grads.items())
        if want:
            grads[source] = grads[source] + dx if source in grads else dx
    return params
