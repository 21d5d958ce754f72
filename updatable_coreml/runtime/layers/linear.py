"""innerProduct (forward, backward), batchedMatmul, and the embedding lookups (forward, size
estimate)."""

from __future__ import annotations

import math

import numpy as np

from ..registry import (
    WeightGetter,
    register_backward,
    register_estimate,
    register_exact_rank_backward,
    register_exact_rank_forward,
    register_forward,
)
from .common import Blobs, _classic, _fail, _per_example, _restore, _same_rank


def ip_matrix(x: np.ndarray, in_channels: int, exact_rank: bool = False) -> np.ndarray:
    """The ``(rows, C_in)`` matrix innerProduct multiplies (NeuralNetwork.proto
    InnerProductLayerParams): the last axis, or C, H, W together from Core ML rank 4 up.
    Under the rank-5 mapping a ``(B, C, H, W)`` blob is such a rank-5 tensor; under the
    exact-rank mapping it is the rank-3 tensor ``(x1, x2, x3)``, whose rows are its last
    axis."""
    flatten = x.ndim >= (5 if exact_rank else 4)
    rows = x.reshape(-1, math.prod(x.shape[-3:])) if flatten else x.reshape(-1, x.shape[-1])
    if rows.shape[1] != in_channels:
        raise ValueError(
            f"input has {rows.shape[1]} values per row, innerProduct expects "
            f"inputChannels={in_channels}"
        )
    return rows


def ip_output_shape(
    shape: tuple[int, ...], out_channels: int, exact_rank: bool = False
) -> tuple[int, ...]:
    if len(shape) >= (5 if exact_rank else 4):
        return shape[:-3] + (out_channels, 1, 1)
    return shape[:-1] + (out_channels,)


@register_forward("innerProduct")
def inner_product(layer, inputs, weight, exact_rank: bool = False):
    params = layer.innerProduct
    x = inputs[0]
    w = weight("weights").reshape(int(params.outputChannels), int(params.inputChannels))
    y = ip_matrix(x, int(params.inputChannels), exact_rank) @ w.T
    if params.hasBias:
        y += weight("bias")
    return [y.reshape(ip_output_shape(x.shape, int(params.outputChannels), exact_rank))]


@register_backward("innerProduct")
def inner_product_backward(layer, x, y, gy, weight, want_input, exact_rank: bool = False):
    params = layer.innerProduct
    cin, cout = int(params.inputChannels), int(params.outputChannels)
    g = gy.reshape(-1, cout)
    grads = {}
    if layer.isUpdatable:
        grads["weights"] = (g.T @ ip_matrix(x, cin, exact_rank)).ravel()
        if params.hasBias:
            grads["bias"] = g.sum(axis=0)
    if not want_input:
        return None, grads
    return (g @ weight("weights").reshape(cout, cin)).reshape(x.shape), grads


@register_exact_rank_forward("innerProduct")
def inner_product_exact_rank(layer, inputs, weight):
    return inner_product(layer, inputs, weight, exact_rank=True)


@register_exact_rank_backward("innerProduct")
def inner_product_backward_exact_rank(layer, x, y, gy, weight, want_input):
    return inner_product_backward(layer, x, y, gy, weight, want_input, exact_rank=True)


def _lookup(layer, indices: np.ndarray, table: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Rows of ``table`` (vocab, size) for float class indices, plus an optional bias."""
    idx = indices.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0] or np.any(idx != indices)):
        raise _fail(layer, f"inputs must be whole class indices in [0, {table.shape[0] - 1}]")
    rows = table[idx]
    return rows if bias is None else rows + bias


@register_forward("embedding")
def embedding(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Classic embedding: each example's channel holds one class index."""
    params = layer.embedding
    x = inputs[0]
    view = _classic(x)
    if view.shape[-3:] != (1, 1, 1):
        raise _fail(layer, f"input must hold one index per example, got shape {x.shape}")
    table = weight("weights").reshape(int(params.outputChannels), int(params.inputDim)).T
    rows = _lookup(layer, view[..., 0, 0, 0], table, weight("bias") if params.hasBias else None)
    return [_restore(rows[..., None, None], x.ndim)]


@register_forward("embeddingND")
def embedding_nd(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """ND embedding: the last axis (size 1) of the index tensor becomes ``embeddingSize``."""
    params = layer.embeddingND
    x = inputs[0]
    if x.shape[-1] != 1:
        raise _fail(layer, f"the last axis of the input must be 1, got shape {x.shape}")
    table = weight("weights").reshape(int(params.embeddingSize), int(params.vocabSize)).T
    return [_lookup(layer, x[..., 0], table, weight("bias") if params.hasBias else None)]


@register_estimate("embedding")
def embedding_size(layer, inputs) -> int:
    return _per_example(inputs[0]) * max(int(layer.embedding.outputChannels), 1)


@register_estimate("embeddingND")
def embedding_nd_size(layer, inputs) -> int:
    return _per_example(inputs[0]) * max(int(layer.embeddingND.embeddingSize), 1)


@register_forward("batchedMatmul")
def batched_matmul(layer, inputs: Blobs, weight: WeightGetter) -> list:
    """Matrix product over the last two axes, broadcasting the others (NeuralNetwork.proto
    ``BatchedMatMulLayerParams``): two inputs ``a @ b`` (rank-1 operands as a row / a column,
    like numpy), or one input times the stored ``[X1, X2]`` weight (stored column-major) plus
    an optional bias."""
    params = layer.batchedMatmul
    if len(inputs) == 1:
        x = inputs[0]
        rows, cols = int(params.weightMatrixFirstDimension), int(params.weightMatrixSecondDimension)
        w = weight("weights")
        if w.size != rows * cols or x.shape[-1] != rows:
            raise _fail(
                layer,
                f"the weights hold {w.size} values for [{rows}, {cols}] and the "
                f"input's last axis is {x.shape[-1]}",
            )
        y = x @ w.reshape(cols, rows).T
        return [y + weight("bias") if params.hasBias else y]
    if len(inputs) != 2:
        raise _fail(layer, f"needs 1 or 2 inputs, got {len(inputs)}")
    a, b = inputs
    left_vector, right_vector = a.ndim == 2, b.ndim == 2
    a = a[:, None, :] if left_vector else (np.swapaxes(a, -1, -2) if params.transposeA else a)
    b = b[:, :, None] if right_vector else (np.swapaxes(b, -1, -2) if params.transposeB else b)
    a, b = _same_rank([a, b])
    if a.shape[-1] != b.shape[-2]:
        raise _fail(layer, f"inner dimensions differ: {a.shape[1:]} @ {b.shape[1:]}")
    y = np.matmul(a, b)
    if left_vector:
        y = y[..., 0, :]
    if right_vector:
        y = y[..., 0]
    return [y]
