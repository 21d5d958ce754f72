"""The torch side of training: which parameters train, what the loss module computes and
what the optimizer's hyperparameters are, each mapped to Core ML or refused with a reason
(``allow_unsupported=True`` turns option refusals into report warnings, never silent
changes). torch is imported inside the functions that need it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Optional, Union

from ...errors import ConfigError, NotUpdatableError, UnsupportedError
from ...ir import Graph
from ...options import did_you_mean
from ...passes import UPDATABLE_OPS
from ...runtime.assumptions import framework_form_note
from ...training import SGD, Adam, optimizer_named
from ..common.loss import LossPlan
from ..common.refusals import Refusals
from .context import Translation, where

# -- what trains -----------------------------------------------------------------------------


def _named_parameters(model: Any) -> list[tuple[str, Any]]:
    """(name, parameter) pairs of a module or an ExportedProgram, shared ones under every name."""
    import torch

    if isinstance(model, torch.nn.Module):
        return list(model.named_parameters(remove_duplicate=False))
    return list(model.named_parameters())


def trainable_parameters(
    model: Any, optimizer: Any = None, trainable: Optional[Iterable[str]] = None
) -> set[str]:
    """Names of the parameters that train on device.

    ``trainable`` (module or parameter names; a module covers its submodules) wins; else the
    parameters a torch optimizer holds that require grad; else all that require grad.
    """
    named = _named_parameters(model)
    if trainable is not None:
        return _select_by_name(
            named, [trainable] if isinstance(trainable, str) else list(trainable)
        )
    if optimizer is not None and hasattr(optimizer, "param_groups"):
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        names = {name for name, p in named if id(p) in held and p.requires_grad}
        if held and not any(id(p) in held for _, p in named):
            raise ConfigError(
                "the optimizer holds none of the module's parameters; build it "
                "from this module's parameters"
            )
        return names
    return {name for name, p in named if p.requires_grad}


def _select_by_name(named: list[tuple[str, Any]], wanted: list[str]) -> set[str]:
    names = [name for name, _ in named]
    modules = sorted({name.rsplit(".", 1)[0] for name in names if "." in name})
    chosen: set[str] = set()
    for item in wanted:
        hits = {n for n in names if n == item or n.startswith(item + ".")}
        if not hits:
            raise ConfigError(
                f"--trainable (trainable=): no module or parameter named {item!r}"
                + did_you_mean(item, modules + names)
            )
        chosen |= hits
    return chosen


def mark_trainable(state: Translation, names: set[str], refusals: Refusals) -> None:
    """Set ``Node.trainable`` from parameter names, refusing what Core ML cannot train.

    The refusals speak torch (requires_grad, the optimizer) because that is where the user
    decided what trains; ``passes.check_trainable`` stays the framework-neutral backstop.
    """
    uses: dict[str, list[str]] = {}
    for node_name, params in state.node_params.items():
        for fqn in params.values():
            uses.setdefault(fqn, []).append(node_name)
    for node in state.graph.nodes:
        params = state.node_params.get(node.name, {})
        flags = {role: fqn in names for role, fqn in params.items()}
        if not any(flags.values()):
            continue
        if node.name in state.frozen_only:
            refusals.refuse(
                f"{where(state.origin[node.name])} has parameters that train, but "
                f"{state.frozen_only[node.name]}",
                "kept frozen",
                NotUpdatableError,
            )
            continue
        if node.op not in UPDATABLE_OPS:
            refusals.refuse(
                f"{where(state.origin[node.name])} has parameters that train, but Core "
                "ML can only train convolution and linear layers; freeze it "
                "(requires_grad_(False)) or build the optimizer (or trainable=[...]) "
                "from the layers to train",
                "kept frozen",
                NotUpdatableError,
            )
            continue
        _check_weight_and_bias(node.name, flags, refusals)
        _check_untied(node.name, params, uses)
        node.trainable = True
    for fqn in sorted(names & set(state.state_names.values()) - set(uses)):
        refusals.refuse(
            f"parameter {fqn!r} trains in torch but is used as a constant operand "
            "(not as a layer weight); Core ML can only train convolution and linear "
            "weights: freeze it (requires_grad_(False))",
            "kept frozen",
            NotUpdatableError,
        )


def _check_weight_and_bias(layer: str, flags: dict[str, bool], refusals: Refusals) -> None:
    if all(flags.values()):
        return
    trains = [role for role, on in flags.items() if on]
    frozen = [role for role, on in flags.items() if not on]
    refusals.refuse(
        f"layer {layer!r}: its {', '.join(trains)} trains but its {', '.join(frozen)} "
        "does not; Core ML updates a layer's weight and bias together: train both or "
        "neither",
        "both train",
        NotUpdatableError,
    )


def _check_untied(layer: str, params: dict[str, str], uses: dict[str, list[str]]) -> None:
    for fqn in params.values():
        others = [name for name in uses[fqn] if name != layer]
        if others:
            raise NotUpdatableError(
                f"layer {layer!r}: parameter {fqn!r} is shared with "
                f"{', '.join(map(repr, others))}; Core ML cannot train tied "
                "weights: untie or freeze them"
            )


# -- loss ----------------------------------------------------------------------------------


def map_loss(loss: Any, state: Translation, refusals: Refusals) -> LossPlan:
    """Map ``nn.CrossEntropyLoss`` / ``nn.NLLLoss`` / ``nn.MSELoss`` (or their names)."""
    import torch.nn as nn

    outputs = state.graph.outputs
    if len(outputs) != 1:
        raise UnsupportedError(
            f"the model has {len(outputs)} outputs; a trainable Core ML model "
            "has one loss: return a single tensor"
        )
    output = outputs[0]
    ends_log_softmax = output in state.log_softmax
    ends_softmax = not ends_log_softmax and _producer_op(state.graph, output) == "softmax"
    # "cce" is the word the CLI and the other frontends use for cross-entropy
    kind = {
        "cross_entropy": nn.CrossEntropyLoss,
        "cce": nn.CrossEntropyLoss,
        "nll": nn.NLLLoss,
        "mse": nn.MSELoss,
    }
    if isinstance(loss, str):
        if loss not in kind:
            raise ConfigError(
                f"loss {loss!r}: use nn.CrossEntropyLoss(), nn.NLLLoss(), "
                f"nn.MSELoss() or one of {', '.join(map(repr, kind))}"
            )
        loss = kind[loss]()
    _check_reduction(loss, refusals)
    if isinstance(loss, nn.MSELoss):
        return LossPlan("mse", False, output, type(loss).__name__)
    if isinstance(loss, (nn.CrossEntropyLoss, nn.NLLLoss)):
        _check_class_loss_options(loss, refusals)
        if isinstance(loss, nn.NLLLoss) and not ends_log_softmax:
            raise UnsupportedError(
                "NLLLoss reads log-probabilities, but the model does not end "
                "with log_softmax; end it with log_softmax or use "
                "nn.CrossEntropyLoss on logits"
            )
        if ends_softmax:
            refusals.refuse(
                "CrossEntropyLoss on a model that already ends with softmax applies "
                "softmax twice in torch, while Core ML's cross-entropy reads the "
                "probabilities once; remove the final softmax (train on logits)",
                "Core ML trains on the single softmax",
            )
        if ends_log_softmax:
            state.graph.notes.append(
                f"log_softmax output {output!r} exported as softmax: the model "
                "outputs probabilities; cross-entropy on them trains like "
                f"{type(loss).__name__} on the log-probabilities"
            )
        return LossPlan("cce", not (ends_log_softmax or ends_softmax), output, type(loss).__name__)
    raise UnsupportedError(
        f"loss {type(loss).__name__}: Core ML trains with categorical "
        "cross-entropy (nn.CrossEntropyLoss, nn.NLLLoss after log_softmax) or "
        "mean squared error (nn.MSELoss) only"
    )


def _producer_op(graph: Graph, tensor: str) -> str:
    node = graph.producer(tensor)
    return node.op if node is not None else ""


def _check_reduction(loss: Any, refusals: Refusals) -> None:
    if getattr(loss, "reduction", "mean") != "mean":
        refusals.refuse(
            f"{type(loss).__name__}(reduction={loss.reduction!r}): Core ML averages "
            "the loss over the mini-batch; use reduction='mean'",
            "mean is used",
        )


def _check_class_loss_options(loss: Any, refusals: Refusals) -> None:
    name = type(loss).__name__
    if getattr(loss, "weight", None) is not None:
        refusals.refuse(
            f"{name}(weight=...): Core ML has no class weights; drop them or "
            "rebalance the training data",
            "class weights ignored",
        )
    if getattr(loss, "ignore_index", -100) != -100:
        refusals.refuse(
            f"{name}(ignore_index={loss.ignore_index}): Core ML trains on every "
            "example; filter those examples out instead",
            "no index is ignored",
        )
    if getattr(loss, "label_smoothing", 0.0):
        refusals.refuse(
            f"{name}(label_smoothing={loss.label_smoothing}): Core ML's "
            "cross-entropy has no label smoothing",
            "no smoothing",
        )


# -- optimizer -----------------------------------------------------------------------------


def map_optimizer(optimizer: Any, refusals: Refusals) -> Union[SGD, Adam]:
    """Core ML's SGD/Adam for a torch optimizer (or pass one of ours through; None -> SGD())."""
    import torch

    if optimizer is None:
        return SGD()
    if isinstance(optimizer, str):
        return optimizer_named(optimizer)
    if isinstance(optimizer, (SGD, Adam)):
        return optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(
            f"optimizer must be a torch.optim.SGD/Adam, updatable_coreml "
            f"SGD/Adam or 'sgd'/'adam', got {type(optimizer).__name__}"
        )
    group = _single_group(optimizer, refusals)
    name = type(optimizer).__name__
    if group.get("maximize"):
        refusals.refuse(f"{name}(maximize=True): Core ML minimizes the loss", "minimizes")
    if float(group.get("weight_decay", 0.0)):
        refusals.refuse(
            f"{name}(weight_decay={group['weight_decay']}): Core ML has no weight "
            "decay; set it to 0 (the model may overfit more on device)",
            "no weight decay on device",
        )
    lr = float(group["lr"])
    if isinstance(optimizer, torch.optim.SGD):
        if float(group.get("dampening", 0.0)):
            refusals.refuse(
                f"SGD(dampening={group['dampening']}): Core ML's momentum has no dampening",
                "no dampening",
            )
        if group.get("nesterov"):
            refusals.refuse(
                "SGD(nesterov=True): Core ML's momentum is classical, not Nesterov",
                "classical momentum",
            )
        return SGD(lr, float(group.get("momentum", 0.0)))
    if isinstance(optimizer, torch.optim.Adam):
        if group.get("amsgrad"):
            refusals.refuse(f"{name}(amsgrad=True): Core ML's Adam has no AMSGrad", "plain Adam")
        beta1, beta2 = (float(b) for b in group["betas"])
        return Adam(lr, beta1, beta2, float(group["eps"]))
    raise UnsupportedError(
        f"optimizer {name}: Core ML trains with SGD (optionally with momentum) or Adam only"
    )


