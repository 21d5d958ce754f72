"""IR passes shared by every frontend: make a source graph fit what Core ML can run and train.

Each pass takes a ``Graph`` and returns a new one (nodes it changes are copied, weights it
does not change are shared), appending a sentence to ``graph.notes`` for everything it
removes, folds or adds, so the export report can tell the user. ``run_passes`` applies them
in the order that matters (dropout goes before batch-norm folding and flatten fixing so those
see the real neighbours; the backprop check runs last, on the graph the backend will write).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from . import ops
from .errors import NotUpdatableError, UnsupportedError
from .ir import Graph, Node
from .ops import Shapes, conv_output_size, explicit_pads, same_pads  # noqa: F401 (frontends use them)

#: IR ops Core ML can update on device, derived from the op table and ``coreml_rules``.
UPDATABLE_OPS: tuple[str, ...] = ops.updatable_ops()


# -- shapes ------------------------------------------------------------------------------


def infer_shapes(graph: Graph) -> Shapes:
    """Per-example shape of every tensor (vectors ``(C,)``, images ``(C, H, W)``)."""
    shapes: Shapes = {spec.name: tuple(spec.shape) for spec in graph.inputs}
    for node in graph.nodes:
        out = ops.output_shape(node, [shapes[name] for name in node.inputs])
        for name in node.outputs:
            shapes[name] = out
    return shapes


# -- helpers -----------------------------------------------------------------------------


def _replace_nodes(graph: Graph, nodes: list[Node], note: Optional[str] = None) -> Graph:
    notes = graph.notes + ([note] if note else [])
    return Graph(list(graph.inputs), list(graph.outputs), nodes, notes)


def _rename(nodes: list[Node], old: str, new: str) -> list[Node]:
    """Nodes with every reference to tensor ``old`` renamed to ``new``."""
    renamed = []
    for node in nodes:
        if old in node.inputs or old in node.outputs:
            node = dataclasses.replace(
                node,
                inputs=[new if t == old else t for t in node.inputs],
                outputs=[new if t == old else t for t in node.outputs],
            )
        renamed.append(node)
    return renamed


def _single_consumer(graph: Graph, tensor: str) -> Optional[Node]:
    consumers = graph.consumers(tensor)
    if len(consumers) == 1 and tensor not in graph.outputs:
        return consumers[0]
    return None


# -- passes ------------------------------------------------------------------------------


def remove_passthrough(graph: Graph) -> Graph:
    """Drop dropout/noise and identity nodes; Core ML has no dropout, so say so."""
    for node in graph.nodes:
        if node.op not in ("dropout", "identity"):
            continue
        source, result = node.inputs[0], node.outputs[0]
        nodes = [n for n in graph.nodes if n is not node]
        if result not in graph.outputs:
            nodes = _rename(nodes, result, source)
        elif graph.producer(source) is not None and source not in graph.outputs:
            nodes = _rename(nodes, source, result)  # keep the model's output name
        else:
            raise UnsupportedError(
                f"{node.name!r} ({node.op}) passes a model input straight to "
                "the output; there is nothing to export"
            )
        note = None
        if node.op == "dropout":
            note = (
                f"removed {node.name!r} ({node.source or 'dropout'}): it acts only in training "
                "and Core ML has no such layer, so on-device training runs without it (and may "
                "overfit sooner)"
            )
        return remove_passthrough(_replace_nodes(graph, nodes, note))
    return graph


def _bn_factors(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """Batch norm as ``y = a*x + b`` per channel (inference mode: moving statistics)."""
    w = node.weights
    a = w["gamma"] / np.sqrt(w["variance"].astype(np.float64) + node.attrs.get("eps", 1e-3))
    b = w["beta"] - w["mean"] * a
    return a, b


def fold_batchnorm(graph: Graph, trainable_path: set[str]) -> Graph:
    """Fold frozen batch norms into the frozen conv/dense before them; otherwise turn them
    into a ``scale`` node, except on the trainable path, where Core ML needs a batchnorm layer
    to backpropagate through (the backprop check decides whether that is acceptable)."""
    nodes = list(graph.nodes)
    notes = list(graph.notes)
    for node in graph.nodes:
        if node.op != "batchnorm" or node.trainable:
            continue
        a, b = _bn_factors(node)
        index = nodes.index(node)
        producer = next((n for n in nodes if node.inputs[0] in n.outputs), None)
        foldable = (
            producer is not None
            and producer.op in ("conv2d", "dense")
            and not producer.trainable
            and _single_consumer(_replace_nodes(graph, nodes), node.inputs[0]) is node
        )
        if foldable and producer is not None:
            weight = producer.weights["weight"]
            weight = weight * a.astype(np.float32).reshape((-1,) + (1,) * (weight.ndim - 1))
            bias = producer.weights.get("bias", np.zeros(weight.shape[0]))
            folded = dataclasses.replace(
                producer,
                weights={"weight": weight, "bias": (bias * a + b).astype(np.float32)},
                outputs=list(node.outputs),
            )
            nodes[nodes.index(producer)] = folded
            del nodes[index]
            notes.append(f"folded batch norm {node.name!r} into {producer.name!r}")
        elif node.name not in trainable_path:
            nodes[index] = Node(
                "scale",
                node.name,
                list(node.inputs),
                list(node.outputs),
                weights={"scale": a.astype(np.float32), "bias": b.astype(np.float32)},
                source=node.source,
            )
            notes.append(
                f"batch norm {node.name!r} has nothing to fold into: written as a per-channel scale"
            )
    return Graph(list(graph.inputs), list(graph.outputs), nodes, notes)


def fix_flatten_order(graph: Graph, shapes: Shapes) -> Graph:
    """Make flattens channel-first, permuting the columns of the dense layers they feed.

    A source that flattens in (H, W, C) order (Keras) marks its flatten ``order='hwc'``.
    Core ML's channel-first flatten gives (C, H, W) order, so the dense after it must read
    its inputs in that order. A flatten that feeds anything but dense layers keeps 'hwc'
    and the backend writes Core ML's channel-last flatten instead.
    """
    nodes = list(graph.nodes)
    notes = list(graph.notes)
    for node in graph.nodes:
        if node.op != "flatten" or node.attrs.get("order", "chw") == "chw":
            continue
        shape = shapes[node.inputs[0]]
        index = nodes.index(node)
        if len(shape) != 3 or shape[1] * shape[2] == 1:
            nodes[index] = dataclasses.replace(node, attrs={**node.attrs, "order": "chw"})
            continue
        consumers = [n for n in nodes if node.outputs[0] in n.inputs]
        if node.outputs[0] in graph.outputs or not all(n.op == "dense" for n in consumers):
            continue
        c, h, w = shape
        for consumer in consumers:
            weight = consumer.weights["weight"]
            permuted = weight.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(weight.shape)
            nodes[nodes.index(consumer)] = dataclasses.replace(
                consumer, weights={**consumer.weights, "weight": np.ascontiguousarray(permuted)}
            )
        nodes[index] = dataclasses.replace(node, attrs={**node.attrs, "order": "chw"})
        names = ", ".join(repr(n.name) for n in consumers)
        notes.append(
            f"flatten {node.name!r}: reordered the input columns of {names} from "
            "(H, W, C) to Core ML's (C, H, W) order"
        )
    return Graph(list(graph.inputs), list(graph.outputs), nodes, notes)


def append_softmax(graph: Graph) -> Graph:
    """Add a softmax after the logits output so Core ML's cross-entropy can read it.

    The logits tensor is renamed ``<output>_logits`` so the model output keeps its name.
    """
    output = graph.outputs[0]
    producer = graph.producer(output)
    if producer is not None and producer.op == "softmax":
        raise UnsupportedError(
            f"the loss is on logits (from_logits=True), but output {output!r} "
            f"already comes from softmax {producer.name!r}; drop from_logits or "
            "the softmax"
        )
    logits = f"{output}_logits"
    nodes = _rename(graph.nodes, output, logits)
    nodes.append(Node("softmax", f"{output}_softmax", [logits], [output], source="added"))
    note = (
        f"appended softmax {output + '_softmax'!r}: the loss was on logits; output "
        f"{output!r} now gives probabilities"
    )
    return _replace_nodes(graph, nodes, note)


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling windows on one axis: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-(i + 1) * size // out)) for i in range(out)]


def adaptive_average_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) matrix whose row i averages window i: adaptive average pooling as a map."""
    matrix = np.zeros((out, size))
    for row, (start, end) in enumerate(adaptive_windows(size, out)):
        matrix[row, start:end] = 1.0 / (end - start)
    return matrix


