"""Frozen-backbone pipelines: a frozen NeuralNetwork backbone + an updatable network head.

Written as two models in one updatable pipeline instead of one network, so the part that
never trains is a separate, plain model: it may use any layer (no backprop rules apply),
and it can come from coremltools when our frontends do not support one of its ops.

Two ways to get the backbone, reported in ``ExportReport.backbone``:

* ``"frontend"``: our frontend translates the whole model; the IR graph is cut at the input
  of the first trainable layer (``export.split_graph``) and both parts go through our
  backend.
* ``"coremltools"``: the frozen prefix is converted by ``ct.convert(...,
  convert_to="neuralnetwork")`` and only the head is translated by our frontend. Used when
  asked for (``backbone="coremltools"``) or, with ``backbone="auto"``, when our frontend
  refuses the whole model. The prefix is cut at the same place, in the source framework:
  the ``torch.export`` graph up to the one tensor the ops using trained parameters read, or
  the Keras functional graph up to the input of the first trainable layer with weights. Each
  framework's cut lives in its frontend package (``torch/backbone.py``,
  ``keras/backbone.py``); this module holds what they share.

The backbone reads one example channel-first, like our exports, so the pipeline takes the
same inputs as a single-network export of the model; its output is the head's input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar

from ..._proto import FeatureTypes_pb2
from ...backend import describe_input
from ...compose import Backbone, layer_names, make_room
from ...errors import ConfigError, UnsupportedError, first_line
from ...frameworks import quiet_import
from ...ir import Graph, TensorSpec
from ...options import BACKBONES
from ...passes import _rename
from ...spec_io import neural_network
from .image import apply_image_input

#: Output name of a backbone converted by coremltools (the head's input).
FEATURES = "features"
#: coremltools stamps the conversion date; dropped so exports stay byte-deterministic.
CONVERSION_DATE = "com.github.apple.coremltools.conversion_date"

T = TypeVar("T")


def backbone_image(image_input: Any, name: str, shape: Sequence[int]) -> Optional[dict]:
    """``image_input`` read for a coremltools backbone's one input, as every frontend reads it
    (``image.apply_image_input``): the image options, or None for a MultiArray input."""
    spec = TensorSpec(name, tuple(int(d) for d in shape))
    apply_image_input(image_input, [spec])
    return spec.image


# -- the head's input ----------------------------------------------------------------------


def rename_graph_input(graph: Graph, name: str) -> Graph:
    """``graph`` with its single input renamed (to the backbone's output name)."""
    (old,) = graph.inputs
    return Graph(
        [dataclasses.replace(old, name=name)],
        list(graph.outputs),
        _rename(graph.nodes, old.name, name),
        list(graph.notes),
    )


# -- choosing the path -------------------------------------------------------------------------


def translate_or_convert(
    mode: str,
    pipeline: bool,
    translate: Callable[[], T],
    convert: Callable[[str], tuple[T, Backbone]],
) -> tuple[T, Optional[Backbone]]:
    """Translate the whole model with our frontend, or convert its frozen prefix with
    coremltools and translate the rest (``convert(reason)`` returns the head's translation
    and the backbone). ``mode='auto'`` converts only when our frontend refuses the model."""
    if mode not in BACKBONES:
        raise ConfigError(f"backbone={mode!r}: use one of {', '.join(BACKBONES)}")
    if mode != "auto" and not pipeline:
        raise ConfigError(
            f"backbone={mode!r} chooses how a pipeline's backbone is made; pass pipeline=True too"
        )
    if mode == "coremltools":
        return convert("backbone='coremltools' was asked for")
    try:
        return translate(), None
    except UnsupportedError as exc:
        if not pipeline or mode == "frontend":
            raise
        return convert(f"our frontend refused the model: {first_line(exc)}")


# -- coremltools conversion -----------------------------------------------------------------


def convert_with_coremltools(
    model: Any,
    source: str,
    shape: Sequence[int],
    input_name: str,
    reason: str,
    image: Optional[dict] = None,
) -> Backbone:
    """A frozen backbone from ``ct.convert(model, convert_to='neuralnetwork')``: ``model``
    takes one example of ``shape`` (channel-first, no batch axis), or with ``image`` (the
    options ``image_input`` gave: color, scale, bias) one image batch ``(1, C, H, W)``; input
    and output renamed to ``input_name`` and ``FEATURES``. An image input is described by the
    backend's own ``describe_input`` (colour space and scaler preprocessing), not by
    coremltools' ImageType options, so ``image_input`` means the same on both paths."""
    if input_name == FEATURES:
        raise ConfigError(
            f"the model input is named {FEATURES!r}, the name of the backbone's "
            "output; rename the input"
        )
    ct = quiet_import("coremltools")
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = ct.convert(
                model,
                source=source,
                convert_to="neuralnetwork",
                inputs=[
                    # only the channel count matters here: describe_input below writes
                    # the colour space and preprocessing image_input asked for
                    ct.ImageType(
                        shape=(1, *shape),
                        color_layout=ct.colorlayout.GRAYSCALE if shape[0] == 1 else "RGB",
                        channel_first=True,  # what the backbone takes, also for TensorFlow
                    )
                    if image is not None
                    else ct.TensorType(shape=tuple(shape))
                ],
            )
    except Exception as exc:
        raise UnsupportedError(
            f"coremltools could not convert the frozen backbone "
            f"({reason}): {type(exc).__name__}: {first_line(exc)}; simplify "
            "or replace the op it names, or export without pipeline=True"
        ) from exc
    spec = converted.get_spec()
    if len(spec.description.input) != 1 or len(spec.description.output) != 1:
        raise UnsupportedError(
            "coremltools made a backbone with several inputs or outputs; a "
            "backbone needs exactly one of each"
        )
    # coremltools names blobs after the source's variables ("input" is common in torch):
    # move one out of the way before a feature takes its name.
    make_room(spec, input_name, keep=spec.description.input[0].name)
    ct.utils.rename_feature(spec, spec.description.input[0].name, input_name)
    make_room(spec, FEATURES, keep=spec.description.output[0].name)
    ct.utils.rename_feature(spec, spec.description.output[0].name, FEATURES)
    if image is not None:
        nn = neural_network(spec)
        kept = [p for p in nn.preprocessing if p.featureName not in ("", input_name)]
        del nn.preprocessing[:], spec.description.input[:]
        nn.preprocessing.extend(kept)
        describe_input(spec, nn, TensorSpec(input_name, tuple(shape), image), tuple(shape))
    output = spec.description.output[0].type.multiArrayType
    output.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    spec.description.metadata.userDefined.pop(CONVERSION_DATE, None)
    note = (
        f"frozen backbone converted by coremltools=={ct.__version__} "
        f"(convert_to='neuralnetwork'; {reason}): {len(layer_names(spec))} layer(s), "
        f"output {FEATURES!r}"
    )
    return Backbone(spec, "coremltools", [note])


def single_input(items: Sequence[Any], what: str) -> Sequence[Any]:
    if len(items) != 1:
        raise UnsupportedError(
            f"a {what} converted by coremltools must take one input, got {len(items)}"
        )
    return items
