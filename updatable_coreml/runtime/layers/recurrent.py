"""uniDirectionalLSTM (forward over the sequence axis, backpropagation through time) and
biDirectionalLSTM (forward)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...errors import RuntimeLayerError
from ..registry import WeightGetter, register_backward, register_forward
from .common import Blobs, _fail, _restore, _with_sequence

#: The spec's gate field prefixes, in the order the stacked (4H, ...) matrices below use.
LSTM_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")


_PEEPHOLES = ("inputGate", "forgetGate", "outputGate")


def nd_sequence(forward):
    """Let a recurrent layer also read Core ML's rank-5 ND tensor ``[Seq, Batch, C, H, W]``
    (what coremltools' converter writes, EXACT_ARRAY_MAPPING): the blob ``(B, Seq, b, C, H,
    W)`` runs as ``B * b`` sequences in the classic layout ``(N, Seq, C, H, W)``, and every
    output (sequence or final state) goes back to ``(B, Seq', b, H, 1, 1)``."""

    @functools.wraps(forward)
    def run(layer, inputs, weight):
        if inputs[0].ndim != 6:
            return forward(layer, inputs, weight)
        outer, inner = inputs[0].shape[0], inputs[0].shape[2]

        def classic(x: np.ndarray) -> np.ndarray:
            x = np.broadcast_to(x, (outer,) + x.shape[1:]) if len(x) == 1 else x
            return np.swapaxes(x, 1, 2).reshape((outer * inner,) + x.shape[1:2] + x.shape[3:])

        outputs = forward(layer, [classic(x) for x in inputs], weight)
        return [np.swapaxes(y.reshape((outer, inner) + y.shape[1:]), 1, 2) for y in outputs]

    return run


#: Core ML clips every gate pre-activation to [-50, 50], and the cell to ``cellClipThreshold``
#: (50 when 0), as the spec's LSTM equations say.
CLIP = 50.0


@dataclass(frozen=True)
class Recurrent:
    """An activation of a recurrent layer with its derivative, given input ``v`` and output ``y``
    (backpropagation needs both: sigmoid/tanh are cheapest from ``y``, ReLU needs ``v``)."""

    fn: Callable[[np.ndarray], np.ndarray]
    slope: Callable[[np.ndarray, np.ndarray], np.ndarray]


def recurrent_activation(layer, params) -> Recurrent:
    """The activations the spec allows inside recurrent layers."""
    kind = params.WhichOneof("NonlinearityType")
    if kind == "sigmoid":
        return Recurrent(lambda v: 1 / (1 + np.exp(-v)), lambda v, y: y * (1 - y))
    if kind == "tanh":
        return Recurrent(np.tanh, lambda v, y: 1 - y * y)
    if kind == "ReLU":
        return Recurrent(lambda v: np.maximum(v, 0), lambda v, y: (v > 0).astype(v.dtype))
    if kind == "linear":
        a, b = params.linear.alpha, params.linear.beta
        return Recurrent(lambda v: a * v + b, lambda v, y: np.full_like(v, a))
    if kind == "scaledTanh":
        a, b = params.scaledTanh.alpha, params.scaledTanh.beta
        return Recurrent(
            lambda v: a * np.tanh(b * v), lambda v, y: a * b * (1 - np.tanh(b * v) ** 2)
        )
    if kind == "sigmoidHard":
        a, b = params.sigmoidHard.alpha, params.sigmoidHard.beta
        return Recurrent(
            lambda v: np.clip(a * v + b, 0, 1),
            lambda v, y: a * ((a * v + b > 0) & (a * v + b < 1)).astype(v.dtype),
        )
    raise _fail(layer, f"activation {kind!r} is not supported in a recurrent layer")


def lstm_activations(layer, activations=None) -> tuple[Recurrent, Recurrent, Recurrent]:
    """The spec's ``[f, g, h]``: gates, block input, cell output."""
    activations = layer.uniDirectionalLSTM.activations if activations is None else activations
    if len(activations) != 3:
        raise _fail(layer, f"needs 3 activations [f, g, h], got {len(activations)}")
    gate, block, out = (recurrent_activation(layer, a) for a in activations)
    return gate, block, out


@dataclass(frozen=True)
class LSTMWeights:
    """A uniDirectionalLSTM's weights with the gates stacked in ``LSTM_GATES`` order."""

    w_x: np.ndarray  # (4H, D)
    w_h: np.ndarray  # (4H, H)
    b: np.ndarray  # (4H,), forgetBias included
    peepholes: tuple[np.ndarray, np.ndarray, np.ndarray]  # input, forget, output gate (H,)


def lstm_weights(
    layer,
    weight: WeightGetter,
    dtype,
    params=None,
    prefix: str = "weightParams.",
    sizes: tuple[int, int] | None = None,
) -> LSTMWeights:
    """Read the weights one message deeper than other layers keep them, by dotted name
    (``prefix``: ``weightParams.`` of a uniDirectionalLSTM, ``weightParams.0.`` / ``.1.`` for
    the directions of a biDirectionalLSTM, whose ``params`` and ``sizes`` are passed)."""
    spec = layer.uniDirectionalLSTM
    params = spec.params if params is None else params
    n_in, n_out = sizes or (int(spec.inputVectorSize), int(spec.outputVectorSize))

    def nested(name: str) -> np.ndarray:
        return weight(prefix + name)

    w_x = np.concatenate([nested(g + "WeightMatrix").reshape(n_out, n_in) for g in LSTM_GATES])
    w_h = np.concatenate([nested(g + "RecursionMatrix").reshape(n_out, n_out) for g in LSTM_GATES])
    b = (
        np.concatenate([nested(g + "BiasVector") for g in LSTM_GATES])
        if params.hasBiasVectors
        else np.zeros(4 * n_out, dtype=dtype)
    )
    if params.forgetBias:
        b = b + np.repeat(np.array([0, 1, 0, 0], dtype=b.dtype), n_out)
    zeros = np.zeros(n_out, dtype=dtype)
    peepholes = zeros, zeros, zeros
    if params.hasPeepholeVectors:
        first, second, third = (nested(g + "PeepholeVector") for g in _PEEPHOLES)
        peepholes = first, second, third
    return LSTMWeights(w_x, w_h, b, peepholes)


def lstm_trainable_fields(layer) -> list[str]:
    """Dotted names of the weights an updatable LSTM trains: the 8 matrices and, when present,
    the 4 bias vectors (peepholes are refused by the backward op)."""
    fields = [g + kind for kind in ("WeightMatrix", "RecursionMatrix") for g in LSTM_GATES]
    if layer.uniDirectionalLSTM.params.hasBiasVectors:
        fields += [g + "BiasVector" for g in LSTM_GATES]
    return ["weightParams." + f for f in fields]


def lstm_sequence(layer, x: np.ndarray) -> np.ndarray:
    """The ``(B, Seq, D)`` vectors of an LSTM input blob (see :func:`_with_sequence`)."""
    seq = _with_sequence(layer, x)
    n_in = int(layer.uniDirectionalLSTM.inputVectorSize)
    if seq.shape[2:] != (n_in, 1, 1):
        raise _fail(layer, f"input shape {x.shape} does not hold vectors of size {n_in}")
    return seq[..., 0, 0]


@dataclass(frozen=True)
class LSTMTrace:
    """Every step of a forward run, ``(B, Seq, ...)``: what backpropagation through time reads.

    ``z`` are the clipped gate pre-activations and ``gates`` their activations, both
    ``(B, Seq, 4, H)`` in ``LSTM_GATES`` order (with a coupled gate, the forget slot holds
    ``1 - i``); ``*_open`` mark where a clip let the value through (gradient 1, else 0).
    """

    z: np.ndarray
    z_open: np.ndarray
    gates: np.ndarray
    c: np.ndarray
    c_open: np.ndarray
    hc: np.ndarray  # h(c), the cell output activation
    h: np.ndarray


def lstm_run(
    layer,
    seq: np.ndarray,
    weights: LSTMWeights,
    h: np.ndarray,
    c: np.ndarray,
    params=None,
    activations=None,
) -> LSTMTrace:
    """Run the spec's LSTM equations over ``seq`` (B, Seq, D) from states ``h``, ``c`` (B, H)
    (``params``/``activations``: a biDirectionalLSTM's, else the uniDirectionalLSTM's)."""
    params = layer.uniDirectionalLSTM.params if params is None else params
    gate_act, block_act, out_act = activations or lstm_activations(layer)
    p_i, p_f, p_o = weights.peepholes
    threshold = params.cellClipThreshold or CLIP
    batch, steps = seq.shape[:2]
    projected = (seq @ weights.w_x.T + weights.b).reshape(batch, steps, 4, -1)
    record: dict[str, list] = {name: [] for name in LSTMTrace.__dataclass_fields__}
    for t in range(steps):
        raw = projected[:, t] + (h @ weights.w_h.T).reshape(batch, 4, -1)
        raw[:, 0] += p_i * c
        if not params.coupledInputAndForgetGate:
            raw[:, 1] += p_f * c
        z = np.clip(raw, -CLIP, CLIP)
        gate_i, block = gate_act.fn(z[:, 0]), block_act.fn(z[:, 2])
        forget = 1 - gate_i if params.coupledInputAndForgetGate else gate_act.fn(z[:, 1])
        c_raw = c * forget + gate_i * block
        c = np.clip(c_raw, -threshold, threshold)
        raw[:, 3] += p_o * c  # the output gate's peephole sees the new cell
        z[:, 3] = np.clip(raw[:, 3], -CLIP, CLIP)
        gate_o = gate_act.fn(z[:, 3])
        hc = out_act.fn(c)
        h = hc * gate_o
        for name, value in (
            ("z", z),
            ("z_open", np.abs(raw) < CLIP),
            ("gates", np.stack([gate_i, forget, block, gate_o], axis=1)),
            ("c", c),
            ("c_open", np.abs(c_raw) < threshold),
            ("hc", hc),
            ("h", h),
        ):
            record[name].append(value)
    return LSTMTrace(**{name: np.stack(values, axis=1) for name, values in record.items()})


@register_forward("uniDirectionalLSTM")
@nd_sequence
def uni_directional_lstm(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Forward LSTM over the sequence axis of the ``(B, Seq, C, 1, 1)`` view.

    Inputs ``x[, h0, c0]``; outputs ``y, h, c`` with ``y`` all steps when ``sequenceOutput``.
    Gate pre-activations are clipped to [-50, 50] and the cell to ``cellClipThreshold``
    (50 when 0), peepholes see c_{t-1} for the input/forget gates and c_t for the output gate,
    and ``forgetBias`` adds 1 to the forget gate's bias, all as the spec describes.
    """
    spec = layer.uniDirectionalLSTM
    if spec.reverseInput:
        raise _fail(layer, "reverseInput is not supported (forward direction only)")
    x = inputs[0]
    seq = lstm_sequence(layer, x)
    n_out = int(spec.outputVectorSize)
    h0, c0 = (
        inputs[k].reshape(len(seq), n_out)
        if len(inputs) > k
        else np.zeros((len(seq), n_out), dtype=x.dtype)
        for k in (1, 2)
    )
    trace = lstm_run(layer, seq, lstm_weights(layer, weight, x.dtype), h0, c0)
    y = trace.h if spec.params.sequenceOutput else trace.h[:, -1:]
    return [_restore(v[..., None, None], x.ndim) for v in (y, trace.h[:, -1:], trace.c[:, -1:])]


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
        raise RuntimeLayerError(
            f"layer {layer.name!r}: training through an LSTM with "
            "initial-state inputs, peepholes or a coupled input/forget gate "
            "is not supported by the reference runtime"
        )
    seq = lstm_sequence(layer, x)
    weights = lstm_weights(layer, weight, x.dtype)
    batch, steps = seq.shape[:2]
    hidden = int(spec.outputVectorSize)
    zeros = np.zeros((batch, hidden), dtype=x.dtype)
    trace = lstm_run(layer, seq, weights, zeros, zeros)
    gate_act, block_act, out_act = lstm_activations(layer)
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
        dz[:, t] = np.stack(
            [
                dc * block * gate_act.slope(z[:, 0], gate_i),
                dc * c_prev * gate_act.slope(z[:, 1], forget),
                dc * gate_i * block_act.slope(z[:, 2], block),
                dh * trace.hc[:, t] * gate_act.slope(z[:, 3], gate_o),
            ],
            axis=1,
        )
        dz[:, t] *= trace.z_open[:, t]
        dh = dz[:, t].reshape(batch, -1) @ weights.w_h
        dc = dc * forget
    flat = dz.reshape(batch, steps, -1)
    grads = {}
    if layer.isUpdatable:
        h_prev = np.concatenate([zeros[:, None], trace.h[:, :-1]], axis=1)
        parts = {
            "WeightMatrix": np.tensordot(flat, seq, axes=([0, 1], [0, 1])),
            "RecursionMatrix": np.tensordot(flat, h_prev, axes=([0, 1], [0, 1])),
        }
        if params.hasBiasVectors:
            parts["BiasVector"] = flat.sum(axis=(0, 1))
        for suffix, stacked in parts.items():
            for gate, part in zip(LSTM_GATES, np.split(stacked, 4)):
                grads[f"weightParams.{gate}{suffix}"] = part.ravel()
    if not want_input:
        return None, grads
    return (flat @ weights.w_x).reshape(x.shape), grads


@register_forward("biDirectionalLSTM")
@nd_sequence
def bidirectional_lstm(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """A forward LSTM over the sequence and a backward one over the reversed sequence, their
    outputs concatenated per step ``[yf_t, yb_t]`` where ``yb_t`` is the backward LSTM's output
    after reading ``x_T .. x_t`` (NeuralNetwork.proto ``BiDirectionalLSTMLayerParams``).

    Inputs ``x[, h0, c0, h0_back, c0_back]``; outputs ``y, h, c, h_back, c_back``.
    """
    spec = layer.biDirectionalLSTM
    n_in, n_out = int(spec.inputVectorSize), int(spec.outputVectorSize)
    if len(spec.weightParams) != 2:
        raise _fail(
            layer, f"needs 2 weightParams (forward, backward), got {len(spec.weightParams)}"
        )
    x = inputs[0]
    seq = _with_sequence(layer, x)
    if seq.shape[2:] != (n_in, 1, 1):
        raise _fail(layer, f"input shape {x.shape} does not hold vectors of size {n_in}")
    seq = seq[..., 0, 0]
    batch = len(seq)

    def state(k: int) -> np.ndarray:
        return (
            inputs[k].reshape(batch, n_out)
            if len(inputs) > k
            else np.zeros((batch, n_out), dtype=x.dtype)
        )

    traces = []
    for direction, activations in enumerate(
        (spec.activationsForwardLSTM, spec.activationsBackwardLSTM)
    ):
        weights = lstm_weights(
            layer, weight, x.dtype, spec.params, f"weightParams.{direction}.", (n_in, n_out)
        )
        steps = seq if direction == 0 else seq[:, ::-1]
        traces.append(
            lstm_run(
                layer,
                steps,
                weights,
                state(1 + 2 * direction),
                state(2 + 2 * direction),
                spec.params,
                lstm_activations(layer, activations),
            )
        )
    forward, backward = traces
    back_h = backward.h[:, ::-1]  # back in input order: step t has read x_T .. x_t
    if spec.params.sequenceOutput:
        y = np.concatenate([forward.h, back_h], axis=-1)
    else:
        y = np.concatenate([forward.h[:, -1:], backward.h[:, -1:]], axis=-1)
    finals = (forward.h[:, -1:], forward.c[:, -1:], backward.h[:, -1:], backward.c[:, -1:])
    return [_restore(v[..., None, None], x.ndim) for v in (y, *finals)]