def fold_adaptive_pooling(graph: Graph) -> Graph:
    """Fold each ``adaptive_avg_pool2d`` into the frozen dense layer that reads its flattened
    output (torchvision's AlexNet and VGG: avgpool, flatten, dropout, Linear). The pooling is
    linear, so the dense layer's weight times the pooling matrix is one dense layer on the
    unpooled features: exact, and smaller (VGG's first Linear shrinks 5x at 96x96 input).
    Core ML has no layer for windows of different sizes, so anything else is refused."""
    for node in graph.nodes:
        if node.op != "adaptive_avg_pool2d":
            continue
        shapes = infer_shapes(graph)
        channels, height, width = shapes[node.inputs[0]]
        out_h, out_w = node.attrs["output"]
        flatten = _single_consumer(graph, node.outputs[0])
        dense = flatten and _single_consumer(graph, flatten.outputs[0])
        if (
            flatten is None
            or flatten.op != "flatten"
            or flatten.attrs.get("order") == "hwc"
            or dense is None
            or dense.op != "dense"
            or dense.trainable
        ):
            raise UnsupportedError(
                f"layer {node.name!r}: adaptive average pooling from {height}x{width} to "
                f"{out_h}x{out_w} has windows of different sizes, which no Core ML layer "
                "computes; it is exported only when a flatten and a frozen dense layer follow it "
                "(folded into that layer). Use an input size whose feature map the output size "
                "divides, or an output size of 1x1"
            )
        weight = dense.weights["weight"].astype(np.float64)
        weight = np.einsum(
            "ocij,ih,jw->ochw",
            weight.reshape(-1, channels, out_h, out_w),
            adaptive_average_matrix(height, out_h),
            adaptive_average_matrix(width, out_w),
        )
        folded = dataclasses.replace(
            dense,
            weights={**dense.weights, "weight": weight.reshape(len(weight), -1).astype(np.float32)},
        )
        nodes = [folded if n is dense else n for n in graph.nodes if n is not node]
        nodes = _rename(nodes, node.outputs[0], node.inputs[0])
        note = (
            f"adaptive average pooling {node.name!r} ({height}x{width} to {out_h}x{out_w}, "
            f"windows of different sizes) folded into the frozen dense layer {dense.name!r}"
        )
        return fold_adaptive_pooling(_replace_nodes(graph, nodes, note))
    return graph


