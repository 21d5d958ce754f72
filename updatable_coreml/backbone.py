"""Frozen-backbone pipelines: a frozen NeuralNetwork backbone + an updatable network head.

Written as two models in one updatable pipeline instead of one network, so the part that
never trains is a separate, plain model: it may use any layer (no backprop rules apply),
and it can come from coremltools when our frontends do not support one of its ops.

Two ways to get the backbone, reported in ``ExportReport.backbone``:

* ``"frontend"``: our frontend translates the whole model; the IR graph is cut at the input
  of the first trainable layer (``split_graph``) and both parts go through our backend.
* ``"coremltools"``: the frozen prefix is converted by ``ct.convert(...,
  convert_to="neuralnetwork")`` and only the head is translated by our frontend. Used when
  asked for (``backbone="coremltools"``) or, with ``backbone="auto"``, when our frontend
  refuses the whole model. The prefix is cut at the same place, in the source framework:
  the children of a torch ``nn.Sequential`` before the first one that trains, or the Keras
  functional graph up to the input of the first trainable layer with weights.

The backbone reads one example channel-first, like our exports, so the pipeline takes the
same inputs as a single-network export of the model; its output is the head's input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import warnings
from typing import Any, Callable, Optional, Sequence, TypeVar

from ._proto import FeatureTypes_pb2
from .compose import Backbone, layer_names, make_room
from .errors import ConfigError, UnsupportedError, first_line
from .frameworks import quiet_import
from .ir import Graph
from .options import BACKBONES
from .passes import _rename

#: Output name of a backbone converted by coremltools (the head's input).
FEATURES = "features"
#: coremltools stamps the conversion date; dropped so exports stay byte-deterministic.
CONVERSION_DATE = "com.github.apple.coremltools.conversion_date"

T = TypeVar("T")


# -- the head's input ----------------------------------------------------------------------


def rename_graph_input(graph: Graph, name: str) -> Graph:
    """``graph`` with its single input renamed (to the backbone's output name)."""
    (old,) = graph.inputs
    return Graph([dataclasses.replace(old, name=name)], list(graph.outputs),
                 _rename(graph.nodes, old.name, name), list(graph.notes))


# -- choosing the path -------------------------------------------------------------------------


def translate_or_convert(mode: str, pipeline: bool, translate: Callable[[], T],
                         convert: Callable[[str], tuple[T, Backbone]]) -> tuple[T, Optional[Backbone]]:
    """Translate the whole model with our frontend, or convert its frozen prefix with
    coremltools and translate the rest (``convert(reason)`` returns the head's translation
    and the backbone). ``mode='auto'`` converts only when our frontend refuses the model."""
    if mode not in BACKBONES:
        raise ConfigError(f"backbone={mode!r}: use one of {', '.join(BACKBONES)}")
    if mode != "auto" and not pipeline:
        raise ConfigError(f"backbone={mode!r} chooses how a pipeline's backbone is made; "
                          "pass pipeline=True too")
    if mode == "coremltools":
        return convert("backbone='coremltools' was asked for")
    try:
        return translate(), None
    except UnsupportedError as exc:
        if not pipeline or mode == "frontend":
            raise
        return convert(f"our frontend refused the model: {first_line(exc)}")


# -- coremltools conversion -----------------------------------------------------------------


def convert_with_coremltools(model: Any, source: str, shape: Sequence[int], input_name: str,
                             reason: str) -> Backbone:
    """A frozen backbone from ``ct.convert(model, convert_to='neuralnetwork')``: ``model``
    takes one example of ``shape`` (channel-first, no batch axis); input and output renamed
    to ``input_name`` and ``FEATURES``."""
    if input_name == FEATURES:
        raise ConfigError(f"the model input is named {FEATURES!r}, the name of the backbone's "
                          "output; rename the input")
    ct = quiet_import("coremltools")
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = ct.convert(model, source=source, convert_to="neuralnetwork",
                                   inputs=[ct.TensorType(shape=tuple(shape))])
    except Exception as exc:
        raise UnsupportedError(f"coremltools could not convert the frozen backbone "
                               f"({reason}): {type(exc).__name__}: {first_line(exc)}; simplify "
                               "or replace the op it names, or export without pipeline=True") from exc
    spec = converted.get_spec()
    if len(spec.description.input) != 1 or len(spec.description.output) != 1:
        raise UnsupportedError("coremltools made a backbone with several inputs or outputs; a "
                               "backbone needs exactly one of each")
    # coremltools names blobs after the source's variables ("input" is common in torch):
    # move one out of the way before a feature takes its name.
    make_room(spec, input_name, keep=spec.description.input[0].name)
    ct.utils.rename_feature(spec, spec.description.input[0].name, input_name)
    make_room(spec, FEATURES, keep=spec.description.output[0].name)
    ct.utils.rename_feature(spec, spec.description.output[0].name, FEATURES)
    output = spec.description.output[0].type.multiArrayType
    output.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    spec.description.metadata.userDefined.pop(CONVERSION_DATE, None)
    note = (f"frozen backbone converted by coremltools=={ct.__version__} "
            f"(convert_to='neuralnetwork'; {reason}): {len(layer_names(spec))} layer(s), "
            f"output {FEATURES!r}")
    return Backbone(spec, "coremltools", [note])


# -- torch ------------------------------------------------------------------------------------


def split_sequential(module: Any, trains: set[str], reason: str) -> tuple[Any, Any]:
    """(frozen prefix, rest) of an ``nn.Sequential``, cut before the first child holding a
    parameter that trains. Slices keep the children's names, so parameter names, the
    optimizer's parameters and ``trainable=[...]`` still refer to the same layers."""
    import torch

    if type(module) is not torch.nn.Sequential:  # a subclass may run its children otherwise
        raise UnsupportedError(f"{reason}; converting the frozen backbone with coremltools needs "
                               f"the model as an nn.Sequential (backbone children first), got a "
                               f"{type(module).__name__}")
    names = [name for name, _ in module.named_children()]
    index = next((i for i, name in enumerate(names)
                  if any(p.startswith(name + ".") for p in trains)), None)
    if index is None:
        raise ConfigError("no child of the nn.Sequential trains; there is no head to update")
    if index == 0:
        raise ConfigError(f"child {names[0]!r}, the first of the nn.Sequential, trains, so there "
                          "is no frozen backbone to convert; export one network")
    return module[:index], module[index:]


def torch_backbone(prefix: Any, example_inputs: Any, input_name: str,
                   reason: str) -> tuple[Backbone, Any]:
    """Convert a frozen torch module with coremltools (traced on one example, without the
    batch axis): the backbone and its output on ``example_inputs`` (the head's example)."""
    import torch

    from .exporters.torch import as_example_inputs

    (example,) = _single(as_example_inputs(example_inputs), "torch backbone")
    was_training = prefix.training
    prefix.eval()
    try:
        per_example = torch.nn.Sequential(torch.nn.Unflatten(0, (1, example.shape[1])), prefix,
                                          torch.nn.Flatten(0, 1))
        with torch.no_grad():
            features = prefix(example)
            try:
                traced = torch.jit.trace(per_example, example[0])
            except Exception as exc:
                raise UnsupportedError(f"torch.jit.trace could not trace the frozen backbone "
                                       f"({reason}): {first_line(exc)}") from exc
    finally:
        prefix.train(was_training)
    backbone = convert_with_coremltools(traced, "pytorch", tuple(example.shape[1:]), input_name, reason)
    return backbone, features


def torch_head(module: Any, example_inputs: Any, *, optimizer: Any, trainable: Any,
               image_input: Optional[dict], input_names: Optional[Sequence[str]], refusals: Any,
               reason: str) -> tuple[Any, Backbone]:
    """The coremltools path for torch: the head's ``Translation`` (reading ``FEATURES``) and
    the converted backbone. The head is cut where the parameters that train begin."""
    from .exporters.torch import torch_to_graph, trainable_parameters

    if image_input is not None:
        raise ConfigError("image_input is not supported with a backbone converted by coremltools "
                          "yet; feed a MultiArray, or make the backbone translatable")
    prefix, head = split_sequential(module, trainable_parameters(module, optimizer, trainable), reason)
    input_name = input_names[0] if input_names else next(iter(inspect.signature(module.forward).parameters))
    backbone, features = torch_backbone(prefix, example_inputs, input_name, reason)
    state = torch_to_graph(head, features, optimizer=optimizer, trainable=trainable,
                           input_names=[FEATURES], refusals=refusals)
    return state, backbone


def _single(items: Sequence[Any], what: str) -> Sequence[Any]:
    if len(items) != 1:
        raise UnsupportedError(f"a {what} converted by coremltools must take one input, got {len(items)}")
    return items


# -- Keras ------------------------------------------------------------------------------------


def split_keras(model: Any, trains: Callable[[Any], bool], reason: str) -> tuple[Any, Any]:
    """(frozen prefix, rest) of a Keras functional or Sequential model, cut at
    the input of the first layer with weights that trains."""
    from .exporters.keras import _functional, _keras

    keras = _keras()
    graph = _functional(model)
    first = next((layer for layer in graph.layers if layer.weights and trains(layer)), None)
    if first is None:
        raise ConfigError("no layer with weights trains; there is no head to update")
    try:
        cut = first.input
    except (AttributeError, ValueError) as exc:
        raise UnsupportedError(f"{reason}; cannot cut the model at the input of {first.name!r} "
                               f"for the coremltools backbone: {first_line(exc)}") from exc
    if isinstance(cut, (list, tuple)) or any(cut is t for t in graph.inputs):
        raise ConfigError(f"the first trainable layer {first.name!r} reads the model input "
                          "directly; there is no single frozen backbone to convert")
    return keras.Model(graph.inputs, cut), keras.Model(cut, graph.outputs)


def keras_backbone(model: Any, trains: Callable[[Any], bool], reason: str) -> tuple[Backbone, Any]:
    """Convert the frozen prefix of a Keras model with coremltools (through a
    ``tf.function`` taking one channel-first example), and return it with the head model."""
    from .exporters.keras import channel_first

    tf = quiet_import("tensorflow")
    prefix, head = split_keras(model, trains, reason)
    (keras_input,) = _single(prefix.inputs, "Keras backbone")
    shape = channel_first(keras_input.shape[1:], "the backbone input")

    def per_example(x):  # images are channel-first outside, channel-last in Keras
        y = prefix(tf.transpose(x, [1, 2, 0])[None] if len(shape) == 3 else x[None],
                   training=False)[0]
        return tf.transpose(y, [2, 0, 1]) if len(y.shape) == 3 else y

    name = keras_input._keras_history.operation.name
    try:
        function = tf.function(per_example).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    except Exception as exc:
        raise UnsupportedError(f"{reason}; TensorFlow could not trace the frozen backbone (up to "
                               f"layer {prefix.layers[-1].name!r}) for coremltools: "
                               f"{type(exc).__name__}: {first_line(exc)}") from exc
    return convert_with_coremltools([function], "tensorflow", shape, name, reason), head


def keras_head(model: Any, *, trainable: Optional[Sequence[str]], image_input: Any,
               allow_unsupported: bool, reason: str) -> tuple[tuple[Graph, Any], Backbone]:
    """The coremltools path for Keras: the head's (graph, context) from our frontend, reading
    ``FEATURES``, and the converted backbone."""
    from .exporters.keras import Context, keras_to_graph

    if image_input is not None and image_input is not False:
        raise ConfigError("image_input is not supported with a backbone converted by coremltools "
                          "yet; feed a MultiArray, or make the backbone translatable")
    trains = Context(set(trainable) if trainable is not None else None, allow_unsupported).trains
    backbone, head = keras_backbone(model, trains, reason)
    graph, ctx = keras_to_graph(head, trainable=trainable, allow_unsupported=allow_unsupported)
    return (rename_graph_input(graph, FEATURES), ctx), backbone
