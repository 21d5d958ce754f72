"""Make an existing NeuralNetwork ``.mlmodel`` updatable (the seed article's ``make_nn.py``
flow in one call): choose layers, set loss/optimizer/epochs/ranges, optionally grow the
classifier head with placeholder classes and re-initialize the chosen layers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from .coreml_rules import UPDATABLE_LAYER_TYPES as COREML_UPDATABLE_TYPES
from .errors import ConfigError, NotUpdatableError
from .options import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, as_list
from .rewrites import classic_softmax_for_loss, matmul_as_inner_product
from .spec_io import ML_PROGRAM_FIX, Spec, SpecLike, load_spec, neural_network, save_spec
from .training import SGD, Adam, Loss, Optimizer, TrainingConfig, apply_training_config
from .validator import validate

PathLike = Union[str, os.PathLike]

#: Layer types make-updatable marks: Core ML's updatable types (coreml_rules) whose weights
#: it knows how to mark. An updatable uniDirectionalLSTM is accepted only by validators from
#: coremltools 5.0b1 on, and coremltools' builder will not mark one either, so it is left out.
UPDATABLE_LAYER_TYPES = tuple(
    kind for kind in COREML_UPDATABLE_TYPES if kind != "uniDirectionalLSTM"
)


def make_updatable(
    model: SpecLike,
    output: Optional[PathLike] = None,
    *,
    layers: Sequence[str],
    loss: str = "cce",
    loss_input: Optional[str] = None,
    optimizer: Union[str, Optimizer] = "sgd",
    lr: Optional[float] = None,
    momentum: Optional[float] = None,
    beta1: Optional[float] = None,
    beta2: Optional[float] = None,
    eps: Optional[float] = None,
    lr_range: Optional[tuple[float, float]] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allowed_batch_sizes: Optional[Sequence[int]] = None,
    epochs: int = DEFAULT_EPOCHS,
    allowed_epochs: Optional[Sequence[int]] = None,
    shuffle: bool = True,
    seed: Optional[int] = None,
    expand_classes: Optional[int] = None,
    label_prefix: str = "user",
    reinit: bool = False,
    reinit_seed: int = 0,
    changes: Optional[list[str]] = None,
    compress_frozen: Optional[str] = None,
) -> Spec:
    """Return an updatable copy of ``model``; write it to ``output`` (atomically) if given.

    ``compress_frozen`` (``'int8'``, ``'lut8'``, ``'lut4'``) stores the frozen layers'
    weights quantized (``compression``; to measure the effect, call
    ``compression.compress_and_measure`` on the uncompressed result instead).
    Raises ``NotUpdatableError`` naming the layer when a chosen layer cannot be updated or
    cannot be reached by backpropagation (e.g. a concat between it and the loss).
    Models from ``ct.convert`` are rewritten where Core ML needs it (``rewrites``): a chosen
    ``batchedMatmul`` dense layer becomes an ``innerProduct``, and with a cross-entropy loss
    a final ``softmaxND`` becomes a classic softmax. These edits are appended to ``changes``
    when a list is given, one sentence each.
    """
    source = load_spec(model)
    spec = type(source)()
    spec.CopyFrom(source)
    nn = neural_network(spec)
    if nn is None:
        where = f"{model}: " if isinstance(model, (str, os.PathLike)) else ""
        raise NotUpdatableError(
            f"{where}the model is a {spec.WhichOneof('Type')!r}; " + ML_PROGRAM_FIX
        )
    layers = as_list(layers, "layers") or []  # "fc" is one layer, not two named "f" and "c"
    if not layers:
        raise ConfigError("choose at least one layer to train (--layers NAME ...)")
    names = {layer.name for layer in nn.layers}
    done = [line for name in layers if name in names for line in matmul_as_inner_product(nn, name)]
    by_name = {layer.name: layer for layer in nn.layers}
    for name in layers:
        _updatable_layer(by_name, name)
    if loss == "cce":
        done += classic_softmax_for_loss(spec, nn, loss_input, layers)
        by_name = {layer.name: layer for layer in nn.layers}  # the layer list may be rebuilt
    if changes is not None:
        changes.extend(done)
    chosen = [_updatable_layer(by_name, name) for name in layers]
    if expand_classes is not None:
        _expand_head(spec, nn, expand_classes, label_prefix, reinit, reinit_seed)
    for layer in chosen:
        _to_fp32(layer)
        if reinit:
            _reinit(layer, np.random.default_rng(reinit_seed))
    for layer in nn.layers:
        _mark(layer, layer.name in set(layers))
    _name_regressor_output(spec)
    config = TrainingConfig(
        Loss(loss, loss_input or _default_loss_input(spec, nn, loss)),
        _optimizer(optimizer, lr, momentum, beta1, beta2, eps, lr_range),
        batch_size=batch_size,
        allowed_batch_sizes=allowed_batch_sizes,
        epochs=epochs,
        allowed_epochs=allowed_epochs,
        shuffle=shuffle,
        seed=seed,
    )
    apply_training_config(spec, config)
    if compress_frozen is not None:
        from .compression import compress_frozen as compress

        spec = compress(spec, compress_frozen)[0]
    return save_updatable(spec, output, model)


def save_updatable(spec: Spec, output: Optional[PathLike], source: Any = None) -> Spec:
    """Validate ``spec`` and write it to ``output`` (atomically, never over ``source``, when
    both are given); a validator error is a ``NotUpdatableError`` and nothing is written."""
    errors = [f for f in validate(spec) if f.severity == "error"]
    if errors:
        raise NotUpdatableError(f"{errors[0].message} {errors[0].fix}")
    if output is not None:
        save_spec(
            spec, output, not_same_as=source if isinstance(source, (str, os.PathLike)) else None
        )
    return spec


def _name_regressor_output(spec: Spec) -> None:
    """Core ML refuses a regressor without ``description.predictedFeatureName`` ("Specification
    is missing regressor predictedFeatureName."), and coremltools' builder in regressor mode
    does not set it: name the output when there is exactly one."""
    outputs = spec.description.output
    if (
        spec.WhichOneof("Type") == "neuralNetworkRegressor"
        and not spec.description.predictedFeatureName
        and len(outputs) == 1
    ):
        spec.description.predictedFeatureName = outputs[0].name


def _updatable_layer(by_name: dict, name: str):
    layer = by_name.get(name)
    if layer is None:
        raise NotUpdatableError(
            f"no layer named {name!r}; layers are: {', '.join(list(by_name)[:20])}"
        )
    kind = layer.WhichOneof("layer")
    if kind not in UPDATABLE_LAYER_TYPES:
        raise NotUpdatableError(
            f"layer {name!r} has type {kind}; only convolution and innerProduct "
            "layers can be updated on device"
        )
    return layer


def _mark(layer, updatable: bool) -> None:
    layer.isUpdatable = updatable
    kind = layer.WhichOneof("layer")
    if kind in UPDATABLE_LAYER_TYPES:
        body = getattr(layer, kind)
        body.weights.isUpdatable = updatable
        if body.hasBias:
            body.bias.isUpdatable = updatable


def _to_fp32(layer) -> None:
    """Updatable weights must be fp32 ``floatValue``: widen fp16/raw fp32, refuse quantized."""
    from .runtime.weights import decode_weights  # the one reader of WeightParams storage

    body = getattr(layer, layer.WhichOneof("layer"))
    fields = ("weights", "bias") if body.hasBias else ("weights",)
    for field in fields:
        params = getattr(body, field)
        if params.HasField("quantization"):
            raise NotUpdatableError(
                f"layer {layer.name!r} has quantized weights, which cannot be "
                "updated on device; start from an fp32 model"
            )
        if len(params.float16Value) or len(params.rawValue):
            values = decode_weights(params, f"layer {layer.name!r} {field}", layer, field)
            params.Clear()
            params.floatValue.extend(values.tolist())


def _fan_in(layer) -> int:
    kind = layer.WhichOneof("layer")
    if kind == "innerProduct":
        return int(layer.innerProduct.inputChannels)
    conv = layer.convolution
    return int(conv.kernelChannels) * int(np.prod(list(conv.kernelSize) or [3, 3]))


def _reinit(layer, rng: np.random.Generator) -> None:
    """He (Kaiming) uniform weights, bound sqrt(6 / fan_in), and zero bias: the usual start
    for a ReLU network's head, seeded so the file is reproducible."""
    body = getattr(layer, layer.WhichOneof("layer"))
    bound = float(np.sqrt(6.0 / max(_fan_in(layer), 1)))
    count = len(body.weights.floatValue)
    del body.weights.floatValue[:]
    body.weights.floatValue.extend(rng.uniform(-bound, bound, count).astype(np.float32).tolist())
    if body.hasBias:
        count = len(body.bias.floatValue)
        del body.bias.floatValue[:]
        body.bias.floatValue.extend([0.0] * count)


def _softmax_output(spec: Spec, nn) -> Optional[str]:
    probs = spec.description.predictedProbabilitiesName
    for layer in reversed(nn.layers):
        if layer.WhichOneof("layer") == "softmax" and (not probs or probs in layer.output):
            return layer.output[0]
    return None


def _default_loss_input(spec: Spec, nn, loss: str) -> str:
    if loss == "cce":
        found = _softmax_output(spec, nn)
        if found is None:
            raise NotUpdatableError(
                "categorical cross-entropy needs a softmax layer at the end of the "
                "network and none was found; pass --loss-input BLOB or use --loss mse"
            )
        return found
    outputs = [o.name for o in spec.description.output]
    if len(outputs) != 1:
        raise ConfigError(
            f"the model has {len(outputs)} outputs; choose the MSE input with --loss-input"
        )
    return outputs[0]


def _optimizer(name: Union[str, Optimizer], lr, momentum, beta1, beta2, eps, lr_range) -> Optimizer:
    if isinstance(name, (SGD, Adam)):
        return name
    from .training import FloatParam

    range_ = tuple(lr_range) if lr_range is not None else (0.0, 1.0)
    if name == "sgd":
        if any(v is not None for v in (beta1, beta2, eps)):
            raise ConfigError("beta1/beta2/eps belong to Adam; SGD takes --lr and --momentum")
        return SGD(
            FloatParam(0.01 if lr is None else lr, range_, "learning rate"),
            0.0 if momentum is None else momentum,
        )
    if name == "adam":
        if momentum is not None:
            raise ConfigError("--momentum belongs to SGD; Adam takes --beta1/--beta2/--eps")
        return Adam(
            FloatParam(0.001 if lr is None else lr, range_, "learning rate"),
            0.9 if beta1 is None else beta1,
            0.999 if beta2 is None else beta2,
            1e-8 if eps is None else eps,
        )
    raise ConfigError(f"unknown optimizer {name!r}; use 'sgd' or 'adam'")


def _head_before_softmax(nn, softmax_blob: str):
    """The innerProduct/convolution whose output reaches the softmax through layers that keep
    the channel count (activations, flatten, reshape-free paths)."""
    producers = {blob: layer for layer in nn.layers for blob in layer.output}
    layer = producers.get(softmax_blob)
    while layer is not None:
        kind = layer.WhichOneof("layer")
        if kind in UPDATABLE_LAYER_TYPES:
            return layer
        if kind not in ("softmax", "activation", "flatten", "pooling") or len(layer.input) != 1:
            return None
        layer = producers.get(layer.input[0])
    return None


def _expand_head(spec: Spec, nn, total: int, prefix: str, reinit: bool, seed: int) -> None:
    """Grow the classifier to ``total`` classes: new output rows start at zero (or random when
    re-initializing) and get placeholder labels ``user0``, ``user1``, ..."""
    if spec.WhichOneof("Type") != "neuralNetworkClassifier":
        raise ConfigError("--expand-classes needs a neural network classifier")
    softmax = _softmax_output(spec, nn)
    head = _head_before_softmax(nn, softmax) if softmax else None
    if head is None:
        raise NotUpdatableError(
            "cannot find the innerProduct/convolution that feeds the classifier's "
            "softmax, so the head cannot be expanded"
        )
    labels_kind = nn.WhichOneof("ClassLabels")
    labels = getattr(nn, labels_kind).vector
    current = len(labels)
    if total <= current:
        raise ConfigError(f"--expand-classes {total} must exceed the current {current} classes")
    _to_fp32(head)
    body = getattr(head, head.WhichOneof("layer"))
    weights = np.asarray(body.weights.floatValue, dtype=np.float32).reshape(current, -1)
    grown = np.zeros((total, weights.shape[1]), dtype=np.float32)
    grown[:current] = weights
    if reinit:
        bound = float(np.sqrt(6.0 / max(_fan_in(head), 1)))
        grown[current:] = np.random.default_rng(seed).uniform(-bound, bound, grown[current:].shape)
    del body.weights.floatValue[:]
    body.weights.floatValue.extend(grown.ravel().tolist())
    if body.hasBias:
        body.bias.floatValue.extend([0.0] * (total - current))
    body.outputChannels = total
    if labels_kind == "stringClassLabels":
        existing = set(labels)
        new = [f"{prefix}{i}" for i in range(total * 2) if f"{prefix}{i}" not in existing][
            : total - current
        ]
        labels.extend(new)
    else:
        labels.extend(range(max(labels) + 1, max(labels) + 1 + total - current))