def fold_image_scale(graph: Graph, shapes: Shapes) -> Graph:
    """Fold a per-channel scale right after an image input into the image preprocessing
    (Core ML: ``pixel*scale + bias[c]``, one scale for all channels)."""
    inputs = list(graph.inputs)
    nodes = list(graph.nodes)
    notes = list(graph.notes)
    for position, spec in enumerate(graph.inputs):
        if spec.image is None:
            continue
        node = _single_consumer(graph, spec.name)
        if node is None or node.op != "scale":
            continue
        scale = node.weights["scale"]
        if not np.allclose(scale, scale[0], rtol=0, atol=0):
            continue
        prior_scale = float(spec.image.get("scale", 1.0))
        prior_bias = np.broadcast_to(
            np.asarray(spec.image.get("bias", 0.0), np.float64), scale.shape
        )
        image = {
            **spec.image,
            "scale": prior_scale * float(scale[0]),
            "bias": [float(v) for v in prior_bias * scale + node.weights["bias"]],
        }
        inputs[position] = dataclasses.replace(spec, image=image)
        nodes.remove(node)
        nodes = _rename(nodes, node.outputs[0], spec.name)
        notes.append(
            f"{node.name!r} ({node.source or 'scale'}) became the image preprocessing of "
            f"input {spec.name!r}: scale {image['scale']:g}, bias "
            f"{', '.join(f'{b:g}' for b in image['bias'])}"
        )
    return Graph(inputs, list(graph.outputs), nodes, notes)


