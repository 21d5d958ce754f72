"""Control flow of NeuralNetwork.proto (specification 4+): ``branch``, ``loop``,
``loopBreak`` and ``loopContinue``. They produce no outputs of their own: they run nested
networks on the enclosing scope of blobs, so the network interpreter (``network``) runs them
with a ``run_nested(network_message, blobs)`` callback instead of a forward op.

Conditions are Core ML tensors of one value: true when ``|value| > 1e-6`` for a branch, "not
close to 0.0" for a loop (the same threshold here). Every example of a batch must agree; a
batch whose examples would take different paths is refused (predict them one at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..errors import RuntimeLayerError

CONTROL_FLOW = ("branch", "loop", "loopBreak", "loopContinue")
THRESHOLD = 1e-6
#: A loop without a bound or a condition that never turns false stops here (a hostile file).
MAX_ITERATIONS = 1 << 20

RunNested = Callable[[object, dict], None]


class LoopBreak(Exception):
    """Raised by a ``loopBreak`` layer; ends the innermost loop."""


class LoopContinue(Exception):
    """Raised by a ``loopContinue`` layer; ends the innermost loop's current iteration."""


def _fail(layer, what: str) -> RuntimeLayerError:
    return RuntimeLayerError(f"layer {layer.name!r} ({layer.WhichOneof('layer')}): {what}")


def _flag(layer, blob: np.ndarray, what: str) -> bool:
    """One truth value for the whole batch."""
    values = np.abs(np.asarray(blob, dtype=np.float64).reshape(len(blob), -1))
    if values.shape[1] != 1:
        raise _fail(layer, f"the {what} must be a single value, got shape {blob.shape[1:]}")
    truth = values[:, 0] > THRESHOLD
    if truth.any() != truth.all():
        raise _fail(
            layer,
            f"the {what} differs between the examples of the batch; predict them one at a time",
        )
    return bool(truth[0])


def _scalar(layer, blob: np.ndarray, what: str) -> int:
    values = np.asarray(blob).reshape(len(blob), -1)
    if values.shape[1] != 1 or (values != values[:1]).any():
        raise _fail(layer, f"the {what} must be one value shared by the batch")
    return int(values[0, 0])


def run(layer, blobs: dict, run_nested: RunNested) -> None:
    """Execute a control-flow layer on ``blobs`` (updated in place)."""
    kind = layer.WhichOneof("layer")
    if kind == "loopBreak":
        raise LoopBreak()
    if kind == "loopContinue":
        raise LoopContinue()
    inputs = _inputs(layer, blobs)
    if kind == "branch":
        params = layer.branch
        if len(inputs) != 1:
            raise _fail(layer, f"needs 1 input (the condition), got {len(inputs)}")
        if _flag(layer, inputs[0], "condition"):
            run_nested(params.ifBranch, blobs)
        elif params.HasField("elseBranch"):
            run_nested(params.elseBranch, blobs)
        return
    _loop(layer, inputs, blobs, run_nested)


def _inputs(layer, blobs: Mapping) -> list:
    try:
        return [blobs[name] for name in layer.input]
    except KeyError as exc:
        raise RuntimeLayerError(
            f"layer {layer.name!r}: input {exc.args[0]!r} is not a model "
            "input or an earlier layer's output"
        ) from None


def _loop(layer, inputs: list, blobs: dict, run_nested: RunNested) -> None:
    """The three cases of ``LoopLayerParams``: a for loop (no condition network), a while loop
    (a condition, no bound), or both (stop at whichever comes first)."""
    params = layer.loop
    bound = _scalar(layer, inputs[0], "loop count") if inputs else int(params.maxLoopIterations)
    has_condition = params.HasField("conditionNetwork")
    condition, body = params.conditionNetwork, params.bodyNetwork  # one object each, reused
    if not has_condition and not inputs and bound == 0:
        return
    unbounded = has_condition and not inputs and bound == 0

    def keep_going() -> bool:
        if not has_condition:
            return True
        run_nested(condition, blobs)
        if params.conditionVar not in blobs:
            raise _fail(layer, f"the condition network makes no {params.conditionVar!r}")
        return _flag(layer, blobs[params.conditionVar], "loop condition")

    count = 0
    while (unbounded or count < bound) and keep_going():
        if count >= MAX_ITERATIONS:
            raise _fail(layer, f"ran {MAX_ITERATIONS:,} iterations without stopping")
        count += 1
        try:
            run_nested(body, blobs)
        except LoopContinue:
            continue
        except LoopBreak:
            break
