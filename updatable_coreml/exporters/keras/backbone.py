"""The coremltools fallback for Keras: the functional graph up to the input of the first
trainable layer with weights is converted by ``ct.convert`` (through a ``tf.function`` taking
one channel-first example), the rest is translated by our frontend and reads the backbone's
``FEATURES``. See ``common/coremltools.py``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

from ...compose import Backbone
from ...errors import ConfigError, UnsupportedError, first_line
from ...frameworks import quiet_import
from ...ir import Graph
from ..common.coremltools import (
    FEATURES,
    backbone_image,
    convert_with_coremltools,
    rename_graph_input,
    single_input,
)
from .context import Context, _functional, _keras, channel_first
from .trace import keras_to_graph


def split_keras(model: Any, trains: Callable[[Any], bool], reason: str) -> tuple[Any, Any]:
    """(frozen prefix, rest) of a Keras functional or Sequential model, cut at
    the input of the first layer with weights that trains."""
    keras = _keras()
    graph = _functional(model)
    first = next((layer for layer in graph.layers if layer.weights and trains(layer)), None)
    if first is None:
        raise ConfigError("no layer with weights trains; there is no head to update")
    try:
        cut = first.input
    except (AttributeError, ValueError) as exc:
        raise UnsupportedError(
            f"{reason}; cannot cut the model at the input of {first.name!r} "
            f"for the coremltools backbone: {first_line(exc)}"
        ) from exc
    if isinstance(cut, (list, tuple)) or any(cut is t for t in graph.inputs):
        raise ConfigError(
            f"the first trainable layer {first.name!r} reads the model input "
            "directly; there is no single frozen backbone to convert"
        )
    return keras.Model(graph.inputs, cut), keras.Model(cut, graph.outputs)


def keras_backbone(
    model: Any, trains: Callable[[Any], bool], reason: str, image_input: Any = None
) -> tuple[Backbone, Any]:
    """Convert the frozen prefix of a Keras model with coremltools (through a
    ``tf.function`` taking one channel-first example, or for an image input a batch of one,
    the shape Core ML's image mapping gives), and return it with the head model."""
    tf = quiet_import("tensorflow")
    prefix, head = split_keras(model, trains, reason)
    (keras_input,) = single_input(prefix.inputs, "Keras backbone")
    shape = channel_first(keras_input.shape[1:], "the backbone input")
    name = keras_input._keras_history.operation.name
    image = backbone_image(image_input, name, shape)

    def per_example(x):  # images are channel-first outside, channel-last in Keras
        batch = x if image is not None else x[None]
        y = prefix(tf.transpose(batch, [0, 2, 3, 1]) if len(shape) == 3 else batch, training=False)[
            0
        ]
        return tf.transpose(y, [2, 0, 1]) if len(y.shape) == 3 else y

    traced_shape = (1, *shape) if image is not None else shape
    try:
        function = tf.function(per_example).get_concrete_function(
            tf.TensorSpec(traced_shape, tf.float32)
        )
    except Exception as exc:
        raise UnsupportedError(
            f"{reason}; TensorFlow could not trace the frozen backbone (up to "
            f"layer {prefix.layers[-1].name!r}) for coremltools: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc
    return convert_with_coremltools([function], "tensorflow", shape, name, reason, image), head


def keras_head(
    model: Any,
    *,
    trainable: Optional[Sequence[str]],
    image_input: Any,
    allow_unsupported: bool,
    reason: str,
) -> tuple[tuple[Graph, Any], Backbone]:
    """The coremltools path for Keras: the head's (graph, context) from our frontend, reading
    ``FEATURES``, and the converted backbone."""
    trains = Context(set(trainable) if trainable is not None else None, allow_unsupported).trains
    backbone, head = keras_backbone(model, trains, reason, image_input)
    graph, ctx = keras_to_graph(head, trainable=trainable, allow_unsupported=allow_unsupported)
    return (rename_graph_input(graph, FEATURES), ctx), backbone