# -- what trains -------------------------------------------------------------------------


def trainable_nodes(graph: Graph) -> list[Node]:
    return [node for node in graph.nodes if node.trainable]


def _descendants(graph: Graph, roots: list[Node]) -> set[str]:
    reached = {t for node in roots for t in node.outputs}
    names = {node.name for node in roots}
    for node in graph.nodes:
        if any(t in reached for t in node.inputs):
            names.add(node.name)
            reached.update(node.outputs)
    return names


def _ancestors(graph: Graph, tensor: str) -> set[str]:
    wanted = {tensor}
    names: set[str] = set()
    for node in reversed(graph.nodes):
        if any(t in wanted for t in node.outputs):
            names.add(node.name)
            wanted.update(node.inputs)
    return names


def trainable_path(graph: Graph, loss_input: str) -> set[str]:
    """Names of the nodes between a trainable node and the loss input (both included):
    everything Core ML must backpropagate through."""
    return _descendants(graph, trainable_nodes(graph)) & _ancestors(graph, loss_input)


def check_trainable(
    graph: Graph, loss_kind: str, allow_unsupported: bool
) -> tuple[Graph, list[str]]:
    """Refuse what Core ML cannot train; with ``allow_unsupported`` freeze it with a warning.

    Returns the graph (with such nodes frozen) and the warnings.
    """
    warnings = []
    nodes = []
    for node in graph.nodes:
        if node.trainable and not ops.updatable(node):
            message = (
                f"layer {node.name!r} ({node.source or node.op}) is trainable, but Core ML can "
                f"only update dense, convolution and LSTM layers"
            )
            if not allow_unsupported:
                raise NotUpdatableError(
                    f"{message}; freeze it (layer.trainable = False, or leave it "
                    "out of trainable=[...]), or pass allow_unsupported=True to "
                    "export it frozen"
                )
            warnings.append(f"{message}: exported frozen")
            node = dataclasses.replace(node, trainable=False)
        nodes.append(node)
    graph = Graph(list(graph.inputs), list(graph.outputs), nodes, list(graph.notes))
    if not trainable_nodes(graph):
        raise NotUpdatableError(
            "no layer is trainable: mark the dense/convolution layers to train "
            "(layer.trainable = True, or trainable=['name', ...])"
        )
    return graph, warnings


