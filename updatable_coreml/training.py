"""The training configuration Core ML stores in an updatable NeuralNetwork, as value objects.

Every Core ML update parameter is a default plus what the app may override it with: a range
or an enumerated set. ``IntParam``/``FloatParam`` model exactly that; ``TrainingConfig`` holds
the loss, optimizer, batch size, epochs, shuffle and seed, checks them at construction, and
writes them (with the training inputs) into a spec.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

from ._proto import FeatureTypes_pb2, Model_pb2, NeuralNetwork_pb2
from .errors import ConfigError
from .options import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS
from .spec_io import Spec, neural_network

Number = Union[int, float]


@dataclass(frozen=True)
class IntParam:
    """An Int64 update parameter: ``default`` plus an allowed ``values`` set or ``range``."""

    default: int
    values: Optional[tuple[int, ...]] = None
    range: Optional[tuple[int, int]] = None
    name: str = "parameter"
    positive: bool = True

    def __post_init__(self) -> None:
        if self.values is not None and self.range is not None:
            raise ConfigError(f"{self.name}: give an allowed set or a range, not both")
        if self.positive and self.default < 1:
            raise ConfigError(f"{self.name} must be >= 1, got {self.default}")
        if self.values is not None:
            object.__setattr__(self, "values", tuple(int(v) for v in self.values))
            if self.positive and any(v < 1 for v in self.values):
                raise ConfigError(
                    f"allowed {self.name} values must all be >= 1, got {list(self.values)}"
                )
            if self.default not in self.values:
                raise ConfigError(
                    f"{self.name} default {self.default} is not in its allowed set "
                    f"{sorted(self.values)}; add it to the set"
                )
        if self.range is not None:
            lo, hi = (int(v) for v in self.range)
            object.__setattr__(self, "range", (lo, hi))
            if lo > hi or (self.positive and lo < 1):
                raise ConfigError(f"allowed {self.name} range {lo}..{hi} is invalid")
            if not lo <= self.default <= hi:
                raise ConfigError(
                    f"{self.name} default {self.default} is outside its allowed range {lo}..{hi}"
                )

    def allows(self, value: int) -> bool:
        if self.values is not None:
            return value in self.values
        if self.range is not None:
            return self.range[0] <= value <= self.range[1]
        return value == self.default

    def describe(self) -> str:
        if self.values is not None:
            return f"{self.default} (allowed {{{', '.join(map(str, sorted(self.values)))}}})"
        if self.range is not None:
            return f"{self.default} (allowed {self.range[0]}..{self.range[1]})"
        return str(self.default)

    def write(self, message) -> None:
        message.defaultValue = int(self.default)
        if self.values is not None:
            message.set.values.extend(sorted(self.values))
        elif self.range is not None:
            message.range.minValue, message.range.maxValue = self.range

    @classmethod
    def read(cls, message, name: str, positive: bool = True) -> IntParam:
        kind = message.WhichOneof("AllowedValues")
        return cls(
            int(message.defaultValue),
            values=tuple(message.set.values) if kind == "set" else None,
            range=(message.range.minValue, message.range.maxValue) if kind == "range" else None,
            name=name,
            positive=positive,
        )


@dataclass(frozen=True)
class FloatParam:
    """A Double update parameter: ``default`` plus the allowed closed ``range``."""

    default: float
    range: Optional[tuple[float, float]] = None
    name: str = "parameter"

    def __post_init__(self) -> None:
        if not math.isfinite(self.default):
            raise ConfigError(f"{self.name} must be a finite number, got {self.default}")
        if self.range is not None:
            lo, hi = (float(v) for v in self.range)
            object.__setattr__(self, "range", (lo, hi))
            if lo > hi:
                raise ConfigError(f"allowed {self.name} range {lo}..{hi} is empty")
            if not lo <= self.default <= hi:
                raise ConfigError(
                    f"{self.name} {self.default} is outside its allowed range {lo}..{hi}"
                )

    def allows(self, value: float) -> bool:
        if self.range is None:
            return value == self.default
        return self.range[0] <= value <= self.range[1]

    def describe(self) -> str:
        if self.range is None:
            return f"{self.default:g}"
        return f"{self.default:g} (allowed {self.range[0]:g}..{self.range[1]:g})"

    def write(self, message) -> None:
        message.defaultValue = float(self.default)
        if self.range is not None:
            message.range.minValue, message.range.maxValue = self.range

    @classmethod
    def read(cls, message, name: str) -> FloatParam:
        has_range = message.WhichOneof("AllowedValues") == "range"
        return cls(
            float(message.defaultValue),
            range=(message.range.minValue, message.range.maxValue) if has_range else None,
            name=name,
        )


def _float_param(
    value: Union[Number, FloatParam],
    name: str,
    bounds: tuple[float, float],
    default_range: tuple[float, float],
) -> FloatParam:
    """Coerce a number to a FloatParam with ``default_range``; both must lie within ``bounds``."""
    default = value.default if isinstance(value, FloatParam) else float(value)
    allowed = value.range if isinstance(value, FloatParam) else default_range
    lo, hi = bounds
    if not lo <= default <= hi:
        raise ConfigError(f"{name} must lie in [{lo:g}, {hi:g}], got {default:g}")
    if allowed is not None and (allowed[0] < lo or allowed[1] > hi):
        raise ConfigError(
            f"allowed {name} range must lie within [{lo:g}, {hi:g}], got "
            f"{allowed[0]:g}..{allowed[1]:g}"
        )
    return FloatParam(default, allowed, name)


@dataclass(frozen=True, init=False)
class SGD:
    """Core ML's SGD optimizer: learning rate and momentum (``v = m*v + g; w -= lr*v``
    in our runtime; see ``runtime.assumptions``).

    A plain number becomes a parameter with Core ML's bounds; the fields always hold
    ``FloatParam`` (an explicit ``__init__`` so the types say so)."""

    learning_rate: FloatParam
    momentum: FloatParam

    def __init__(
        self,
        learning_rate: Union[float, FloatParam] = 0.01,
        momentum: Union[float, FloatParam] = 0.0,
    ) -> None:
        object.__setattr__(
            self,
            "learning_rate",
            _float_param(learning_rate, "learning rate", (0.0, 1.0), (0.0, 1.0)),
        )
        object.__setattr__(
            self, "momentum", _float_param(momentum, "momentum", (0.0, 1.0), (0.0, 1.0))
        )

    kind = "sgd"


@dataclass(frozen=True, init=False)
class Adam:
    """Core ML's Adam optimizer: learning rate, beta1, beta2, eps (numbers or ``FloatParam``;
    the fields always hold ``FloatParam``)."""

    learning_rate: FloatParam
    beta1: FloatParam
    beta2: FloatParam
    eps: FloatParam

    def __init__(
        self,
        learning_rate: Union[float, FloatParam] = 0.001,
        beta1: Union[float, FloatParam] = 0.9,
        beta2: Union[float, FloatParam] = 0.999,
        eps: Union[float, FloatParam] = 1e-8,
    ) -> None:
        object.__setattr__(
            self,
            "learning_rate",
            _float_param(learning_rate, "learning rate", (0.0, 1.0), (0.0, 1.0)),
        )
        object.__setattr__(self, "beta1", _float_param(beta1, "beta1", (0.0, 1.0), (0.0, 1.0)))
        object.__setattr__(self, "beta2", _float_param(beta2, "beta2", (0.0, 1.0), (0.0, 1.0)))
        object.__setattr__(self, "eps", _float_param(eps, "eps", (0.0, 1.0), (0.0, 1.0)))
        if self.eps.default <= 0:
            raise ConfigError(f"eps must be > 0, got {self.eps.default:g}")

    kind = "adam"


Optimizer = Union[SGD, Adam]


def optimizer_named(name: str) -> Optimizer:
    """``"sgd"`` / ``"adam"`` (the CLI's ``--optimizer`` words) as our optimizer with its
    defaults, so every frontend takes the same string forms as the command line."""
    kinds = {"sgd": SGD, "adam": Adam}
    if name.lower() not in kinds:
        raise ConfigError(f"optimizer {name!r}: use 'sgd' or 'adam' (or SGD(...)/Adam(...))")
    return kinds[name.lower()]()


LOSS_KINDS = ("cce", "mse")


@dataclass(frozen=True)
class Loss:
    """The loss layer: ``cce`` (input must be a softmax output) or ``mse``.

    ``target`` defaults to ``<input>_true`` (coremltools' convention).
    """

    kind: str
    input: str
    target: str = ""
    name: str = "loss"

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ConfigError(
                f"unknown loss {self.kind!r}; use 'cce' (categorical cross-entropy) "
                "or 'mse' (mean squared error)"
            )
        if not self.input:
            raise ConfigError("the loss needs the name of the blob it reads (its input)")
        if not self.target:
            object.__setattr__(self, "target", f"{self.input}_true")


def _int_param(value: Union[int, IntParam], name: str, allowed, default_allowed) -> IntParam:
    """Coerce an int plus allowed values (a set, or a ``range``) to an IntParam."""
    if isinstance(value, IntParam):
        return IntParam(value.default, value.values, value.range, name)
    if isinstance(value, bool) or not float(value).is_integer():
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")
    allowed = default_allowed(value) if allowed is None else allowed
    if isinstance(allowed, range):
        return IntParam(value, range=(allowed.start, allowed.stop - 1), name=name)
    return IntParam(value, values=tuple(sorted(set(int(v) for v in allowed))), name=name)


@dataclass(frozen=True, init=False)
class TrainingConfig:
    """Everything MLUpdateTask reads from the model, checked when built.

    ``allowed_batch_sizes``/``allowed_epochs`` accept a set of values (any iterable) or a
    Python ``range`` (``range(1, 101)`` allows 1..100). Defaults: batch size {default} (the app
    cannot change the memory footprint by accident); epochs 1..max(1000, default). They are
    folded into ``batch_size``/``epochs``, which always hold ``IntParam`` (and are kept as
    ``None`` fields only so the constructor's keywords stay the fields' names).
    """

    loss: Loss
    optimizer: Optimizer
    batch_size: IntParam
    epochs: IntParam
    allowed_batch_sizes: None
    allowed_epochs: None
    shuffle: bool
    seed: Optional[int]

    def __init__(
        self,
        loss: Loss,
        optimizer: Optional[Optimizer] = None,
        batch_size: Union[int, IntParam] = DEFAULT_BATCH_SIZE,
        epochs: Union[int, IntParam] = DEFAULT_EPOCHS,
        allowed_batch_sizes: Optional[Union[Sequence[int], range]] = None,
        allowed_epochs: Optional[Union[Sequence[int], range]] = None,
        shuffle: bool = True,
        seed: Optional[int] = None,
    ) -> None:
        optimizer = SGD() if optimizer is None else optimizer
        if not isinstance(loss, Loss):
            raise ConfigError("loss must be a Loss(kind, input)")
        if not isinstance(optimizer, (SGD, Adam)):
            raise ConfigError("optimizer must be SGD(...) or Adam(...)")
        values = {
            "loss": loss,
            "optimizer": optimizer,
            "batch_size": _int_param(batch_size, "batch size", allowed_batch_sizes, lambda v: (v,)),
            "epochs": _int_param(
                epochs, "epochs", allowed_epochs, lambda v: range(1, max(1000, v) + 1)
            ),
            "allowed_batch_sizes": None,
            "allowed_epochs": None,
            "shuffle": shuffle,
            "seed": seed,
        }
        if seed is not None and (isinstance(seed, bool) or int(seed) < 0):
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    # -- writing -------------------------------------------------------------------------

    def write_update_params(self, nn) -> None:
        """Replace ``nn.updateParams`` with this configuration."""
        params = nn.updateParams
        params.Clear()
        loss = params.lossLayers.add()
        loss.name = self.loss.name
        layer = (
            loss.categoricalCrossEntropyLossLayer
            if self.loss.kind == "cce"
            else loss.meanSquaredErrorLossLayer
        )
        layer.input, layer.target = self.loss.input, self.loss.target
        opt = self.optimizer
        if isinstance(opt, SGD):
            opt.learning_rate.write(params.optimizer.sgdOptimizer.learningRate)
            opt.momentum.write(params.optimizer.sgdOptimizer.momentum)
            self.batch_size.write(params.optimizer.sgdOptimizer.miniBatchSize)
        else:
            adam = params.optimizer.adamOptimizer
            opt.learning_rate.write(adam.learningRate)
            opt.beta1.write(adam.beta1)
            opt.beta2.write(adam.beta2)
            opt.eps.write(adam.eps)
            self.batch_size.write(adam.miniBatchSize)
        self.epochs.write(params.epochs)
        params.shuffle.defaultValue = bool(self.shuffle)
        if self.seed is not None:
            params.seed.defaultValue = int(self.seed)
            params.seed.range.minValue, params.seed.range.maxValue = 0, 2**31 - 1

    # -- reading -------------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: Spec) -> TrainingConfig:
        """Read the configuration back from an updatable spec (raises ConfigError if absent)."""
        nn = neural_network(spec)
        if nn is None or not nn.HasField("updateParams") or not nn.updateParams.lossLayers:
            raise ConfigError("the model has no update parameters (it is not updatable)")
        params = nn.updateParams
        loss_msg = params.lossLayers[0]
        kind = loss_msg.WhichOneof("LossLayerType")
        body = getattr(loss_msg, kind or "categoricalCrossEntropyLossLayer")
        loss = Loss(
            {"categoricalCrossEntropyLossLayer": "cce", "meanSquaredErrorLossLayer": "mse"}.get(
                kind or "", str(kind)
            ),
            body.input,
            body.target,
            loss_msg.name,
        )
        which = params.optimizer.WhichOneof("OptimizerType")
        if which == "sgdOptimizer":
            sgd = params.optimizer.sgdOptimizer
            optimizer: Optimizer = SGD(
                FloatParam.read(sgd.learningRate, "learning rate"),
                FloatParam.read(sgd.momentum, "momentum"),
            )
            batch = sgd.miniBatchSize
        elif which == "adamOptimizer":
            adam = params.optimizer.adamOptimizer
            optimizer = Adam(
                FloatParam.read(adam.learningRate, "learning rate"),
                FloatParam.read(adam.beta1, "beta1"),
                FloatParam.read(adam.beta2, "beta2"),
                FloatParam.read(adam.eps, "eps"),
            )
            batch = adam.miniBatchSize
        else:
            raise ConfigError("the model's update parameters have no optimizer")
        return cls(
            loss,
            optimizer,
            IntParam.read(batch, "batch size"),
            IntParam.read(params.epochs, "epochs"),
            # no shuffle parameter: Core ML does not shuffle (runtime.assumptions)
            shuffle=params.shuffle.defaultValue if params.HasField("shuffle") else False,
            seed=params.seed.defaultValue if params.HasField("seed") else None,
        )

    def summary_lines(self) -> list[str]:
        opt = self.optimizer
        lines = [
            f"loss: {self.loss.kind} (layer {self.loss.name!r}, input {self.loss.input!r}, "
            f"target {self.loss.target!r})"
        ]
        if isinstance(opt, SGD):
            lines.append(
                f"optimizer: sgd  learning rate {opt.learning_rate.describe()}  "
                f"momentum {opt.momentum.describe()}"
            )
        else:
            lines.append(
                f"optimizer: adam  learning rate {opt.learning_rate.describe()}  "
                f"beta1 {opt.beta1.describe()}  beta2 {opt.beta2.describe()}  "
                f"eps {opt.eps.describe()}"
            )
        lines.append(f"batch size: {self.batch_size.describe()}")
        lines.append(f"epochs: {self.epochs.describe()}")
        lines.append(
            f"shuffle: {self.shuffle}" + (f"  seed: {self.seed}" if self.seed is not None else "")
        )
        return lines


# -- training inputs ---------------------------------------------------------------------


def write_training_inputs(spec: Spec, loss: Loss) -> None:
    """Describe what MLUpdateTask must be given: the prediction inputs plus the target.

    For a classifier whose CCE reads the predicted probabilities, the target is the
    ``predictedFeatureName`` output, typed like it (String or Int64 labels); otherwise it is
    the loss layer's target: a class-index array (CCE) or an array shaped like the loss input
    (MSE).
    """
    description = spec.description
    del description.trainingInput[:]
    description.trainingInput.extend(description.input)
    target = description.trainingInput.add()
    label_output = _classifier_label_output(spec, loss)
    if label_output is not None:
        target.CopyFrom(label_output)
        target.shortDescription = "True label"
        return
    target.name = loss.target
    array = target.type.multiArrayType
    array.dataType = (
        FeatureTypes_pb2.ArrayFeatureType.INT32
        if loss.kind == "cce"
        else FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    )
    if loss.kind == "cce":
        array.shape.append(1)
        target.shortDescription = "True class index"
    else:
        array.shape.extend(_blob_shape(spec, loss.input))
        target.shortDescription = f"Target values for {loss.input}"


def _classifier_label_output(spec: Spec, loss: Loss):
    if spec.WhichOneof("Type") != "neuralNetworkClassifier" or loss.kind != "cce":
        return None
    description = spec.description
    probs = description.predictedProbabilitiesName or _last_layer_output(spec)
    if loss.input != probs:
        return None
    for output in description.output:
        if output.name == description.predictedFeatureName:
            return output
    return None


def _last_layer_output(spec: Spec) -> str:
    layers = spec.neuralNetworkClassifier.layers
    return layers[-1].output[0] if layers else ""


def _blob_shape(spec: Spec, blob: str) -> list[int]:
    """Shape of ``blob`` when it is a model output with a known shape, else a flat [1]."""
    for output in spec.description.output:
        if output.name == blob and output.type.WhichOneof("Type") == "multiArrayType":
            shape = list(output.type.multiArrayType.shape)
            if shape:
                return shape
    nn = neural_network(spec)
    for layer in nn.layers if nn is not None else []:
        if blob in layer.output and layer.WhichOneof("layer") == "innerProduct":
            return [int(layer.innerProduct.outputChannels)]
    return [1]


def apply_training_config(spec: Spec, config: TrainingConfig) -> None:
    """Write update parameters and training inputs, and mark the model updatable (spec v4+)."""
    nn = neural_network(spec)
    if nn is None:
        raise ConfigError(
            f"only NeuralNetwork models carry update parameters, got {spec.WhichOneof('Type')!r}"
        )
    config.write_update_params(nn)
    write_training_inputs(spec, config.loss)
    spec.isUpdatable = True
    spec.specificationVersion = max(spec.specificationVersion, 4)


__all__ = [
    "IntParam",
    "FloatParam",
    "SGD",
    "Adam",
    "Loss",
    "TrainingConfig",
    "apply_training_config",
    "write_training_inputs",
    "Optimizer",
    "NeuralNetwork_pb2",
    "Model_pb2",
]
