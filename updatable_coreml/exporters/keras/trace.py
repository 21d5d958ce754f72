"""Trace a built Keras model into the IR: walk its functional graph in Keras's own order and
convert each layer call (one converter per layer class, ``converters/``); a layer without a
converter is an error that names it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from ...errors import ConfigError, UnsupportedError
from ...ir import Graph, TensorSpec
from ...options import did_you_mean
from ..common.builder import run_converter
from ..common.image import apply_image_input
from ..common.inputs import width_description
from . import converters  # noqa: F401  (importing registers the converters)
from .context import CONVERTERS, Context, LayerCall, Tensor, _functional, _keras, channel_first


def _trace(ctx: Context, model, inputs: list[Tensor]) -> list[Tensor]:
    """Walk a functional graph in Keras's own execution order, converting each layer call."""
    graph = _functional(model)
    values: dict[int, Tensor] = {id(k): t for k, t in zip(graph.inputs, inputs)}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.is_input:
                continue
            layer = node.operation
            args, kwargs = node.arguments.fill_in(values)
            flat = _flatten_args(args)
            out_keras = node.outputs
            if isinstance(layer, _keras().Model):
                results = _trace(ctx, layer, flat)
            elif not isinstance(layer, _keras().layers.Layer):  # an op: x + 3.0, x * y
                kwargs = {**kwargs, "operands": list(args)}
                results = [_convert(ctx, layer, flat, kwargs, out_keras, prefix="ops.")]
            else:
                results = [_convert(ctx, layer, flat, kwargs, out_keras)]
            for keras_tensor, result in zip(out_keras, results):
                values[id(keras_tensor)] = result
    return [values[id(k)] for k in graph.outputs]


def _flatten_args(args) -> list[Tensor]:
    flat = []
    for arg in args:
        if isinstance(arg, Tensor):
            flat.append(arg)
        elif isinstance(arg, (list, tuple)):
            flat += _flatten_args(arg)
    return flat


def _no_converter_message(ctx: Context, layer, kind: str) -> str:
    """Why a layer cannot be converted, and the way out that fits where it sits.

    A layer no trainable layer precedes is in the frozen part, which a coremltools-converted
    backbone can hold (any NeuralNetwork layer is fine there), so the message names that
    option rather than a list of every supported class (docs/supported-ops.md has it)."""
    shown = f"keras.layers.{kind}" if not kind.startswith("ops.") else f"keras.{kind}"
    message = f"layer {layer.name!r} ({shown}) has no Core ML converter in our Keras frontend"
    frozen_part = not ctx.trains(layer) and not any(node.trainable for node in ctx.nodes)
    if frozen_part:
        return (
            f"{message}; it is in the frozen part, so export a pipeline whose backbone "
            "coremltools converts: --pipeline --backbone coremltools (pipeline=True, "
            "backbone='coremltools'; 'auto' tries our frontend first)"
        )
    return (
        f"{message}; it sits on the trainable path, where Core ML needs layers it can "
        "backpropagate through: replace it, or freeze the layers before it "
        "(supported layers: docs/supported-ops.md)"
    )


def _convert(
    ctx: Context, layer, inputs: list[Tensor], kwargs: dict, out_keras, prefix: str = ""
) -> Tensor:
    """``prefix`` 'ops.' for a Keras operation that is not a layer (``keras.ops`` arithmetic
    on a KerasTensor), whose converters are registered as ``ops.<class>``."""
    kind = prefix + type(layer).__name__
    converter = CONVERTERS.get(kind) if type(layer).__module__.startswith("keras.") else None
    if converter is None:
        raise UnsupportedError(_no_converter_message(ctx, layer, kind))
    if len(out_keras) != 1:
        raise UnsupportedError(f"layer {layer.name!r} ({kind}) has {len(out_keras)} outputs")
    ctx.seen.add(layer.name)
    _check_regularizers(ctx, layer)
    out_shape = channel_first(out_keras[0].shape[1:], f"layer {layer.name!r}")
    # A layer after a convolution over time keeps its (C, 1, steps) layout; a converter that
    # changes the layout (a recurrent layer reading it) returns its own Tensor.
    width = len(out_shape) == 2 and any(t.width for t in inputs)
    if width:
        out_shape = (out_shape[1], 1, out_shape[0])
    result = run_converter(
        converter,
        f"layer {layer.name!r} ({kind})",
        ctx,
        layer,
        LayerCall(inputs, kwargs, out_shape),
    )
    return result if isinstance(result, Tensor) else Tensor(result, out_shape, width)