def check_backprop(
    graph: Graph, loss_input: str, loss_kind: str, allow_unsupported: bool
) -> list[str]:
    """Raise ``NotUpdatableError`` when a layer Core ML cannot backpropagate through lies
    between a trainable layer and the loss; return warnings for the tolerated pitfalls."""
    path = trainable_path(graph, loss_input)
    trainable = trainable_nodes(graph)
    warnings = []
    for node in reversed(graph.nodes):  # loss side first, as Core ML walks it
        if node.name not in path or (node.trainable and ops.passes_gradients(node)):
            continue
        is_loss_softmax = node.op == "softmax" and loss_kind == "cce" and loss_input in node.outputs
        if is_loss_softmax:
            continue
        if not ops.passes_gradients(node):
            before = _ancestors(graph, node.inputs[0]) if node.inputs else set()
            for extra in node.inputs[1:]:
                before |= _ancestors(graph, extra)
            blocked = [n.name for n in trainable if n.name in before]
            after = [n.name for n in trainable if n.name not in before]
            kind = node.attrs.get("kind", node.op) if node.op == "activation" else node.op
            fix = (
                f"train only layers after it (e.g. trainable={after!r})"
                if after
                else "train only layers after it"
            )
            if blocked:
                raise NotUpdatableError(
                    f"layer {node.name!r} ({node.source or kind}: {kind}) cannot be backpropagated "
                    f"through by Core ML, but trainable layer {blocked[0]!r} lies before it"
                    f"{' (and ' + str(len(blocked) - 1) + ' more)' if len(blocked) > 1 else ''}; "
                    f"freeze the layers before {node.name!r} and {fix}"
                )
        if node.op == "batchnorm":
            message = (
                f"batch norm {node.name!r} lies on the trainable path; Core ML has failed "
                "on device to take its gradient (coremltools #492)"
            )
            if not allow_unsupported:
                raise NotUpdatableError(
                    f"{message}; freeze the layers before {node.name!r}, or "
                    "pass allow_unsupported=True to export it anyway"
                )
            warnings.append(message)
    return warnings


# -- the pipeline ------------------------------------------------------------------------


def run_passes(
    graph: Graph, *, loss_kind: str, from_logits: bool = False, allow_unsupported: bool = False
) -> tuple[Graph, list[str]]:
    """All passes in order; returns the graph the backend writes and the warnings."""
    if len(graph.outputs) != 1:
        raise UnsupportedError(
            f"the model has {len(graph.outputs)} outputs; an updatable Core ML "
            "model trains one loss on one output: export a single-output model"
        )
    graph = fold_adaptive_pooling(remove_passthrough(graph))
    graph, warnings = check_trainable(graph, loss_kind, allow_unsupported)
    if from_logits:
        graph = append_softmax(graph)
    output = graph.outputs[0]
    if loss_kind == "cce":
        producer = graph.producer(output)
        if producer is None or producer.op != "softmax":
            what = "an input" if producer is None else f"{producer.name!r} ({producer.op})"
            raise UnsupportedError(
                f"categorical cross-entropy needs a softmax output, but {output!r} comes from "
                f"{what}; end the model with a softmax, or use a loss with from_logits=True"
            )
    graph = fold_batchnorm(graph, trainable_path(graph, output))
    shapes = infer_shapes(graph)
    graph = fix_flatten_order(graph, shapes)
    graph = fold_image_scale(graph, shapes)
    warnings += check_backprop(graph, output, loss_kind, allow_unsupported)
    return graph, warnings


# -- frozen graphs (feature extractors of pipelines) ---------------------------------------


def cut_at(graph: Graph, tensor: str) -> Graph:
    """The part of ``graph`` that computes ``tensor``, which becomes the only output."""
    keep = _ancestors(graph, tensor)
    nodes = [node for node in graph.nodes if node.name in keep]
    dropped = len(graph.nodes) - len(nodes)
    note = f"cut at {tensor!r}: dropped the {dropped} layer(s) after it" if dropped else None
    return Graph(list(graph.inputs), [tensor], nodes, list(graph.notes) + ([note] if note else []))


def run_frozen_passes(graph: Graph) -> Graph:
    """The passes for a graph that never trains (a pipeline's frozen stage): no loss and no
    backprop rules; every node is frozen, so every batch norm folds or becomes a scale."""
    graph = fold_adaptive_pooling(remove_passthrough(graph))
    frozen = [dataclasses.replace(node, trainable=False) for node in graph.nodes]
    graph = fold_batchnorm(_replace_nodes(graph, frozen), set())
    shapes = infer_shapes(graph)
    graph = fix_flatten_order(graph, shapes)
    return fold_image_scale(graph, shapes)