_HYPERPARAMETERS = (
    "lr",
    "momentum",
    "dampening",
    "weight_decay",
    "nesterov",
    "betas",
    "eps",
    "amsgrad",
    "maximize",
    "decoupled_weight_decay",
)


def _single_group(optimizer: Any, refusals: Refusals) -> dict:
    """The hyperparameters, refusing param groups that differ (Core ML has one optimizer)."""
    first = optimizer.param_groups[0]
    for index, group in enumerate(optimizer.param_groups[1:], start=1):
        for key in _HYPERPARAMETERS:
            if key in first and _differs(group.get(key), first.get(key)):
                refusals.refuse(
                    f"{type(optimizer).__name__} param group {index} has {key}="
                    f"{group.get(key)} but group 0 has {first.get(key)}; Core ML "
                    "uses one set of hyperparameters for every layer",
                    "group 0's values are used",
                )
                break
    return first


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return any(_differs(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return not math.isclose(float(a), float(b), rel_tol=0, abs_tol=0)
    return a != b


def optimizer_assumptions(source: Any, optimizer: Union[SGD, Adam]) -> list[str]:
    """What the report should say about how the optimizer was chosen and mapped."""
    if source is None:
        return ["no optimizer given: Core ML SGD with learning rate 0.01, no momentum"]
    if isinstance(source, (SGD, Adam)):
        return []  # the caller chose Core ML's parameters directly: no source form to name
    momentum = optimizer.momentum.default if isinstance(optimizer, SGD) else None
    note = framework_form_note("torch", "sgd" if isinstance(optimizer, SGD) else "adam", momentum)
    return [note] if note else []
