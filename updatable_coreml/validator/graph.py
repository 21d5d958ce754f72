"""The layer graph Core ML's updatable-model checks walk (Apple's
``NeuralNetworkValidatorGraph.hpp``, same in every release tag 3.0 to 9.0).

A layer's parents are the layers that wrote its input blobs *at that point in the layer
list*: a ``copy`` may rewrite a blob, and a later writer does not become the parent of an
earlier reader. Loss layers are added after all layers, so a loss reads the last writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..coreml_rules import is_backpropagable


def loss_io(loss) -> tuple[str | None, str, str]:
    """(``"cce"``/``"mse"``/None, input blob, target) of a loss layer."""
    kind = loss.WhichOneof("LossLayerType")
    if kind == "categoricalCrossEntropyLossLayer":
        body = loss.categoricalCrossEntropyLossLayer
        return "cce", body.input, body.target
    if kind == "meanSquaredErrorLossLayer":
        body = loss.meanSquaredErrorLossLayer
        return "mse", body.input, body.target
    return None, "", ""


def layer_type(layer) -> str | None:
    return layer.WhichOneof("layer")


def backpropagable(layer) -> bool:
    """Whether Core ML passes gradients through ``layer`` (softmax excluded: it is allowed
    only directly before categorical cross-entropy)."""
    kind = layer_type(layer)
    activation = layer.activation.WhichOneof("NonlinearityType") if kind == "activation" else None
    return is_backpropagable(kind or "", activation)


@dataclass
class Node:
    """One layer (``layer`` set) or loss layer (``loss`` set) and the nodes feeding it."""

    name: str
    layer: Any = None
    loss: Any = None
    parents: list[Node] = field(default_factory=list)


@dataclass
class LayerGraph:
    nodes: list[Node]
    by_name: dict[str, Node]
    #: blob -> its writer after the whole layer list (what the loss layers read).
    last_writer: dict[str, Node]

    def loss_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.loss is not None]


def build_graph(nn) -> LayerGraph:
    """Apple's graph: parents from the writer of each input blob at that point."""
    writer: dict[str, Node] = {}
    nodes: list[Node] = []
    by_name: dict[str, Node] = {}

    def insert(node: Node, inputs, outputs) -> None:
        node.parents = [writer[blob] for blob in inputs if blob in writer]
        for blob in outputs:
            writer[blob] = node
        nodes.append(node)
        by_name[node.name] = node

    for layer in nn.layers:
        insert(Node(layer.name, layer=layer), layer.input, layer.output)
    last = dict(writer)
    for loss in nn.updateParams.lossLayers:
        _, source, _ = loss_io(loss)
        insert(Node(loss.name, loss=loss), [source] if source else [], [])
    return LayerGraph(nodes, by_name, last)


def blocking_layer(graph: LayerGraph) -> tuple[str, str] | None:
    """Apple's breadth-first walk from each loss layer: (first non-backpropagable layer,
    the updatable layer found after it), or None. The walk is Apple's, order included: once
    a layer that stops gradients has been seen, any updatable layer met later in the walk
    is an error (a softmax directly before categorical cross-entropy does not count)."""
    visited: set[str] = set()
    for loss_node in graph.loss_nodes():
        queue = [loss_node]
        blocker: str | None = None
        while queue:
            current = queue.pop(0)
            for parent in current.parents:
                if parent.name in visited:
                    continue
                visited.add(parent.name)
                queue.append(parent)
                if parent.layer is None:
                    continue
                if parent.layer.isUpdatable and blocker is not None:
                    return blocker, parent.name
                if not backpropagable(parent.layer):
                    if (
                        layer_type(parent.layer) == "softmax"
                        and current.loss is not None
                        and current.loss.WhichOneof("LossLayerType")
                        == "categoricalCrossEntropyLossLayer"
                    ):
                        continue
                    blocker = parent.name
    return None


def trainable_path(nn, graph: LayerGraph | None = None) -> list:
    """Layers between the loss and the updatable layer(s), loss side first: the ancestors
    of the loss that are updatable or have an updatable ancestor."""
    graph = graph or build_graph(nn)
    losses = graph.loss_nodes()
    if not losses:
        return []
    ancestors: dict[str, set[str]] = {}
    for node in graph.nodes:
        above: set[str] = set()
        for parent in node.parents:
            above |= ancestors.get(parent.name, set()) | {parent.name}
        ancestors[node.name] = above
    updatable = {layer.name for layer in nn.layers if layer.isUpdatable}
    wanted = ancestors[losses[0].name]
    return [
        layer
        for layer in reversed(list(nn.layers))
        if layer.name in wanted and (layer.name in updatable or ancestors[layer.name] & updatable)
    ]
