"""The coremltools fallback for torch: the frozen part of any module is converted by
``ct.convert`` (traced on one example), the rest is translated by our frontend and reads the
backbone's ``FEATURES``. See ``common/coremltools.py``.

The cut is made in the graph ``torch.export`` captures (the one our frontend translates), not
in the module tree, so a custom ``forward`` (``torch.flatten`` between ``features`` and
``classifier``, a ResNet's top level, shape checks) splits as well as an ``nn.Sequential``:
the *head* is every op that depends on a parameter that trains, the *backbone* is what
computes the one tensor the head reads from the rest. Both halves are rebuilt as
``torch.fx`` modules over the captured aten ops, which keep the source's module paths, so the
head's Core ML layers have the same names as in a single-network export.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional

from ...compose import Backbone
from ...errors import ConfigError, UnsupportedError, first_line
from ..common.coremltools import (
    FEATURES,
    backbone_image,
    convert_with_coremltools,
    single_input,
)
from .capture import as_example_inputs, capture
from .context import layer_name
from .graph import torch_to_graph
from .training import trainable_parameters


def _closure(start: Iterable[Any], step: Any) -> set[Any]:
    """Every fx node reachable from ``start`` by ``step(node)`` (start included)."""
    seen: set[Any] = set()
    todo = list(start)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(step(node))
    return seen


def _describe(node: Any) -> str:
    """A graph value as the user knows it: the model input's name or the layer making it."""
    if node.op == "placeholder":
        return f"the model input {node.name!r}"
    return repr(layer_name(node)) if node.op == "call_function" else repr(node.name)


def find_cut(graph: Any, trains: set[str], reason: str) -> tuple[Any, set[Any], Any]:
    """(the one frozen value the head reads, the head's nodes, its first node that trains)
    of an unlifted program graph.

    The head is every node that depends on a parameter that trains (its ``get_attr``);
    frozen parameters and buffers it reads are copied into it, anything else it reads from
    the frozen part must be one tensor, the backbone's output. Refused otherwise, naming the
    layers, because a pipeline hands the head exactly one feature."""
    nodes = list(graph.nodes)
    seeds = [node for node in nodes if node.op == "get_attr" and node.target in trains]
    if not seeds:
        raise ConfigError(
            "no parameter that trains is used by the model's forward; there is no head to update"
        )
    head = _closure(seeds, lambda node: node.users)
    reads: dict[Any, list[Any]] = {}
    for node in nodes:
        if node in head:
            for value in node.all_input_nodes:
                if value not in head and value.op != "get_attr":
                    reads.setdefault(value, []).append(node)
    first = next((n for n in nodes if n in head and n.op == "call_function"), seeds[0])
    if len(reads) != 1:
        readers = "; ".join(
            f"{_describe(value)} read by "
            + ", ".join(sorted({_describe(n) for n in users if n.op != "output"} or {"the output"}))
            for value, users in reads.items()
        )
        raise UnsupportedError(
            f"{reason}; the layers from {layer_name(first)!r} (the first that trains) on "
            f"read {len(reads)} tensors from the frozen part ({readers}), but a pipeline's "
            "backbone hands its head one tensor; let the frozen part end in one tensor "
            "that the first trainable layer reads, or export one network (pipeline=False)"
        )
    ((cut, _),) = reads.items()
    if cut.op == "placeholder":
        raise ConfigError(
            f"the first trainable layer {layer_name(first)!r} reads the model input, so "
            "there is no frozen backbone to convert; export one network"
        )
    return cut, head, first


