"""What every Keras converter shares: the graph being built (``Context``), traced tensors,
the converter table, and the channel-last -> channel-first edge.

Keras is channel-last; the IR is channel-first, so shapes and kernels are transposed here,
at the edge. keras is imported on first use, without TensorFlow's start-up noise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from ...errors import ConfigError, UnsupportedError
from ...frameworks import quiet_import
from ...ir import Node
from ...registry import Registry
from ..common import unique_name
from ..common.builder import append_node
from ..common.refusals import refuse

PathLike = Union[str, os.PathLike]


def _keras():
    """keras, imported on first use without TensorFlow's start-up noise."""
    return quiet_import("keras")


@dataclass(frozen=True)
class Tensor:
    """A traced value: IR tensor name and its per-example channel-first shape.

    ``width``: a Keras ``(steps, channels)`` tensor held as ``(C, 1, steps)``, the layout
    convolutions over time need (see ``converters/temporal.py``); the layers after a Conv1D
    keep it, so Keras rank 2 is not always the IR's ``(Seq, C)``.
    """

    name: str
    shape: tuple[int, ...]
    width: bool = False


@dataclass
class Context:
    """The graph being built plus what the converters report."""

    trainable: Optional[set[str]]
    allow_unsupported: bool
    nodes: list[Node] = field(default_factory=list)
    node_names: set[str] = field(default_factory=set)
    tensor_names: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # keras layer names met while tracing

    def tensor(self, name: str) -> str:
        """A new unique tensor name (Core ML blobs and layers have separate namespaces)."""
        return unique_name(self.tensor_names, name)

    def trains(self, layer) -> bool:
        if self.trainable is not None:
            return layer.name in self.trainable
        return bool(layer.trainable)

    def add(
        self,
        op: str,
        name: str,
        inputs: Sequence[Tensor],
        *,
        attrs=None,
        weights=None,
        trainable: bool = False,
        source: str = "",
        output: Optional[str] = None,
    ) -> str:
        """Append a node; returns its output tensor name (``output`` or the node name)."""
        node = append_node(
            self.nodes,
            self.node_names,
            op,
            name,
            [t.name for t in inputs],
            [],
            attrs=attrs,
            weights=weights,
            trainable=trainable,
            source=source,
        )
        node.outputs.append(self.tensor(node.name if output is None else output))
        return node.outputs[0]

    def refuse(self, message: str, instead: str = "exported without it") -> None:
        """An option we cannot carry: an error, or a warning with ``allow_unsupported``."""
        refuse(self.allow_unsupported, self.warnings, message, instead)


@dataclass(frozen=True)
class LayerCall:
    """What a Keras layer was called with: its ``inputs`` (``Tensor`` s), the call's keyword
    arguments, and the channel-first shape of its output."""

    inputs: list
    kwargs: dict
    out_shape: tuple


Converter = Callable[[Context, Any, LayerCall], Union[str, Tensor]]
#: Keras layer class name -> converter ``(ctx, layer, call) -> IR tensor`` (a name, or a
#: ``Tensor`` when the converter changes the layout, see ``Tensor.width``), the shape every
#: frontend's converters share: (translation state, the source op, what it was called with).
#: Only classes from keras itself match (a subclass may change ``call``).
CONVERTERS = Registry("converter for Keras layer")
converts = CONVERTERS.register


def channel_first(shape: Sequence[Optional[int]], where: str) -> tuple[int, ...]:
    """Keras per-example shape (channel-last) -> IR shape (channel-first). A sequence
    ``(steps, features)`` is already the IR's ``(Seq, C)``."""
    if any(d is None for d in shape):
        raise UnsupportedError(
            f"{where}: shape {tuple(shape)} has unknown dimensions; Core ML "
            "needs fixed sizes: give the Input an explicit shape"
        )
    fixed = tuple(int(d) for d in shape if d is not None)
    if len(fixed) == 3:
        return (fixed[2], fixed[0], fixed[1])
    if len(fixed) in (1, 2):
        return fixed
    raise UnsupportedError(
        f"{where}: rank-{len(shape)} tensors {shape} are not supported; "
        "use vectors (N,), sequences (steps, features) or images (H, W, C)"
    )


def _source(layer) -> str:
    return f"keras.layers.{type(layer).__name__}"


def _functional(model):
    """The functional graph behind a model (Sequential keeps one once built)."""
    if isinstance(model, _keras().Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ConfigError(
                f"model {model.name!r} is not built: give it an Input layer or call "
                "model.build(input_shape) before exporting"
            )
        return graph
    if not hasattr(model, "_nodes_by_depth"):
        raise UnsupportedError(
            f"model {model.name!r} ({type(model).__name__}) is a subclassed "
            "model; export a Sequential or functional model"
        )
    return model


def _numpy(variable) -> np.ndarray:
    return np.asarray(_keras().ops.convert_to_numpy(variable), dtype=np.float32)


def _channels_last(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise UnsupportedError(
            f"layer {layer.name!r}: data_format={layer.data_format!r}; only "
            "channels_last models are supported"
        )
