"""The Keras side of training: the compiled loss and optimizer mapped to Core ML (or
refused with a reason), and the ``fit`` arguments a callback cannot see otherwise."""

from __future__ import annotations

import inspect

from ...errors import ConfigError, UnsupportedError
from ...runtime.assumptions import framework_form_note
from ...training import SGD, Adam, Optimizer
from ..common.loss import LossPlan
from .context import Context, _keras

_LOSS_ALIASES = {
    "categorical_crossentropy": "categorical_crossentropy",
    "cce": "categorical_crossentropy",
    "categoricalcrossentropy": "categorical_crossentropy",
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    "sparsecategoricalcrossentropy": "sparse_categorical_crossentropy",
    "mse": "mean_squared_error",
    "mean_squared_error": "mean_squared_error",
    "meansquarederror": "mean_squared_error",
}


def map_loss(loss, ctx: Context) -> LossPlan:
    """A Keras loss (string, function or ``keras.losses.Loss``) -> Core ML loss kind."""
    keras = _keras()
    if loss is None:
        raise ConfigError(
            "the model has no loss: compile it, or pass loss='categorical_crossentropy', "
            "'sparse_categorical_crossentropy' or 'mse'"
        )
    if isinstance(loss, (list, tuple, dict)):
        if len(loss) != 1:
            raise UnsupportedError(
                "several losses (one per output) cannot be exported; Core ML "
                "trains exactly one loss on one output"
            )
        loss = next(iter(loss.values())) if isinstance(loss, dict) else loss[0]
    config: dict = {}
    if isinstance(loss, keras.losses.Loss) and type(loss).__module__.startswith("keras."):
        config = loss.get_config()
        name = type(loss).__name__
        if name == "LossFunctionWrapper":  # keras wrapping one of its loss functions
            name = getattr(loss.fn, "__name__", name)
    elif isinstance(loss, str):
        name = loss
    elif callable(loss) and getattr(loss, "__module__", "").startswith("keras."):
        name = loss.__name__
    else:
        raise UnsupportedError(
            f"custom loss {getattr(loss, '__name__', loss)!r} cannot be carried "
            "to Core ML, which trains only categorical cross-entropy and mean "
            "squared error; compile with one of those"
        )
    key = _LOSS_ALIASES.get(name.lower())
    if key is None:
        raise UnsupportedError(
            f"loss {name!r} is not supported by Core ML on device (it trains "
            "categorical cross-entropy and mean squared error only)"
            + (
                "; binary cross-entropy: use a 2-unit softmax output with "
                "sparse_categorical_crossentropy"
                if "binary" in name.lower()
                else ""
            )
        )
    if config.get("label_smoothing"):
        ctx.refuse(
            f"loss {name}: label_smoothing={config['label_smoothing']} cannot be carried to "
            "Core ML; compile without it"
        )
    if config.get("axis", -1) != -1:
        raise UnsupportedError(
            f"loss {name}: axis={config['axis']}; only the last axis is supported"
        )
    if config.get("ignore_class") is not None:
        ctx.refuse(f"loss {name}: ignore_class={config['ignore_class']} has no Core ML equivalent")
    reduction = config.get("reduction", "sum_over_batch_size")
    if reduction != "sum_over_batch_size":
        ctx.refuse(
            f"loss {name}: reduction={reduction!r}; Core ML averages over the mini-batch "
            "(reduction='sum_over_batch_size')"
        )
    kind = "mse" if key == "mean_squared_error" else "cce"
    return LossPlan(kind, bool(config.get("from_logits", False)), source_name=key)


def map_optimizer(optimizer, ctx: Context) -> tuple[Optimizer, list[str]]:
    """A Keras optimizer -> Core ML SGD/Adam, plus notes for the report."""
    if isinstance(optimizer, (SGD, Adam)):
        return optimizer, []
    if optimizer is None:
        raise ConfigError(
            "the model has no optimizer: compile it, or pass optimizer=SGD(...)/Adam(...)"
        )
    keras = _keras()
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    kind = type(optimizer).__name__
    if not isinstance(optimizer, keras.optimizers.Optimizer) or kind not in ("SGD", "Adam"):
        raise UnsupportedError(
            f"optimizer {kind!r} is not supported: Core ML trains with SGD (with momentum) or Adam"
        )
    config = optimizer.get_config()
    name = f"keras.optimizers.{kind}"
    notes = []
    if config.get("weight_decay"):
        ctx.refuse(
            f"{name}: weight_decay={config['weight_decay']} cannot be carried (Core ML has "
            "no weight decay); compile without it"
        )
    if kind == "SGD" and config.get("nesterov"):
        ctx.refuse(f"{name}: nesterov=True cannot be carried (Core ML's SGD uses plain momentum)")
    if kind == "Adam" and config.get("amsgrad"):
        ctx.refuse(f"{name}: amsgrad=True cannot be carried (Core ML's Adam has no AMSGrad)")
    for clip in ("clipnorm", "clipvalue", "global_clipnorm"):
        if config.get(clip) is not None:
            ctx.warnings.append(
                f"{name}: {clip}={config[clip]} is not carried (Core ML has no gradient clipping)"
            )
    if config.get("use_ema"):
        ctx.warnings.append(f"{name}: use_ema is not carried (Core ML keeps no moving average)")
    if (config.get("gradient_accumulation_steps") or 1) > 1:
        ctx.refuse(f"{name}: gradient_accumulation_steps has no Core ML equivalent")
    learning_rate = float(_keras().ops.convert_to_numpy(optimizer.learning_rate))
    if isinstance(config.get("learning_rate"), dict):
        notes.append(
            f"the learning-rate schedule became its value at export time, "
            f"{learning_rate:g} (Core ML uses a constant rate; the app may change it "
            "between epochs)"
        )
    if kind == "SGD":
        momentum = float(config.get("momentum", 0.0))
        if momentum:
            notes.append(framework_form_note("keras", "sgd", momentum))
        return SGD(learning_rate, momentum), notes
    notes.append(framework_form_note("keras", "adam"))
    return Adam(
        learning_rate, float(config["beta_1"]), float(config["beta_2"]), float(config["epsilon"])
    ), notes


def fit_arguments(model) -> dict:
    """``batch_size`` and ``class_weight`` of the ``fit`` call running ``model``.

    Keras does not pass them to callbacks; they are read from the ``fit`` frame on the
    stack (its data adapter knows the batch size even for datasets). Empty when not found.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            local = frame.f_locals
            if frame.f_code.co_name == "fit" and local.get("self") is model:
                adapter = getattr(local.get("epoch_iterator"), "data_adapter", None)
                batch_size = getattr(adapter, "batch_size", None) or local.get("batch_size")
                return {"batch_size": batch_size, "class_weight": local.get("class_weight")}
            frame = frame.f_back
        return {}
    finally:
        del frame


def _non_unit_loss_weights(model) -> bool:
    weights = getattr(getattr(model, "_compile_loss", None), "_user_loss_weights", None)
    if weights is None:
        return False
    values = (
        weights.values()
        if isinstance(weights, dict)
        else weights
        if isinstance(weights, (list, tuple))
        else [weights]
    )
    return any(float(v) != 1.0 for v in values)
