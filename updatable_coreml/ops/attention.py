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
from ._spec import border, new_layer, put_weights
from ._table import Layer, Shape, Shapes, define


def _attention_shape(node: Node, shapes: Sequence[Shape]) -> Shape:
    shape = tuple(shapes[0])
    heads = int(node.attrs["heads"])
    in_weight = node.weights["in_weight"]
    if len(shape) != 3:
        raise UnsupportedError(
            f"layer {node.name!r}: attention over a rank-{len(shape)} tensor {shape}; "
            "only the positions of a (C, H, W) tensor (tokens) are supported"
        )
    embed = shape[0]
    if heads < 1 or embed % heads or in_weight.shape != (3 * embed, embed):
        raise UnsupportedError(
            f"layer {node.name!r}: {heads} heads and an in-projection of shape "
            f"{in_weight.shape} do not fit an embedding of {embed} (needs (3 * E, E), E "
            "divisible by the heads)"
        )
    return shape


def _attention_layers(attrs: Mapping[str, Any]) -> tuple[Layer, ...]:
    projection: tuple[Layer, ...] = (("convolution", None), ("reshapeStatic", None))
    return (
        *projection * 3,
        ("batchedMatmul", None),
        ("softmaxND", None),
        ("batchedMatmul", None),
        ("reshapeStatic", None),
        ("convolution", None),
    )


def _pointwise(
    nn: Any, name: str, x: str, output: str, weight: np.ndarray, bias: np.ndarray | None
) -> None:
    """A 1x1 ``convolution``: the same Linear at every position."""
    params = new_layer(nn, name, [x], [output]).convolution
    params.outputChannels, params.kernelChannels = weight.shape
    params.nGroups = 1
    params.kernelSize.extend((1, 1))
    params.stride.extend((1, 1))
    params.dilationFactor.extend((1, 1))
    border(params.valid, (0, 0, 0, 0))
    put_weights(params.weights, weight[:, :, None, None])
    if bias is not None:
        params.hasBias = True
        put_weights(params.bias, bias)


def _write_attention(nn: Any, node: Node, shapes: Shapes) -> None:
    """``softmax(q k^T / sqrt(d)) v`` per head, then the output projection, as torch's
    ``nn.MultiheadAttention`` computes it for self-attention.

    With the tokens on the positions of a (1, E, H, W) blob, the projections are 1x1
    convolutions, and a ``reshapeStatic`` to (1, heads, d, H * W) splits the embedding into
    heads without moving an element (E = heads * d in C order, torch's split too). Then for
    each head, with T = H * W: ``batchedMatmul(q, k, transposeA)`` gives the (T, T) scores
    ``q^T k``, ``softmaxND`` over the last axis normalizes over the keys, and
    ``batchedMatmul(v, p, transposeB)`` gives ``v p^T``: (d, T), each token's weighted sum of
    values, back in the channel-first layout, so a ``reshapeStatic`` restores (1, E, H, W).
    The ``1 / sqrt(d)`` scale is folded into the query projection. ``batchedMatmul``,
    ``softmaxND`` and ``reshapeStatic`` are iOS 13 layers (NeuralNetwork.proto), so the
    network uses the exact-rank shape mapping, where the leading 1 is part of each shape."""
    name, (x,) = node.name, node.inputs
    embed, height, width = shapes[x]
    heads = int(node.attrs["heads"])
    depth, tokens = embed // heads, height * width
    in_weight, in_bias = node.weights["in_weight"], node.weights.get("in_bias")
    scale = np.float32(1.0 / np.sqrt(depth))
    split = {}
    for i, role in enumerate(("query", "key", "value")):
        rows = slice(i * embed, (i + 1) * embed)
        weight = in_weight[rows]
        bias = None if in_bias is None else in_bias[rows]
        if role == "query":
            weight = weight * scale
            bias = None if bias is None else bias * scale
        _pointwise(nn, f"{name}_{role}", x, f"{name}_{role}", weight, bias)
        split[role] = f"{name}_{role}_heads"
        reshape = new_layer(nn, split[role], [f"{name}_{role}"], [split[role]]).reshapeStatic
        reshape.targetShape.extend((1, heads, depth, tokens))
    scores, weights, mixed = f"{name}_scores", f"{name}_weights", f"{name}_mixed"
    new_layer(nn, scores, [split["query"], split["key"]], [scores]).batchedMatmul.transposeA = True
    new_layer(nn, weights, [scores], [weights]).softmaxND.axis = -1
    new_layer(nn, mixed, [split["value"], weights], [mixed]).batchedMatmul.transposeB = True
    merged = f"{name}_merged"
    new_layer(nn, merged, [mixed], [merged]).reshapeStatic.targetShape.extend(
        (1, embed, height, width)
    )
    (output,) = node.outputs
    _pointwise(nn, name, merged, output, node.weights["out_weight"], node.weights.get("out_bias"))


define(
    "self_attention",
    family="attention",
    doc="multi-head self-attention over the H * W positions (tokens) of a (C, H, W) tensor: "
    "a: heads; w: in_weight (3C, C) (query, key, value rows), in_bias (3C,) optional, "
    "out_weight (C, C), out_bias (C,) optional",
    shape=_attention_shape,
    write=_write_attention,
    layers=_attention_layers,
)