def _check_regularizers(ctx: Context, layer) -> None:
    for attr in (
        "kernel_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "depthwise_regularizer",
        "pointwise_regularizer",
    ):
        if getattr(layer, attr, None) is not None and ctx.trains(layer):
            ctx.warnings.append(
                f"layer {layer.name!r}: {attr} is not carried to the device (Core ML "
                "has no regularization); on-device training runs without it"
            )


def keras_to_graph(
    model,
    *,
    trainable: Optional[Sequence[str]] = None,
    image_input=None,
    allow_unsupported: bool = False,
) -> tuple[Graph, Context]:
    """Trace a built Keras model into an IR graph (before any pass)."""
    ctx = Context(set(trainable) if trainable is not None else None, allow_unsupported)
    graph = _functional(model)
    inputs = []
    for keras_tensor in graph.inputs:
        name = ctx.tensor(keras_tensor._keras_history.operation.name)
        inputs.append(TensorSpec(name, channel_first(keras_tensor.shape[1:], f"input {name!r}")))
    apply_image_input(image_input, inputs)
    outputs = _trace(ctx, model, [Tensor(t.name, t.shape) for t in inputs])
    if ctx.trainable is not None:
        unknown = sorted(ctx.trainable - ctx.seen)
        if unknown:
            raise ConfigError(
                f"--trainable (trainable=): no layer named {unknown[0]!r}"
                + (
                    did_you_mean(unknown[0], sorted(ctx.seen))
                    or "; layers are: " + ", ".join(sorted(ctx.seen))
                )
            )
    graph = _width_inputs(_token_inputs(Graph(inputs, [t.name for t in outputs], ctx.nodes)))
    return graph, ctx


def _token_inputs(graph: Graph) -> Graph:
    """Inputs read by embeddings hold token ids ``(steps,)``: make them ``(Seq, 1)`` sequences.

    Keras cannot tell them from vectors by shape; only their use says what they are.
    """
    for spec in graph.inputs:
        consumers = graph.consumers(spec.name)
        if not any(node.op == "embedding" for node in consumers):
            continue
        others = [node.name for node in consumers if node.op != "embedding"]
        if others or spec.name in graph.outputs:
            raise UnsupportedError(
                f"input {spec.name!r} holds token ids for an Embedding and "
                f"cannot also feed {others or 'the output'}; give them "
                "separate inputs"
            )
        spec.shape = (spec.shape[0], 1)
    return graph


def _width_inputs(graph: Graph) -> Graph:
    """A ``(steps, channels)`` input read only by convolutions or pooling over time is
    declared ``(C, 1, steps)``, the layout they work in, instead of being permuted on device:
    one example is then ``x.T[:, None, :]`` (docs/keras.md, "Sensor models")."""
    for spec in graph.inputs:
        consumers = graph.consumers(spec.name)
        if len(spec.shape) != 2 or spec.name in graph.outputs or not consumers:
            continue
        if any(node.op != "sequence_to_width" for node in consumers):
            continue
        for permute in consumers:
            graph.nodes.remove(permute)
            for node in graph.consumers(permute.outputs[0]):
                node.inputs = [spec.name if i == permute.outputs[0] else i for i in node.inputs]
            graph.outputs = [spec.name if o == permute.outputs[0] else o for o in graph.outputs]
        steps, channels = spec.shape
        spec.shape = (channels, 1, steps)
        spec.description = width_description(channels, steps)
    return graph
