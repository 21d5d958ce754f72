"""simpleRecurrent and gru: forward over the sequence axis, with the equations of
NeuralNetwork.proto (``SimpleRecurrentLayerParams``, ``GRULayerParams``): pre-activations are
clipped to [-50, 50]; the GRU applies the reset gate to the previous output *before* its
recursion matrix (``c_t = y_{t-1} * r_t``, ``o_t = g(W_o x_t + R_o c_t + b_o)``), like Keras'
``GRU(reset_after=False)``; ``y_t = (1 - z_t) * o_t + z_t * y_{t-1}``.

Inputs ``x[, y0]`` (an initial output, else zeros); outputs ``y`` (all steps with
``sequenceOutput``, else the last) and the final state. Sequences travel ``(B, Seq, C, 1, 1)``.
"""

from __future__ import annotations

import numpy as np

from ..registry import WeightGetter, register_forward
from .common import Blobs, _fail, _restore, _with_sequence
from .recurrent import CLIP, nd_sequence, recurrent_activation

GRU_GATES = ("updateGate", "resetGate", "outputGate")


def _sequence(layer, x: np.ndarray, size: int) -> np.ndarray:
    seq = _with_sequence(layer, x)
    if seq.shape[2:] != (size, 1, 1):
        raise _fail(layer, f"input shape {x.shape} does not hold vectors of size {size}")
    return seq[..., 0, 0]


def _forward_only(layer, spec) -> None:
    """The proto does not say in which order a reversed layer returns its sequence (unknown):
    refused rather than guessed, as for uniDirectionalLSTM."""
    if spec.reverseInput:
        raise _fail(layer, "reverseInput is not supported (forward direction only)")


def _initial(inputs: Blobs, batch: int, size: int, dtype) -> np.ndarray:
    return inputs[1].reshape(batch, size) if len(inputs) > 1 else np.zeros((batch, size), dtype)


def _outputs(steps: list[np.ndarray], sequence: bool, rank: int) -> list:
    h = np.stack(steps, axis=1)
    y = h if sequence else h[:, -1:]
    return [_restore(v[..., None, None], rank) for v in (y, h[:, -1:])]


@register_forward("simpleRecurrent")
@nd_sequence
def simple_recurrent(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """``y_t = f(clip(W x_t + R y_{t-1} + b))``."""
    spec = layer.simpleRecurrent
    n_in, n_out = int(spec.inputVectorSize), int(spec.outputVectorSize)
    x = inputs[0]
    seq = _sequence(layer, x, n_in)
    _forward_only(layer, spec)
    act = recurrent_activation(layer, spec.activation)
    w = weight("weightMatrix").reshape(n_out, n_in)
    r = weight("recursionMatrix").reshape(n_out, n_out)
    b = weight("biasVector") if spec.hasBiasVector else np.zeros(n_out, x.dtype)
    h = _initial(inputs, len(seq), n_out, x.dtype)
    steps = []
    for t in range(seq.shape[1]):
        h = act.fn(np.clip(seq[:, t] @ w.T + h @ r.T + b, -CLIP, CLIP))
        steps.append(h)
    return _outputs(steps, spec.sequenceOutput, x.ndim)


@register_forward("gru")
@nd_sequence
def gru(layer, inputs: Blobs, weight: WeightGetter) -> list:
    spec = layer.gru
    n_in, n_out = int(spec.inputVectorSize), int(spec.outputVectorSize)
    if len(spec.activations) != 2:
        raise _fail(layer, f"needs 2 activations [f, g], got {len(spec.activations)}")
    f, g = (recurrent_activation(layer, a) for a in spec.activations)
    x = inputs[0]
    seq = _sequence(layer, x, n_in)
    _forward_only(layer, spec)
    w = {k: weight(f"{k}WeightMatrix").reshape(n_out, n_in) for k in GRU_GATES}
    r = {k: weight(f"{k}RecursionMatrix").reshape(n_out, n_out) for k in GRU_GATES}
    b = {
        k: weight(f"{k}BiasVector") if spec.hasBiasVectors else np.zeros(n_out, x.dtype)
        for k in GRU_GATES
    }
    h = _initial(inputs, len(seq), n_out, x.dtype)
    steps = []

    def pre(gate: str, xt: np.ndarray, state: np.ndarray) -> np.ndarray:
        return np.clip(xt @ w[gate].T + state @ r[gate].T + b[gate], -CLIP, CLIP)

    for t in range(seq.shape[1]):
        xt = seq[:, t]
        z = f.fn(pre("updateGate", xt, h))
        reset = f.fn(pre("resetGate", xt, h))
        o = g.fn(pre("outputGate", xt, h * reset))
        h = (1 - z) * o + z * h
        steps.append(h)
    return _outputs(steps, spec.sequenceOutput, x.ndim)
