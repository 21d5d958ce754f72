"""Every Core ML training behaviour that Apple does not document, in one switchable place.

MLUpdateTask's source is closed. Where the seed articles observed the behaviour on device we
follow them; elsewhere we pick the standard formula (what torch and Keras do, so a parity test
against them is meaningful). Each choice is a field of ``Assumptions``; pass
``Assumptions(...)`` (or ``DEFAULT.replace(...)``) to ``Model.update`` to try another one.

Fields and the formulas they select:

``partial_batch``
    ``"wrap"`` (observed): the last mini-batch of an epoch is filled up to ``miniBatchSize`` by
    wrapping around to the first examples of that epoch's order (with fewer examples than one
    batch, the order repeats). ``"short"``: the last batch is smaller. ``"drop"``: it is skipped.

``epoch_loss``
    ``"last"`` (observed): the loss reported at epoch end is the last mini-batch's loss.
    ``"mean"``: the mean of the epoch's mini-batch losses.

``batch_reduction``
    How per-example losses combine into the mini-batch loss (and so the gradient scale):
    ``"mean"`` (standard: torch and Keras default) or ``"sum"``.

``mse_reduction``
    How an example's squared errors combine: ``"mean"`` over its elements (so the batch loss is
    the mean over all elements, like ``torch.nn.MSELoss()`` and ``keras.losses.MeanSquaredError``)
    or ``"sum"``.

``momentum``
    SGD with momentum ``m``, learning rate ``lr``, gradient ``g``:

    * ``"torch"``: ``v = m*v + g;  w -= lr*v`` (``torch.optim.SGD``, dampening 0)
    * ``"keras"``: ``v = m*v - lr*g;  w += v`` (Keras 3 ``SGD``)

    Both give identical weights while ``lr`` is constant; they differ after the learning rate
    changes mid-task (``resume`` with a new ``learningRate``): torch's form rescales the whole
    velocity by the new rate, Keras's keeps the old steps at their old rate.

``adam``
    Adam with step ``t`` (1-based), ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g*g``:

    * ``"torch"`` (default): ``m_hat = m/(1-b1**t); v_hat = v/(1-b2**t);
      w -= lr*m_hat/(sqrt(v_hat) + eps)`` (``torch.optim.Adam``)
    * ``"keras"``: ``w -= lr*sqrt(1-b2**t)/(1-b1**t) * m/(sqrt(v) + eps)`` (Keras 3 ``Adam``:
      the same up to where ``eps`` sits)
    * ``"uncorrected"``: ``w -= lr*m/(sqrt(v) + eps)`` (no bias correction)

``shuffle_seed``
    Seed used when ``shuffle`` is on and the model declares no ``seed`` (observed: Core ML still
    shuffles deterministically). The order of epoch ``e`` is the ``e``-th
    ``numpy.random.default_rng(seed).permutation(n)`` drawn from one generator per task.

``shuffle_when_absent``
    Whether to shuffle when the model has no ``shuffle`` parameter at all (``True``, the value
    coremltools' builder writes when it adds one).

``override_without_range``
    Whether the app may override an update parameter whose spec declares no allowed range or
    set. ``False``: only its default is accepted (there is nothing that allows another value).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError

_CHOICES = {
    "partial_batch": ("wrap", "short", "drop"),
    "epoch_loss": ("last", "mean"),
    "batch_reduction": ("mean", "sum"),
    "mse_reduction": ("mean", "sum"),
    "momentum": ("torch", "keras"),
    "adam": ("torch", "keras", "uncorrected"),
}


@dataclass(frozen=True)
class Assumptions:
    """The undocumented MLUpdateTask behaviours the runtime emulates (see module docstring)."""

    partial_batch: str = "wrap"
    epoch_loss: str = "last"
    batch_reduction: str = "mean"
    mse_reduction: str = "mean"
    momentum: str = "torch"
    adam: str = "torch"
    shuffle_seed: int = 0
    shuffle_when_absent: bool = True
    override_without_range: bool = False

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"assumption {name}={value!r} is not one of {', '.join(allowed)}")

    def replace(self, **changes) -> "Assumptions":
        return dataclasses.replace(self, **changes)


DEFAULT = Assumptions()
