"""MLUpdateTask emulation: epochs of mini-batches in Core ML's order, SGD/Adam, progress events.

``run_update`` (``Model.update``) reads everything from the model's ``updateParams``: loss,
optimizer, mini-batch size, epochs, shuffle, seed, and what the app may override them with.
What Core ML does is in ``assumptions`` (seen behaviour by default, each unknown switchable);
the example order is ``batch_order``'s emulation of libc++'s ``std::shuffle``.

Task semantics (decompiled iOS Core ML, ids in ``COREML_EVIDENCE.md``):

* ``parameters`` are ``MLModelConfiguration.parameters`` (ids 14380843269, 14552829201,
  14284908880). Core ML knows the keys ``epochs``, ``shuffle``, ``seed``, ``learningRate``,
  ``miniBatchSize`` and the optimizer's (``momentum``; ``beta1``, ``beta2``, ``eps``):
  another key is silently ignored; a known key the spec does not declare is stored unchecked
  (and used); a declared key's value must match its allowed set within 1e-4 or lie in its
  range (bounds included), else the task fails (``ConfigError`` here); a declared key with
  neither set nor range is checked against built-in bounds that are not public (accepted here,
  see ``Assumptions.override_without_range``). Where Core ML silently ignores or accepts what
  the app may not expect, ``UpdateResult.warnings`` says so, naming the key.
* ``progress(event)`` receives ``training_begin``, ``mini_batch_end`` (epoch, mini_batch, loss),
  ``epoch_end`` (epoch, loss) and ``completion``; indices are 0-based.
* ``event.task.cancel()`` stops the task: no completion event, and the result carries the
  original model unchanged.
* ``event.task.resume(parameters)`` is ``resume(withParameters:)``: only ``learningRate`` is
  read (id 14632240964), checked like an override, and used from the next mini-batch on;
  other keys are ignored (with a warning). Epochs, mini-batch size, momentum, betas and eps
  are read once when the task starts. The optimizer state (velocity, Adam moments and step
  count) carries on. A new ``update`` on the returned model starts with fresh optimizer
  state: Core ML stores no optimizer state in the model file.
* The frozen part of the network (everything no updatable layer feeds) is run once per example
  and reused across epochs, unless it holds a batchnorm that normalizes with batch statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, ModelFileError
from . import backward as bw
from . import batch_order
from . import features as feat
from .assumptions import Assumptions, resolve
from .base import Model, WeightKey

if TYPE_CHECKING:  # annotations only: the network module runs this one's update task
    from .network import NeuralNetworkModel

#: What ``resume(withParameters:)`` changes (id 14632240964).
RESUMABLE = ("learningRate",)
#: The keys Core ML's parameter container knows, per optimizer (id 14284908880).
COMMON_KEYS = ("epochs", "shuffle", "seed", "learningRate", "miniBatchSize")
OPTIMIZER_KEYS = {
    "sgd": COMMON_KEYS + ("momentum",),
    "adam": COMMON_KEYS + ("beta1", "beta2", "eps"),
}
#: A value matches an allowed set member within this (id 14380843269).
SET_TOLERANCE = 1e-4
#: Examples the frozen prefix runs at a time: small enough that a block's activations stay in
#: the cache from layer to layer (``benchmarks/bench_runtime.py``'s backbone, one thread, CPU
#: time: 32 examples at a time ran 1.2-1.8x faster than 256; 8 or 16, within 5% of 32).
PREFIX_CHUNK = 32


# -- update parameters ------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateParameter:
    """One update parameter: its default plus the allowed set or range the spec declares.
    ``declared=False``: the spec lacks it (Core ML stores an app's value unchecked)."""

    name: str
    default: Any
    kind: type = float
    values: tuple | None = None
    range: tuple | None = None
    declared: bool = True

    def allowed(self) -> str:
        if self.values is not None:
            return "{" + ", ".join(map(str, self.values)) + "}"
        if self.range is not None:
            return f"{self.range[0]:g}..{self.range[1]:g}"
        return f"only the default {self.default}"

    def _converted(self, value: Any, notes: list) -> Any:
        if self.kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"{self.name} must be true or false, got {value!r}")
            return bool(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise ConfigError(f"{self.name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{self.name} must be finite, got {value!r}")
        if self.kind is int and float(value) != int(value):
            notes.append(
                f"{self.name}={value!r} is not an integer: Core ML checks it as a "
                f"number and then uses its integer part, {int(value)}"
            )
        return value

    def check(self, value: Any, assumptions: Assumptions, notes: list) -> Any:
        """``value`` as Core ML would use it, or ConfigError where Core ML fails the task;
        ``notes`` gets a line for what Core ML accepts silently."""
        value = self._converted(value, notes)
        if self.kind is bool:
            return value
        if not self.declared:
            notes.append(
                f"{self.name}={value:g}: the model declares no {self.name}, so Core ML "
                "accepts the value unchecked and trains with it"
            )
        elif self.values is not None:
            if not any(abs(float(value) - v) <= SET_TOLERANCE for v in self.values):
                self._refuse(value)
        elif self.range is not None:
            if not self.range[0] <= float(value) <= self.range[1]:
                self._refuse(value)
        elif value != self.default:
            if not assumptions.override_without_range:
                self._refuse(value)
            notes.append(
                f"{self.name}={value:g}: the model gives {self.name} no allowed range "
                "or set, so Core ML checks it against built-in bounds that are not "
                "public; the device may refuse it (declare a range to be sure)"
            )
        return self.kind(int(value) if self.kind is int else value)

    def _refuse(self, value: Any) -> None:
        raise ConfigError(
            f"{self.name}={value:g} is not allowed by the model (allowed: "
            f"{self.allowed()}); Core ML fails the task with such parameters"
        )


def _int_parameter(name: str, message, declared: bool = True) -> UpdateParameter:
    kind = message.WhichOneof("AllowedValues")
    values = tuple(int(v) for v in message.set.values) if kind == "set" else ()
    return UpdateParameter(
        name,
        int(message.defaultValue),
        int,
        values=values or None,  # an empty set is no constraint (id 14552829201)
        range=(int(message.range.minValue), int(message.range.maxValue))
        if kind == "range"
        else None,
        declared=declared,
    )


def _float_parameter(name: str, message, declared: bool = True) -> UpdateParameter:
    has_range = message.WhichOneof("AllowedValues") == "range"
    return UpdateParameter(
        name,
        float(message.defaultValue),
        float,
        range=(message.range.minValue, message.range.maxValue) if has_range else None,
        declared=declared,
    )


@dataclass(frozen=True)
class TrainingSetup:
    """The loss and optimizer an updatable network declares. ``parameters`` holds every key
    Core ML knows for this optimizer; ``declared=False`` marks those the spec lacks."""

    loss: str  # "cce" or "mse"
    loss_input: str
    loss_target: str
    optimizer: str  # "sgd" or "adam"
    parameters: dict


def read_training_setup(network: NeuralNetworkModel, assumptions: Assumptions) -> TrainingSetup:
    nn = network.network
    if not nn.HasField("updateParams") or not nn.updateParams.lossLayers:
        raise ModelFileError(
            "the model is not updatable: it has no update parameters (loss, "
            "optimizer); export it with updatable layers first"
        )
    params = nn.updateParams
    loss_layer = params.lossLayers[0]
    loss_kind = loss_layer.WhichOneof("LossLayerType")
    if loss_kind not in ("categoricalCrossEntropyLossLayer", "meanSquaredErrorLossLayer"):
        raise ModelFileError(f"loss layer {loss_layer.name!r} has no loss type")
    loss = getattr(loss_layer, loss_kind)
    optimizer = params.optimizer.WhichOneof("OptimizerType")
    specs = {"epochs": _int_parameter("epochs", params.epochs, params.HasField("epochs"))}
    if optimizer == "sgdOptimizer":
        sgd = params.optimizer.sgdOptimizer
        specs["miniBatchSize"] = _int_parameter(
            "miniBatchSize", sgd.miniBatchSize, sgd.HasField("miniBatchSize")
        )
        for name in ("learningRate", "momentum"):
            specs[name] = _float_parameter(name, getattr(sgd, name), sgd.HasField(name))
    elif optimizer == "adamOptimizer":
        adam = params.optimizer.adamOptimizer
        specs["miniBatchSize"] = _int_parameter(
            "miniBatchSize", adam.miniBatchSize, adam.HasField("miniBatchSize")
        )
        for name in ("learningRate", "beta1", "beta2", "eps"):
            specs[name] = _float_parameter(name, getattr(adam, name), adam.HasField(name))
    else:
        raise ModelFileError("the model's update parameters have no optimizer")
    has_shuffle = params.HasField("shuffle")
    specs["shuffle"] = UpdateParameter(
        "shuffle",
        params.shuffle.defaultValue if has_shuffle else assumptions.shuffle_when_absent,
        bool,
        declared=has_shuffle,
    )
    specs["seed"] = _int_parameter("seed", params.seed, params.HasField("seed"))
    return TrainingSetup(
        "cce" if loss_kind.startswith("categorical") else "mse",
        loss.input,
        loss.target,
        "sgd" if optimizer == "sgdOptimizer" else "adam",
        specs,
    )


def initial_values(setup: TrainingSetup) -> dict:
    """The values a task starts from: the declared defaults; an undeclared seed stays unset
    (Core ML's engine then starts in state 1)."""
    return {
        name: spec.default
        for name, spec in setup.parameters.items()
        if spec.declared or name != "seed"
    }


def resolve_parameters(
    setup: TrainingSetup,
    overrides: Mapping[str, Any] | None,
    assumptions: Assumptions,
    notes: list,
    only: Sequence[str] = (),
) -> dict:
    """The overrides Core ML would use (``only`` restricts which keys it reads), checked as
    ``MLParameterContainer`` checks them; ``notes`` gets what it silently ignores or accepts."""
    used = {}
    for name, value in dict(overrides or {}).items():
        if name not in setup.parameters:
            notes.append(
                f"{name!r} is not an update parameter of a {setup.optimizer.upper()} "
                f"model ({', '.join(OPTIMIZER_KEYS[setup.optimizer])}): Core ML "
                "ignores it"
            )
            continue
        if only and name not in only:
            notes.append(
                f"{name} cannot change while the task runs (resume reads only "
                f"{', '.join(only)}): Core ML ignores it"
            )
            continue
        used[name] = setup.parameters[name].check(value, assumptions, notes)
    return used


# -- the training plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Which layers run once per example (``prefix``), which run and backpropagate every
    mini-batch (``section``), and where the loss gradient enters (``grad_blob``)."""

    prefix: tuple[int, ...]
    section: tuple[int, ...]
    backprop: tuple[int, ...]
    frontier: tuple[str, ...]
    needs_grad: frozenset
    grad_blob: str
    keys: tuple[WeightKey, ...]
    cacheable: bool


def _ancestors(
    layers, producers: Mapping[str, int], blobs: Iterable[str], allowed: Callable[[int], bool]
) -> list[int]:
    """Layers (among ``allowed``) that ``blobs`` are computed from, in forward order."""
    found, stack = set(), list(blobs)
    while stack:
        index = producers.get(stack.pop())
        if index is None or index in found or not allowed(index):
            continue
        found.add(index)
        stack.extend(layers[index].input)
    return sorted(found)


def make_plan(network: NeuralNetworkModel, setup: TrainingSetup) -> Plan:
    layers = network.layers
    keys = network.updatable_keys()
    if not keys:
        raise ModelFileError("the model has no updatable layers")
    producers = {out: i for i, layer in enumerate(layers) for out in layer.output}
    depends: set[str] = set()
    trainable = set()
    for i, layer in enumerate(layers):
        if layer.isUpdatable or any(name in depends for name in layer.input):
            trainable.add(i)
            depends.update(layer.output)
    if setup.loss_input not in depends:
        raise ModelFileError(
            f"the loss input {setup.loss_input!r} does not depend on any updatable layer"
        )
    section = _ancestors(layers, producers, [setup.loss_input], trainable.__contains__)
    order = list(section)
    grad_blob = setup.loss_input
    if setup.loss == "cce":
        softmax = producers[setup.loss_input]
        if layers[softmax].WhichOneof("layer") != "softmax":
            found = layers[softmax].WhichOneof("layer")
            raise ModelFileError(
                f"the categorical cross-entropy input {setup.loss_input!r} must "
                f"be a softmax layer's output, not {found}"
            )
        order.remove(softmax)
        grad_blob = layers[softmax].input[0]
    for i in order:
        bw.backward_op(layers[i], through=any(name in depends for name in layers[i].input))
    frontier = tuple(
        dict.fromkeys(name for i in section for name in layers[i].input if name not in depends)
    )
    prefix = _ancestors(layers, producers, frontier, lambda i: i not in trainable)
    cacheable = not any(
        layers[i].WhichOneof("layer") == "batchnorm"
        and layers[i].batchnorm.computeMeanVar
        and not layers[i].batchnorm.instanceNormalization
        for i in prefix
    )
    return Plan(
        tuple(prefix),
        tuple(section),
        tuple(order),
        frontier,
        frozenset(depends),
        grad_blob,
        tuple(k for k in keys if k[0] in section),
        cacheable,
    )


# -- data -------------------------------------------------------------------------------------


def training_batch(model: Model, examples) -> tuple[dict, int]:
    """Examples (iterable of feature dicts, or a dict of batched values) in batched form."""
    descriptions = list(model.description.trainingInput) or list(model.description.input)
    if isinstance(examples, Mapping):
        batch, count, _ = feat.batch_features(
            descriptions, examples, batched=feat.examples_batched(descriptions, examples)
        )
    else:
        rows = list(examples)
        if not rows:
            raise ConfigError("no training examples")
        names = [d.name for d in descriptions if d.name in rows[0]]
        columns = {name: [row[name] for row in rows] for name in names}
        stacked = {
            name: (np.stack(values) if isinstance(values[0], np.ndarray) else values)
            for name, values in columns.items()
        }
        batch, count, _ = feat.batch_features(descriptions, stacked, batched=True)
    if count == 0:
        raise ConfigError("no training examples")
    return batch, count


def class_indices(
    network: NeuralNetworkModel, setup: TrainingSetup, features: Mapping
) -> np.ndarray:
    """CCE targets as class indices: classifier labels (String/Int64) map through the class
    labels; a MultiArray target holds the index itself."""
    classifier = network.is_classifier
    label_name = network.description.predictedFeatureName
    name = setup.loss_target if setup.loss_target in features else label_name
    if name not in features:
        raise ConfigError(
            f"the training examples have no target: give {setup.loss_target!r}"
            + (f" or {label_name!r}" if classifier and label_name else "")
        )
    values = np.asarray(features[name])
    if classifier and (name == label_name or values.dtype.kind in "UOS"):
        labels = network.class_labels()
        lookup = {label: i for i, label in enumerate(labels)}
        unknown = [v for v in values.reshape(-1).tolist() if v not in lookup]
        if unknown:
            shown = ", ".join(map(repr, labels[:8])) + (", ..." if len(labels) > 8 else "")
            raise ConfigError(
                f"label {unknown[0]!r} is not one of the model's class labels ({shown})"
            )
        return np.asarray([lookup[v] for v in values.reshape(-1).tolist()], dtype=np.int64)
    flat = values.reshape(values.shape[0], -1)[:, 0]
    if flat.dtype.kind not in "iuf" or np.any(flat != np.round(flat)):
        raise ConfigError(f"target {name!r} must hold integer class indices")
    return flat.astype(np.int64)


def regression_targets(
    network: NeuralNetworkModel, setup: TrainingSetup, features: Mapping
) -> np.ndarray:
    if setup.loss_target not in features:
        raise ConfigError(f"the training examples have no target {setup.loss_target!r}")
    return np.asarray(features[setup.loss_target], dtype=network.dtype)


class FrontierSource:
    """What the trainable section reads for a mini-batch: cached per example when the frozen
    prefix is per-example, else recomputed from the input blobs per mini-batch."""

    def __init__(self, network: NeuralNetworkModel, plan: Plan, features: Mapping, count: int):
        self.network, self.plan = network, plan
        blobs = network.input_blobs(features)
        if not plan.cacheable:
            self.inputs = blobs
            return
        parts: dict[str, list] = {name: [] for name in plan.frontier}
        for start in range(0, count, PREFIX_CHUNK):
            chunk = {k: v[start : start + PREFIX_CHUNK] for k, v in blobs.items()}
            network.run(chunk, plan.prefix)
            for name in plan.frontier:
                parts[name].append(chunk[name])
        self.cache = {name: np.concatenate(values) for name, values in parts.items()}

    def batch(self, index: np.ndarray) -> dict[str, np.ndarray]:
        if self.plan.cacheable:
            return {name: values[index] for name, values in self.cache.items()}
        blobs = {name: values[index] for name, values in self.inputs.items()}
        self.network.run(blobs, self.plan.prefix)
        return {name: blobs[name] for name in self.plan.frontier}


def mini_batches(order: np.ndarray, size: int, mode: str) -> list[np.ndarray]:
    """Split an epoch's example order into mini-batches (``mode``: see assumptions)."""
    count = len(order)
    if mode == "wrap":
        batches = -(-count // size)
        return list(np.resize(order, batches * size).reshape(batches, size))
    stop = count if mode == "short" else count - count % size
    return [order[i : i + size] for i in range(0, stop, size)]


# -- optimizer --------------------------------------------------------------------------------


class Optimizer:
    """SGD (with momentum) or Adam; the exact update formulas are in ``assumptions``."""

    def __init__(self, kind: str, assumptions: Assumptions) -> None:
        self.kind, self.assumptions = kind, assumptions
        self.state: dict[WeightKey, list[np.ndarray]] = {}
        self.steps = 0

    def step(
        self,
        weights: Mapping[WeightKey, np.ndarray],
        grads: Mapping[WeightKey, np.ndarray],
        hyper: Mapping[str, Any],
    ) -> None:
        """Update ``weights`` in place from ``grads`` (one mini-batch)."""
        self.steps += 1
        for key, grad in grads.items():
            if self.kind == "sgd":
                self._sgd(key, weights[key], grad, hyper)
            else:
                self._adam(key, weights[key], grad, hyper)

    def _sgd(self, key, w, g, hyper) -> None:
        lr, momentum = hyper["learningRate"], hyper["momentum"]
        velocity = self.state.setdefault(key, [np.zeros_like(w)])[0]
        velocity *= momentum
        if self.assumptions.momentum == "torch":
            velocity += g
            w -= lr * velocity
        else:
            velocity -= lr * g
            w += velocity

    def _adam(self, key, w, g, hyper) -> None:
        lr, b1, b2, eps = (hyper[k] for k in ("learningRate", "beta1", "beta2", "eps"))
        m, v = self.state.setdefault(key, [np.zeros_like(w), np.zeros_like(w)])
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * np.square(g)
        t, variant = self.steps, self.assumptions.adam
        if variant == "torch":
            w -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        elif variant == "keras":
            w -= lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        else:
            w -= lr * m / (np.sqrt(v) + eps)


# -- the task ---------------------------------------------------------------------------------


@dataclass
class ProgressEvent:
    """What a progress callback receives (Core ML's MLUpdateContext)."""

    kind: str  # training_begin | mini_batch_end | epoch_end | completion
    task: UpdateTask
    epoch: int | None = None
    mini_batch: int | None = None
    loss: float | None = None

    @property
    def parameters(self) -> dict:
        return dict(self.task.parameters)

    @property
    def model(self) -> Model:
        """The model with the weights as they are now."""
        return self.task.current_model()


@dataclass
class UpdateResult:
    """The outcome: the updated model (the original one when cancelled) and the losses."""

    model: Model
    cancelled: bool
    epoch_losses: list = field(default_factory=list)
    mini_batch_losses: list = field(default_factory=list)  # one list per epoch
    parameters: dict = field(default_factory=dict)  # values in force at the end
    #: what Core ML silently ignored or accepted (overrides, resume), each naming its key
    warnings: list = field(default_factory=list)


class UpdateTask:
    """One run of the update task; progress callbacks reach it as ``event.task``."""

    def __init__(
        self,
        model: Model,
        setup: TrainingSetup,
        parameters: dict,
        assumptions: Assumptions,
        warnings: list | None = None,
    ) -> None:
        self.model, self.setup, self.assumptions = model, setup, assumptions
        self.parameters = parameters
        self.warnings = list(warnings or [])
        network = model.trainable()
        self.plan = make_plan(network, setup)
        weights = {key: network.weight_getter(key[0])(key[1]).copy() for key in self.plan.keys}
        self.network = network.with_weights(weights)
        self.weights = weights
        self.optimizer = Optimizer(setup.optimizer, assumptions)
        self.cancelled = False

    def cancel(self) -> None:
        """Stop after the current callback; the model stays as it was before the task."""
        self.cancelled = True

    def resume(self, parameters: Mapping[str, Any]) -> None:
        """``resume(withParameters:)``: a new learning rate from the next mini-batch on;
        Core ML reads no other key here (ignored, with a warning). A learning rate the model
        does not allow fails the task (``ConfigError``), as on device."""
        self.parameters.update(
            resolve_parameters(
                self.setup, parameters, self.assumptions, self.warnings, only=RESUMABLE
            )
        )

    def current_model(self) -> Model:
        snapshot = self.network.with_weights({k: v.copy() for k, v in self.weights.items()})
        return self.model.with_trainable(snapshot)

    def orders(self, count: int, epochs: int) -> Iterable[np.ndarray]:
        """Each epoch's example order (``Assumptions.shuffle_order``)."""
        shuffle, seed = self.parameters["shuffle"], self.parameters.get("seed")
        if self.assumptions.shuffle_order == "coreml":
            return batch_order.coreml_orders(count, epochs, shuffle, seed)
        return batch_order.numpy_orders(count, epochs, shuffle, seed, self.assumptions.shuffle_seed)

    def run(self, examples, progress: Callable[[ProgressEvent], Any] | None) -> UpdateResult:
        batch, count = training_batch(self.model, examples)
        features = self.model.training_features(batch)
        network = self.network
        targets = (
            class_indices(network, self.setup, features)
            if self.setup.loss == "cce"
            else regression_targets(network, self.setup, features)
        )
        source = FrontierSource(network, self.plan, features, count)
        result = UpdateResult(self.model, cancelled=False, warnings=self.warnings)

        def emit(kind: str, **details) -> bool:
            if progress is not None:
                progress(ProgressEvent(kind, self, **details))
            return not self.cancelled

        # read once at the start (id 14632240964); resume changes only the learning rate
        epochs, size = self.parameters["epochs"], self.parameters["miniBatchSize"]
        if not emit("training_begin"):
            return self._cancelled(result)
        epoch = 0
        for order in self.orders(count, epochs):
            batches = mini_batches(order, size, self.assumptions.partial_batch)
            if not batches:
                raise ConfigError(f"{count} examples make no full mini-batch of {size}")
            losses: list[float] = []
            result.mini_batch_losses.append(losses)
            for index, rows in enumerate(batches):
                losses.append(self._step(source.batch(rows), targets[rows]))
                if not emit("mini_batch_end", epoch=epoch, mini_batch=index, loss=losses[-1]):
                    return self._cancelled(result)
            loss = losses[-1] if self.assumptions.epoch_loss == "last" else float(np.mean(losses))
            result.epoch_losses.append(loss)
            if not emit("epoch_end", epoch=epoch, loss=loss):
                return self._cancelled(result)
            epoch += 1
        result.model = self.model.with_trainable(self.network)
        result.parameters = dict(self.parameters)
        emit(
            "completion",
            epoch=epoch - 1 if epoch else None,
            loss=result.epoch_losses[-1] if result.epoch_losses else None,
        )
        return result

    def _cancelled(self, result: UpdateResult) -> UpdateResult:
        result.cancelled = True
        result.parameters = dict(self.parameters)
        return result

    def _step(self, frontier: dict[str, np.ndarray], target: np.ndarray) -> float:
        """Forward the trainable section, take the loss gradient back, update the weights."""
        network, plan, assume = self.network, self.plan, self.assumptions
        blobs = network.run(dict(frontier), plan.section)
        prediction = blobs[self.setup.loss_input]
        if self.setup.loss == "cce":
            loss, grad = bw.cross_entropy(prediction, target, assume.batch_reduction)
        else:
            loss, grad = bw.mean_squared_error(
                prediction, target, assume.mse_reduction, assume.batch_reduction
            )
        grads = bw.backprop(network, plan.backprop, blobs, {plan.grad_blob: grad}, plan.needs_grad)
        self.optimizer.step(self.weights, grads, self.parameters)
        return loss


def run_update(
    model: Model,
    examples: Iterable[Mapping] | Mapping,
    *,
    parameters: Mapping[str, Any] | None = None,
    progress: Callable[[ProgressEvent], Any] | None = None,
    assumptions: None | str | Assumptions = None,
) -> UpdateResult:
    """Train ``model`` on ``examples`` as MLUpdateTask would; see the module docstring.
    ``assumptions``: an ``Assumptions``, a preset name (``assumptions.PRESETS``) or None."""
    assumptions = resolve(assumptions)
    if not model.spec.isUpdatable:
        raise ModelFileError(
            "the model is not updatable (isUpdatable is false); export it with "
            "updatable layers first"
        )
    network = model.trainable()
    setup = read_training_setup(network, assumptions)
    notes: list[str] = []
    values = initial_values(setup)
    values.update(resolve_parameters(setup, parameters, assumptions, notes))
    if values["miniBatchSize"] < 1 or values["epochs"] < 0:
        raise ConfigError(
            f"miniBatchSize must be >= 1 and epochs >= 0, got "
            f"{values['miniBatchSize']} and {values['epochs']}"
        )
    return UpdateTask(model, setup, values, assumptions, notes).run(examples, progress)
