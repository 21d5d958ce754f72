"""The coremltools fallback for torch: the ``nn.Sequential`` children before the first one
that trains are converted by ``ct.convert`` (traced on one example), the rest is translated
by our frontend and reads the backbone's ``FEATURES``. See ``common/coremltools.py``."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Optional

from ...compose import Backbone
from ...errors import ConfigError, UnsupportedError, first_line
from ..common.coremltools import FEATURES, convert_with_coremltools, single_input
from .capture import as_example_inputs
from .graph import torch_to_graph
from .training import trainable_parameters


def split_sequential(module: Any, trains: set[str], reason: str) -> tuple[Any, Any]:
    """(frozen prefix, rest) of an ``nn.Sequential``, cut before the first child holding a
    parameter that trains. Slices keep the children's names, so parameter names, the
    optimizer's parameters and ``trainable=[...]`` still refer to the same layers."""
    import torch

    if type(module) is not torch.nn.Sequential:  # a subclass may run its children otherwise
        raise UnsupportedError(
            f"{reason}; converting the frozen backbone with coremltools needs "
            f"the model as an nn.Sequential (backbone children first), got a "
            f"{type(module).__name__}"
        )
    names = [name for name, _ in module.named_children()]
    index = next(
        (i for i, name in enumerate(names) if any(p.startswith(name + ".") for p in trains)), None
    )
    if index is None:
        raise ConfigError("no child of the nn.Sequential trains; there is no head to update")
    if index == 0:
        raise ConfigError(
            f"child {names[0]!r}, the first of the nn.Sequential, trains, so there "
            "is no frozen backbone to convert; export one network"
        )
    return module[:index], module[index:]


def torch_backbone(
    prefix: Any, example_inputs: Any, input_name: str, reason: str
) -> tuple[Backbone, Any]:
    """Convert a frozen torch module with coremltools (traced on one example, without the
    batch axis): the backbone and its output on ``example_inputs`` (the head's example)."""
    import torch

    (example,) = single_input(as_example_inputs(example_inputs), "torch backbone")
    was_training = prefix.training
    prefix.eval()
    try:
        per_example = torch.nn.Sequential(
            torch.nn.Unflatten(0, (1, example.shape[1])), prefix, torch.nn.Flatten(0, 1)
        )
        with torch.no_grad():
            features = prefix(example)
            try:
                traced = torch.jit.trace(per_example, example[0])
            except Exception as exc:
                raise UnsupportedError(
                    f"torch.jit.trace could not trace the frozen backbone "
                    f"({reason}): {first_line(exc)}"
                ) from exc
    finally:
        prefix.train(was_training)
    backbone = convert_with_coremltools(
        traced, "pytorch", tuple(example.shape[1:]), input_name, reason
    )
    return backbone, features


def torch_head(
    module: Any,
    example_inputs: Any,
    *,
    optimizer: Any,
    trainable: Any,
    image_input: Optional[dict],
    input_names: Optional[Sequence[str]],
    refusals: Any,
    reason: str,
) -> tuple[Any, Backbone]:
    """The coremltools path for torch: the head's ``Translation`` (reading ``FEATURES``) and
    the converted backbone. The head is cut where the parameters that train begin."""
    if image_input is not None:
        raise ConfigError(
            "image_input is not supported with a backbone converted by coremltools "
            "yet; feed a MultiArray, or make the backbone translatable"
        )
    prefix, head = split_sequential(
        module, trainable_parameters(module, optimizer, trainable), reason
    )
    input_name = (
        input_names[0] if input_names else next(iter(inspect.signature(module.forward).parameters))
    )
    backbone, features = torch_backbone(prefix, example_inputs, input_name, reason)
    state = torch_to_graph(
        head,
        features,
        optimizer=optimizer,
        trainable=trainable,
        input_names=[FEATURES],
        refusals=refusals,
    )
    return state, backbone
