"""Rewrites ``make-updatable`` applies so that a classifier made by coremltools' own converter
(``ct.convert(..., convert_to="neuralnetwork")``) can train on device.

1. A chosen ``batchedMatmul`` with constant weights (what ct.convert writes for a Keras
   ``Dense``) becomes the ``innerProduct`` it computes: Core ML updates only convolution and
   innerProduct layers (``coreml_rules``). Per ``NeuralNetwork.proto`` a one-input
   batchedMatmul computes ``X W + b`` with ``W`` of shape (weightMatrixFirstDimension = C_in,
   weightMatrixSecondDimension = C_out) on the last axis of ``X``, which is what an
   innerProduct with the same stored numbers computes on a rank-2 blob (both store
   ``(C_out, C_in)`` row-major). A bias of zeros is added when
   there is none (ct.convert drops a zero bias), so the bias trains as it did in the source.
2. The ``softmaxND`` that ends the classifier becomes the classic ``softmax`` Core ML's
   categorical cross-entropy needs.

Why the softmax is needed: Apple's updatable validator accepts a cross-entropy loss only when
its input "is generated from a softmax output", and it means the classic ``softmax`` layer type
(``UpdatableNeuralNetworkValidator.cpp``, ``validateLossLayer``: under
``mlmodel/src/NeuralNetwork/`` in tag 3.0, ``mlmodel/src/Validation/NeuralNetwork/`` in 4.0 to
9.0, the same check). coremltools' converter writes ``softmaxND`` instead.

Why it is more than a type swap: ``NeuralNetwork.proto`` defines the classic softmax on a blob
of rank >= 3, normalising along axis -3, while ct.convert's classifier blobs are rank 2
``(1, C)`` with ``softmaxND`` over axis -1. An ``innerProduct`` keeps the rank of its input and
maps ``(x1, C_in, 1, 1)`` to ``(x1, C_out, 1, 1)`` (proto, InnerProductLayerParams), and
activations are elementwise, so one ``expandDims`` (axes -1, -2) in front of the first chosen
updatable layer carries rank 4 with the classes on axis -3 all the way to the softmax. It has
to sit *in front of* that layer: between an updatable layer and the loss Core ML allows only
layers it backpropagates through (``coreml_rules``), and ``expandDims`` is not one of them,
while before the first updatable layer any layer is allowed.

The probabilities blob therefore becomes ``(1, C, 1, 1)``. For a classifier it is read as a
dictionary of class probabilities, so the app sees no change; a declared MultiArray output
shape is rewritten to match and the change is reported.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import NotUpdatableError
from .spec_io import Spec
from .validator.ranks import infer_ranks

#: Layers between the first updatable layer and the softmax that give the same numbers on
#: ``(x1, C, 1, 1)`` as on ``(x1, C)``: innerProduct by its rank rule, activation elementwise.
RANK_NEUTRAL = frozenset({"innerProduct", "activation"})


def matmul_as_inner_product(nn, name: str) -> list[str]:
    """Rewrite layer ``name`` in place when it is a one-input batchedMatmul with weights and
    not transposed; returns the change (empty when there was nothing to do)."""
    from .runtime.weights import decode_weights  # the one reader of WeightParams storage

    layer = next(lay for lay in nn.layers if lay.name == name)
    if layer.WhichOneof("layer") != "batchedMatmul":
        return []
    body = layer.batchedMatmul
    if len(layer.input) != 1 or body.transposeA or body.transposeB:
        raise NotUpdatableError(
            f"layer {name!r} is a batchedMatmul of two inputs or with transposed operands; "
            "only a matrix product with constant weights (a dense layer) can train on device"
        )
    if body.weights.HasField("quantization") or body.bias.HasField("quantization"):
        raise NotUpdatableError(
            f"layer {name!r} has quantized weights, which cannot be updated on device; "
            "start from an fp32 model"
        )
    c_in, c_out = int(body.weightMatrixFirstDimension), int(body.weightMatrixSecondDimension)
    # stored column-major, i.e. already as innerProduct's (C_out, C_in) (coremltools' builder,
    # add_batched_mat_mul, writes np.transpose(W).flatten(); our runtime reads it that way)
    weights = decode_weights(body.weights, f"layer {name!r} weights").reshape(c_out, c_in)
    bias = (
        decode_weights(body.bias, f"layer {name!r} bias")
        if body.hasBias
        else np.zeros(c_out, np.float32)
    )
    layer.innerProduct.SetInParent()  # switches the layer oneof away from batchedMatmul
    product = layer.innerProduct
    product.inputChannels, product.outputChannels, product.hasBias = c_in, c_out, True
    product.weights.floatValue.extend(weights.astype(np.float32).ravel().tolist())
    product.bias.floatValue.extend(bias.astype(np.float32).tolist())
    del layer.inputTensor[:], layer.outputTensor[:]
    return [
        f"rewrote batchedMatmul {name!r} as the innerProduct it computes ({c_in} -> {c_out}, "
        "with a bias), the layer type Core ML can update"
    ]


def final_softmax(spec: Spec, nn):
    """The softmax or softmaxND writing the probabilities (or the single output), else
    ``None``."""
    wanted = {spec.description.predictedProbabilitiesName} - {""}
    if not wanted and len(spec.description.output) == 1:
        wanted = {spec.description.output[0].name}
    for layer in reversed(nn.layers):
        if layer.WhichOneof("layer") in SOFTMAXES and wanted & set(layer.output):
            return layer
    return None


SOFTMAXES = ("softmax", "softmaxND")


def use_classic_softmax(spec: Spec, nn, layer, trainable: list[str]) -> list[str]:
    """Make ``layer`` a classic softmax on a blob of rank >= 3: a softmaxND over the class
    axis of a rank-2 blob, or over axis -3 of a rank >= 3 blob, becomes one; the rank change
    goes in front of the first of ``trainable`` when the blob is rank 2 (also for a classic
    softmax already there, as coremltools' own updatable torch examples append one to a
    rank-2 blob). Returns the changes, one sentence each (none when the layer is fine);
    raises ``NotUpdatableError`` naming the layer when the network does not have that
    shape."""
    kind = layer.WhichOneof("layer")
    rank = infer_ranks(spec, nn).get(layer.input[0])
    if rank is None:
        if kind == "softmax":
            return []  # rank-5 semantics, or unknown: the validator's rank checks apply
        raise NotUpdatableError(
            f"layer {layer.name!r} is a softmaxND whose input rank we cannot infer, so it "
            "cannot be replaced by the classic softmax Core ML's cross-entropy needs; "
            "use --loss mse or edit the model so a classic softmax ends it"
        )
    axis = int(layer.softmaxND.axis) if kind == "softmaxND" else -1 if rank < 3 else -3
    axis = axis + rank if axis < 0 else axis
    first = None
    if rank == 2 and axis == 1:
        first = _first_trainable_on_chain(nn, layer, trainable)
    elif not (rank >= 3 and axis == rank - 3):  # classic softmax normalises along axis -3
        raise NotUpdatableError(
            f"layer {layer.name!r} is a {kind} over axis {axis} of a rank-{rank} blob; only "
            "the class axis of a rank-2 blob (or axis -3) can become Core ML's classic softmax"
        )
    name, output = layer.name, layer.output[0]
    changes = []
    if kind == "softmaxND":
        layer.softmax.SetInParent()  # switches the layer oneof away from softmaxND
        changes.append(
            f"replaced softmaxND {name!r} by a classic softmax (Core ML's cross-entropy "
            "loss reads a classic softmax)"
        )
    if first is not None:
        _drop_annotations(nn, first.name, name)
        changes.append(_insert_rank_change(nn, first.name))
        changes += _widen_declared_output(spec, output)
    elif changes:
        del layer.inputTensor[:], layer.outputTensor[:]
    return changes


def _first_trainable_on_chain(nn, softmax, trainable: list[str]):
    """Walk from the softmax up its single-input producers until every trainable layer is
    behind us; each layer passed must keep its numbers at rank 4."""
    producers = {out: lay for lay in nn.layers for out in lay.output}
    left = set(trainable)
    blob = softmax.input[0]
    first = None
    while left:
        layer = producers.get(blob)
        if layer is None:
            missing = ", ".join(sorted(left))
            raise NotUpdatableError(
                f"the updatable layers {missing} do not feed softmax {softmax.name!r} "
                "through a chain of single-input layers, so its rank cannot be changed "
                "in front of them"
            )
        kind = layer.WhichOneof("layer")
        if kind not in RANK_NEUTRAL or len(layer.input) != 1:
            raise NotUpdatableError(
                f"layer {layer.name!r} ({kind}) lies between an updatable layer and "
                f"softmax {softmax.name!r}; only innerProduct and activation layers can "
                "carry the rank-4 blob the classic softmax needs (choose layers after it)"
            )
        left.discard(layer.name)
        first = layer
        blob = layer.input[0]
    assert first is not None
    return first


def _insert_rank_change(nn, first_name: str) -> str:
    """An expandDims (axes -1, -2) in front of layer ``first_name``: ``(x1, C)`` becomes
    ``(x1, C, 1, 1)``. Rebuilds the layer list, so layer objects held before are stale."""
    index = [lay.name for lay in nn.layers].index(first_name)
    source = nn.layers[index].input[0]
    taken = {blob for lay in nn.layers for blob in (*lay.input, *lay.output)}
    taken |= {lay.name for lay in nn.layers}
    widened = _fresh(f"{source}_rank4", taken)
    new_name = _fresh(f"{first_name}_rank4", taken | {widened})
    new = nn.layers.add()
    new.name = new_name
    new.input.append(source)
    new.output.append(widened)
    new.expandDims.axes.extend([-1, -2])
    # protobuf repeated fields have no insert: move the new layer from the end to ``index``
    layers = list(nn.layers)
    reordered = layers[:index] + [layers[-1]] + layers[index:-1]
    copies = [type(lay)() for lay in reordered]
    for copy, lay in zip(copies, reordered, strict=True):
        copy.CopyFrom(lay)
    del nn.layers[:]
    nn.layers.extend(copies)
    nn.layers[index + 1].input[0] = widened
    return (
        f"inserted expandDims {new_name!r} (axes -1, -2) in front of {first_name!r}: its "
        f"input {source!r} becomes rank 4 (x1, C, 1, 1), the rank a classic softmax needs"
    )


def _drop_annotations(nn, first: str, softmax: str) -> None:
    """Rank annotations from the first updatable layer to the softmax would be stale after
    the rank change: drop them (they are optional; Core ML infers the ranks)."""
    names = [lay.name for lay in nn.layers]
    for lay in nn.layers[names.index(first) : names.index(softmax) + 1]:
        del lay.inputTensor[:], lay.outputTensor[:]


def _widen_declared_output(spec: Spec, blob: str) -> list[str]:
    for feature in spec.description.output:
        if feature.name != blob or feature.type.WhichOneof("Type") != "multiArrayType":
            continue
        shape = list(feature.type.multiArrayType.shape)
        if not shape:
            return []
        feature.type.multiArrayType.ClearField("shape")
        feature.type.multiArrayType.shape.extend([*shape, 1, 1])
        return [f"output {blob!r} is now declared {tuple([*shape, 1, 1])} (was {tuple(shape)})"]
    return []


def _fresh(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}{n}"
    return candidate


def classic_softmax_for_loss(
    spec: Spec, nn, loss_input: Optional[str], trainable: list[str]
) -> list[str]:
    """What ``make_updatable`` calls for a cross-entropy loss: the softmax the loss reads
    (the given ``loss_input``'s producer or, by default, the one writing the probabilities)
    is made a classic softmax on a rank >= 3 blob."""
    if loss_input is not None:
        producers = {out: lay for lay in nn.layers for out in lay.output}
        layer = producers.get(loss_input)
    else:
        layer = final_softmax(spec, nn)
    if layer is None or layer.WhichOneof("layer") not in SOFTMAXES:
        return []
    return use_classic_softmax(spec, nn, layer, trainable)
