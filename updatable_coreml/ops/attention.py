"""Multi-head self-attention over the positions of a (C, H, W) tensor (a ViT's tokens).

Tokens are held channel-first like every other activation: C = the embedding, and the
H * W positions in row-major order are the tokens (a ViT's are (C, 1, S)). Per-token layers
(Linear, LayerNorm, GELU) are then the classic per-position layers; only the attention itself
needs N-d layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..ir import Node
from ._spec import new_layer, pointwise
from ._table import Layer, Shape, Shapes, define


def _attention_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    shape = tuple(shapes[0])
    heads = int(node.attrs["heads"])
    if len(shape) != 3:
        raise UnsupportedError(
            f"layer {node.name!r}: attention over a rank-{len(shape)} tensor {shape}; "
            "only the positions of a (C, H, W) tensor (tokens) are supported"
        )
    embed = shape[0]
    in_weight = node.weights.get("in_weight")
    fits = heads >= 1 and embed % heads == 0
    if node.op == "self_attention":
        fits = fits and in_weight is not None and in_weight.shape == (3 * embed, embed)
    else:
        fits = fits and len(shapes) == 3 and all(tuple(s) == shape for s in shapes)
    if not fits:
        raise UnsupportedError(
            f"layer {node.name!r}: {heads} heads over inputs {[tuple(s) for s in shapes]}"
            + (
                f" with an in-projection of shape {in_weight.shape}"
                if in_weight is not None
                else ""
            )
            + "; query, key and value must be (C, H, W) alike (an in-projection (3 * C, C)), "
            "C divisible by the heads"
        )
    return shape


#: The layers of the attention itself (``_write_heads``), after the query, key and value.
_HEADS: tuple[Layer, ...] = (
    ("reshapeStatic", None),
    ("reshapeStatic", None),
    ("reshapeStatic", None),
    ("batchedMatmul", None),
    ("softmaxND", None),
    ("batchedMatmul", None),
    ("reshapeStatic", None),
)


def _self_attention_layers(attrs: Mapping[str, Any]) -> tuple[Layer, ...]:
    convolution: Layer = ("convolution", None)
    return (convolution, convolution, convolution, *_HEADS, convolution)


def _dot_product_layers(attrs: Mapping[str, Any]) -> tuple[Layer, ...]:
    return (("multiply", None), *_HEADS)


def _pointwise(
    nn: Any, name: str, x: str, output: str, weight: np.ndarray, bias: np.ndarray | None
) -> None:
    """A 1x1 ``convolution`` layer: the same Linear at every position (token)."""
    pointwise(new_layer(nn, name, [x], [output]).convolution, weight, bias)


def _write_heads(
    nn: Any, name: str, blobs: Sequence[str], merged: tuple[str, str], shape: Shape, heads: int
) -> None:
    """``softmax(q k^T) v`` per head, for a query already scaled.

    With the tokens on the positions of (1, E, H, W) blobs, a ``reshapeStatic`` to
    (1, heads, d, H * W) splits the embedding into heads without moving an element
    (E = heads * d in C order, torch's split too). Then for each head, with T = H * W:
    ``batchedMatmul(q, k, transposeA)`` gives the (T, T) scores ``q^T k``, ``softmaxND`` over
    the last axis normalizes over the keys, and ``batchedMatmul(v, p, transposeB)`` gives
    ``v p^T``: (d, T), each token's weighted sum of values, back in the channel-first layout,
    so a ``reshapeStatic`` restores (1, E, H, W): the layer and blob named ``merged``.
    ``batchedMatmul``, ``softmaxND`` and ``reshapeStatic`` are iOS 13 layers
    (NeuralNetwork.proto), so the network uses the exact-rank shape mapping, where the
    leading 1 is part of each shape."""
    embed, height, width = shape
    split = []
    for role, blob in zip(("query", "key", "value"), blobs, strict=True):
        split.append(f"{name}_{role}_heads")
        reshape = new_layer(nn, split[-1], [blob], [split[-1]]).reshapeStatic
        reshape.targetShape.extend((1, heads, embed // heads, height * width))
    query, key, value = split
    scores, weights, mixed = f"{name}_scores", f"{name}_weights", f"{name}_mixed"
    new_layer(nn, scores, [query, key], [scores]).batchedMatmul.transposeA = True
    new_layer(nn, weights, [scores], [weights]).softmaxND.axis = -1
    new_layer(nn, mixed, [value, weights], [mixed]).batchedMatmul.transposeB = True
    layer, output = merged
    new_layer(nn, layer, [mixed], [output]).reshapeStatic.targetShape.extend(
        (1, embed, height, width)
    )


def _write_self_attention(nn: Any, node: Node, shapes: Shapes) -> None:
    """torch's ``nn.MultiheadAttention`` for self-attention: the query, key and value
    projections as 1x1 convolutions (the ``1 / sqrt(d)`` scale folded into the query's), the
    heads (``_write_heads``), the output projection."""
    name, (x,) = node.name, node.inputs
    embed = shapes[x][0]
    heads = int(node.attrs["heads"])
    in_weight, in_bias = node.weights["in_weight"], node.weights.get("in_bias")
    scale = np.float32(1.0 / np.sqrt(embed // heads))
    projected = []
    for i, role in enumerate(("query", "key", "value")):
        rows = slice(i * embed, (i + 1) * embed)
        weight = in_weight[rows]
        bias = None if in_bias is None else in_bias[rows]
        if role == "query":
            weight = weight * scale
            bias = None if bias is None else bias * scale
        projected.append(f"{name}_{role}")
        _pointwise(nn, projected[-1], x, projected[-1], weight, bias)
    merged = f"{name}_merged"
    _write_heads(nn, name, projected, (merged, merged), shapes[x], heads)
    (output,) = node.outputs
    _pointwise(nn, name, merged, output, node.weights["out_weight"], node.weights.get("out_bias"))


def _write_dot_product(nn: Any, node: Node, shapes: Shapes) -> None:
    """torch's ``scaled_dot_product_attention`` of projected queries, keys and values: the
    query scaled by a single-input ``multiply`` (alpha), then the heads (``_write_heads``)."""
    name, (query, key, value) = node.name, node.inputs
    scaled = f"{name}_query_scaled"
    new_layer(nn, scaled, [query], [scaled]).multiply.alpha = float(node.attrs["scale"])
    (output,) = node.outputs
    heads = int(node.attrs["heads"])
    _write_heads(nn, name, (scaled, key, value), (name, output), shapes[query], heads)


define(
    "self_attention",
    family="attention",
    doc="multi-head self-attention over the H * W positions (tokens) of a (C, H, W) tensor: "
    "a: heads; w: in_weight (3C, C) (query, key, value rows), in_bias (3C,) optional, "
    "out_weight (C, C), out_bias (C,) optional",
    shape=_attention_shape,
    write=_write_self_attention,
    layers=_self_attention_layers,
)
define(
    "dot_product_attention",
    family="attention",
    doc="softmax(scale * q k^T) v per head over the H * W positions (tokens) of three (C, H, "
    "W) inputs (query, key, value; channel = head * d + i): a: heads, scale",
    shape=_attention_shape,
    write=_write_dot_product,
    layers=_dot_product_layers,
)