def split_program(program: Any, trains: set[str], reason: str) -> tuple[Any, Any, str]:
    """(backbone, head, a report line saying where the cut is) of a captured program, the
    halves as ``torch.fx.GraphModule``s over its aten ops: the backbone takes the model's
    input and returns the cut tensor, the head takes that tensor (as ``FEATURES``) and
    returns the model's outputs."""
    import torch

    try:
        unlifted = program.module()  # parameters and buffers as get_attr nodes, by their paths
    except Exception as exc:
        raise UnsupportedError(
            f"{reason}; the captured program cannot be split for the coremltools backbone: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc
    cut, head, first = find_cut(unlifted.graph, trains, reason)
    note = (
        f"pipeline: the captured torch graph is cut at the output of {_describe(cut)}, the "
        f"tensor the first trainable layer {layer_name(first)!r} reads; what computes it is "
        "the backbone, the rest the updatable head"
    )
    try:
        return (*_rebuild(torch, unlifted, cut, head), note)
    except Exception as exc:
        raise UnsupportedError(
            f"{reason}; the captured graph cannot be cut at {_describe(cut)} for the "
            f"coremltools backbone: {type(exc).__name__}: {first_line(exc)}"
        ) from exc


def _rebuild(torch: Any, unlifted: Any, cut: Any, head: set[Any]) -> tuple[Any, Any]:
    """The two ``GraphModule``s of ``split_program``, sharing ``unlifted``'s tensors."""
    nodes = list(unlifted.graph.nodes)

    backbone_graph = torch.fx.Graph()
    kept = _closure([cut], lambda node: node.all_input_nodes)
    env: dict[Any, Any] = {}
    for node in nodes:
        if node.op == "placeholder" or node in kept:
            env[node] = backbone_graph.node_copy(node, env.__getitem__)
    backbone_graph.output(env[cut])

    head_graph = torch.fx.Graph()
    env = {cut: head_graph.placeholder(FEATURES)}
    for node in nodes:
        if node.op == "output":
            head_graph.output(torch.fx.map_arg(node.args[0], env.__getitem__))
        elif node in head or (node.op == "get_attr" and any(u in head for u in node.users)):
            env[node] = head_graph.node_copy(node, env.__getitem__)
    return (
        torch.fx.GraphModule(unlifted, backbone_graph),
        torch.fx.GraphModule(unlifted, head_graph),
    )


def torch_backbone(
    prefix: Any, example_inputs: Any, input_name: str, reason: str, image_input: Any = None
) -> tuple[Backbone, Any]:
    """Convert a frozen torch module with coremltools (traced on one example, without the
    batch axis; an image input on a batch of one, the shape Core ML's image mapping gives):
    the backbone and its output on ``example_inputs`` (the head's example)."""
    import torch

    (example,) = single_input(as_example_inputs(example_inputs), "torch backbone")
    image = backbone_image(image_input, input_name, example.shape[1:])
    was_training = prefix.training
    prefix.eval()
    try:
        per_example = torch.nn.Sequential(
            torch.nn.Unflatten(0, (1, example.shape[1])), prefix, torch.nn.Flatten(0, 1)
        )
        with torch.no_grad():
            try:
                features = prefix(example)
                traced = (
                    torch.jit.trace(prefix, example[:1])
                    if image is not None
                    else torch.jit.trace(per_example, example[0])
                )
            except Exception as exc:
                raise UnsupportedError(
                    f"torch.jit.trace could not trace the frozen backbone "
                    f"({reason}): {type(exc).__name__}: {first_line(exc)}"
                ) from exc
    finally:
        prefix.train(was_training)
    backbone = convert_with_coremltools(
        traced, "pytorch", tuple(example.shape[1:]), input_name, reason, image
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
    the converted backbone, cut at the tensor that feeds the parameters that train."""
    trains = trainable_parameters(module, optimizer, trainable)
    # One example: the captured shapes (a ``view(x.size(0), -1)``) are then those of the
    # per-example trace coremltools converts.
    (example,) = single_input(as_example_inputs(example_inputs), "torch backbone")
    program = capture(module, example[:1])
    prefix, head, note = split_program(program, trains, reason)
    input_name = input_names[0] if input_names else program.graph_signature.user_inputs[0]
    backbone, features = torch_backbone(prefix, example[:1], input_name, reason, image_input)
    in_head = {name for name, _ in head.named_parameters(remove_duplicate=False)}
    state = torch_to_graph(
        head,
        features,
        trainable=sorted(trains & in_head),
        input_names=[FEATURES],
        refusals=refusals,
    )
    backbone.notes.insert(0, note)
    return state, backbone
