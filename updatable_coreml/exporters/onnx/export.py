"""``export_onnx(model, path, loss=..., optimizer=...)``.

The model is loaded as untrusted input (``load``), translated op by op into the IR
(``translate``), and handed to the shared ``export_graph`` pipeline. ONNX carries no training
configuration worth trusting, so the loss is explicit; which layers train is given by node
name, weight-initializer name or initializer prefix (a torch module path such as
``classifier.1`` appears as ``classifier.1.weight``), or ``"all"``. onnx is imported inside
the functions that need it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional, Union

from ...errors import ConfigError, UnsupportedError
from ...ir import Node
from ...options import ExportOptions, did_you_mean
from ...passes import UPDATABLE_OPS
from .context import OnnxTranslation
from .load import load_onnx
from .translate import translate

if TYPE_CHECKING:
    from ...export import ExportReport

# -- what trains ---------------------------------------------------------------------------


def select_trainable(
    state: OnnxTranslation, trainable: Union[None, str, Iterable[str]]
) -> list[str]:
    """Mark the layers that train; returns what the report should say about the choice.

    ``trainable``: ``"all"`` (every dense/convolution layer), names of nodes, initializers or
    initializer prefixes, or None (only the last dense/convolution layer: fine-tuning a head).
    """
    layers = [node for node in state.graph.nodes if node.op in UPDATABLE_OPS]
    if trainable is None:
        if not layers:
            raise UnsupportedError("the model has no Gemm/MatMul/Conv layer Core ML could train")
        layers[-1].trainable = True
        return [
            f"trainable not given: only the last layer {layers[-1].name!r} trains; name the "
            "layers to train (nodes or initializers) or pass 'all'"
        ]
    if trainable == "all":
        for node in layers:
            node.trainable = True
        return []
    names = [trainable] if isinstance(trainable, str) else list(trainable)
    for name in names:
        hits = [node for node in state.graph.nodes if _matches(state, node, name)]
        if not hits:
            known = [n.name for n in state.graph.nodes] + sorted(
                {w for sources in state.weight_sources.values() for w in sources}
            )
            raise ConfigError(
                f"--trainable (trainable=): no node or initializer named {name!r}"
                + did_you_mean(name, known)
            )
        for node in hits:
            node.trainable = True
    return []


def _matches(state: OnnxTranslation, node: Node, name: str) -> bool:
    """``name`` is the node, one of its initializers, or a prefix of those (a torch module
    path); a prefix selects only layers Core ML can train, so naming a block skips its
    batch norms."""
    sources = state.weight_sources.get(node.name, set())
    if node.name == name or name in sources:
        return True
    return node.op in UPDATABLE_OPS and any(s.startswith(name + ".") for s in sources)


# -- the export ----------------------------------------------------------------------------


def onnx_to_graph(
    model: Any,
    *,
    trainable: Union[None, str, Iterable[str]] = None,
    image_input: Optional[dict] = None,
) -> tuple[OnnxTranslation, list[str]]:
    """Load and translate ``model`` with ``Node.trainable`` set (no loss, no passes); also
    returns the assumptions made."""
    state = translate(load_onnx(model), image_input)
    return state, select_trainable(state, trainable)


def wants_logits(state: OnnxTranslation, loss: str) -> tuple[bool, list[str]]:
    """Whether cross-entropy needs a softmax appended (the output is not one), and notes."""
    producer = (
        state.graph.producer(state.graph.outputs[0]) if len(state.graph.outputs) == 1 else None
    )
    if loss != "cce" or producer is None or producer.op == "softmax":
        return False, []
    return True, [
        f"output {state.graph.outputs[0]!r} is not a softmax: read as logits, a softmax "
        "is appended for cross-entropy"
    ]


def export_onnx(
    model: Any,
    path: Union[str, os.PathLike],
    *,
    loss: str,
    optimizer: Any = None,
    from_logits: Optional[bool] = None,
    options: Optional[ExportOptions] = None,
    **kwargs: Any,
) -> ExportReport:
    """Export an ONNX model (path, bytes or ``ModelProto``) as an updatable Core ML model.

    ONNX carries no training configuration worth trusting, so ``loss`` (``'cce'``/``'mse'``)
    is explicit; ``optimizer`` is our ``SGD``/``Adam`` or ``'sgd'``/``'adam'`` (None:
    ``SGD()``, as for the other frontends). ``from_logits`` defaults to "the output is not a
    softmax". Everything else is an ``ExportOptions`` field, given as ``options`` or as keywords: ``trainable`` names
    nodes or weight initializers (or a prefix such as a torch module path; a string is one
    name), or is ``'all'``; by default only the last dense/convolution layer trains.
    ``image_input`` is ``{"name"?, "color", "scale", "bias"}``. Returns the
    ``ExportReport``; writes nothing on failure.
    """
    import onnx

    from ...export import export_graph
    from ...training import SGD, optimizer_named

    options = ExportOptions.build(options, **kwargs)
    state, assumptions = onnx_to_graph(
        model, trainable=options.trainable, image_input=options.image_input
    )
    logits, notes = wants_logits(state, loss)
    if optimizer is None:
        assumptions.append("no optimizer given: Core ML SGD with learning rate 0.01, no momentum")
    elif isinstance(optimizer, str):
        optimizer = optimizer_named(optimizer)
    return export_graph(
        state.graph,
        path,
        loss=loss,
        optimizer=optimizer or SGD(),
        from_logits=logits if from_logits is None else from_logits,
        options=options,
        source=f"onnx=={onnx.__version__} (opset {state.opset})",
        assumptions=assumptions + (notes if from_logits is None else []) + options.default_notes(),
    )
