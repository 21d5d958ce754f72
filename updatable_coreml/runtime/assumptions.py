"""Every Core ML training behaviour the runtime emulates, known or assumed, in one place.

MLUpdateTask's source is closed. What decompiled iOS Core ML code shows (``COREML_EVIDENCE.md``,
"Training engine", cited below by evidence id) is the default; what nothing public shows is an
assumption: we pick the standard formula (what torch and Keras do, so a parity test against them
is meaningful) and keep every alternative one field away. Pass ``Assumptions(...)``,
``DEFAULT.replace(...)`` or a preset name (``PRESETS``) to ``Model.update``; ``variants`` lists
every plausible combination of the unknowns (``simulate(..., assumptions="all")``).

Fields and the formulas they select:

``partial_batch``
    ``"wrap"`` (default): an epoch has ceil(n / miniBatchSize) mini-batches, all full (seen:
    Espresso sizes its buffer ceil(n / batch) * batch, id 14255200760); the last one is filled by
    wrapping around to the first examples of that epoch's order (how it is filled is not
    visible: assumed). ``"short"``: the last batch is smaller (the ML Compute engine, ids
    14466503593, 16049422991). ``"drop"``: it is skipped.

``epoch_loss``
    ``"last"`` (seen, Espresso, id 14632240964): the loss reported at epoch end is the last
    mini-batch's loss. ``"mean"``: the mean of the epoch's mini-batch losses (ML Compute).

``batch_reduction`` (unknown)
    How per-example losses combine into the mini-batch loss (and so the gradient scale):
    ``"mean"`` (standard: torch and Keras default) or ``"sum"``.

``mse_reduction`` (unknown)
    How an example's squared errors combine: ``"mean"`` over its elements (so the batch loss is
    the mean over all elements, like ``torch.nn.MSELoss()`` and ``keras.losses.MeanSquaredError``)
    or ``"sum"``.

``momentum`` (unknown)
    SGD with momentum ``m``, learning rate ``lr``, gradient ``g``:

    * ``"torch"``: ``v = m*v + g;  w -= lr*v`` (``torch.optim.SGD``, dampening 0)
    * ``"keras"``: ``v = m*v - lr*g;  w += v`` (Keras 3 ``SGD``)

    Both give identical weights while ``lr`` is constant; they differ after the learning rate
    changes mid-task (``resume`` with a new ``learningRate``): torch's form rescales the whole
    velocity by the new rate, Keras's keeps the old steps at their old rate.

``adam`` (unknown)
    Adam with step ``t`` (1-based), ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g*g``:

    * ``"torch"`` (default): ``m_hat = m/(1-b1**t); v_hat = v/(1-b2**t);
      w -= lr*m_hat/(sqrt(v_hat) + eps)`` (``torch.optim.Adam``)
    * ``"keras"``: ``w -= lr*sqrt(1-b2**t)/(1-b1**t) * m/(sqrt(v) + eps)`` (Keras 3 ``Adam``:
      the same up to where ``eps`` sits)
    * ``"uncorrected"``: ``w -= lr*m/(sqrt(v) + eps)`` (no bias correction)

``shuffle_order``
    ``"coreml"`` (seen, ids 14763505511, 16801534799): libc++ ``std::shuffle`` with
    ``std::minstd_rand`` over an index vector, once at the start and in place after every epoch
    (``batch_order.py``, proven against libc++ output). ``"numpy"``: the order this project
    used before, ``numpy.random.default_rng(seed).permutation(n)`` per epoch.

``shuffle_seed``
    Only for ``shuffle_order="numpy"``: the seed when the model declares none. (Core ML's own
    order starts its engine in state 1 then.)

``shuffle_when_absent``
    Whether to shuffle when the model has no ``shuffle`` parameter. ``False`` (seen, ids
    14284908880, 14632240964: no value, so ``boolValue`` is NO); coremltools' builder always
    writes one.

``override_without_range``
    An update parameter the spec declares with neither an allowed set nor a range: Core ML
    checks an app's value against built-in bounds whose values are not visible (id
    14552829201). ``True`` (default): accept the value and warn that the device may refuse it;
    ``False``: accept only the declared default.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from ..errors import ConfigError

_CHOICES = {
    "partial_batch": ("wrap", "short", "drop"),
    "epoch_loss": ("last", "mean"),
    "batch_reduction": ("mean", "sum"),
    "mse_reduction": ("mean", "sum"),
    "momentum": ("torch", "keras"),
    "adam": ("torch", "keras", "uncorrected"),
    "shuffle_order": ("coreml", "numpy"),
}

#: The behaviours nothing public shows (``COREML_EVIDENCE.md``: "unknown"), with every value
#: ``variants`` tries.
UNKNOWN = ("momentum", "adam", "batch_reduction", "mse_reduction")


@dataclass(frozen=True)
class Assumptions:
    """The MLUpdateTask behaviours the runtime emulates (see module docstring)."""

    partial_batch: str = "wrap"
    epoch_loss: str = "last"
    batch_reduction: str = "mean"
    mse_reduction: str = "mean"
    momentum: str = "torch"
    adam: str = "torch"
    shuffle_order: str = "coreml"
    shuffle_seed: int = 0
    shuffle_when_absent: bool = False
    override_without_range: bool = True

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"assumption {name}={value!r} is not one of {', '.join(allowed)}")

    def replace(self, **changes) -> Assumptions:
        return dataclasses.replace(self, **changes)

    def describe(self, fields: tuple[str, ...] = UNKNOWN) -> str:
        """``momentum=torch adam=torch ...`` for the named fields (a variant's label)."""
        return " ".join(f"{name}={getattr(self, name)}" for name in fields)


DEFAULT = Assumptions()
"""Core ML's default engine (Espresso) as seen, and the standard formulas for the unknowns."""

ML_COMPUTE = DEFAULT.replace(partial_batch="short", epoch_loss="mean")
"""Core ML's ML Compute engine (runs only behind a private flag, default off; ids 14632240964,
14466503593): the last mini-batch of an epoch is short, the epoch loss is the batch mean."""

#: The optimizer forms of the frameworks we export from (see ``momentum`` and ``adam`` above).
FRAMEWORK_FORMS = {
    "torch": {"momentum": "torch", "adam": "torch"},
    "keras": {"momentum": "keras", "adam": "keras"},
}

PRESETS = {
    "espresso": DEFAULT,
    "ml-compute": ML_COMPUTE,
    "torch": DEFAULT.replace(**FRAMEWORK_FORMS["torch"]),
    "keras": DEFAULT.replace(**FRAMEWORK_FORMS["keras"]),
}
"""Named assumption sets: ``espresso`` is the default; ``torch``/``keras`` train with that
framework's optimizer forms; ``all`` (``variants``) is every combination of the unknowns."""

ALL = "all"


def resolve(assumptions: None | str | Assumptions) -> Assumptions:
    """``None`` -> ``DEFAULT``; a preset name -> that preset; an ``Assumptions`` as is."""
    if assumptions is None:
        return DEFAULT
    if isinstance(assumptions, Assumptions):
        return assumptions
    if assumptions in PRESETS:
        return PRESETS[assumptions]
    raise ConfigError(
        f"unknown assumptions {assumptions!r}; use one of {', '.join(PRESETS)} or {ALL!r}"
    )


def relevant_unknowns(optimizer: str, loss: str, momentum: bool) -> tuple[str, ...]:
    """The unknown behaviours that can change a task's result: the momentum form only for SGD
    with momentum, Adam's form only for Adam, the MSE formula only for MSE."""
    fields = []
    if optimizer == "sgd" and momentum:
        fields.append("momentum")
    if optimizer == "adam":
        fields.append("adam")
    fields.append("batch_reduction")
    if loss == "mse":
        fields.append("mse_reduction")
    return tuple(fields)


def variants(base: Assumptions, fields: tuple[str, ...]) -> list[Assumptions]:
    """Every combination of the values of ``fields`` (each from ``UNKNOWN``) on top of
    ``base``; ``base`` itself comes first."""
    combos = [base]
    for values in itertools.product(*(_CHOICES[name] for name in fields)):
        candidate = base.replace(**dict(zip(fields, values, strict=True)))
        if candidate not in combos:
            combos.append(candidate)
    return combos


_FORM_TEXT = {
    ("momentum", "torch"): "v = m*v + g; w -= lr*v",
    ("momentum", "keras"): "v = m*v - lr*g; w += v",
    ("adam", "torch"): "eps added to sqrt of the bias-corrected v",
    ("adam", "keras"): "eps added to sqrt(v), the bias correction folded into the step size",
}
_FRAMEWORK_NAMES = {"torch": "PyTorch", "keras": "Keras"}


def framework_form_note(framework: str, optimizer: str, momentum: float | None = None) -> str:
    """The export report's line naming the optimizer form of the source ``framework``
    ("torch" or "keras"), the other framework's, and how to simulate with each; "" when the
    form cannot matter (SGD without momentum)."""
    if optimizer == "sgd" and not momentum:
        return ""
    field = "momentum" if optimizer == "sgd" else "adam"
    other = "keras" if framework == "torch" else "torch"
    title = "SGD momentum" if field == "momentum" else "Adam"
    caveat = (
        "the forms give the same weights until the learning rate changes mid-task"
        if field == "momentum"
        else "the forms differ where gradients are near eps"
    )
    return (
        f"{title} in {_FRAMEWORK_NAMES[framework]}'s form "
        f"({_FORM_TEXT[field, FRAMEWORK_FORMS[framework][field]]}; "
        f"{_FRAMEWORK_NAMES[other]}'s: {_FORM_TEXT[field, FRAMEWORK_FORMS[other][field]]}); "
        f"Core ML's own form is not public ({caveat}): 'simulate --assumptions {framework}' "
        "trains with the source's form, '--assumptions all' shows how much the unknown "
        "formulas change the result"
    )
