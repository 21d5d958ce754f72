"""Layers with weights: Gemm/MatMul as dense layers, Conv, BatchNormalization."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ....errors import UnsupportedError
from ..context import (
    OnnxTranslation,
    _image_input,
    _unused,
    converts,
    explicit_pads,
    where,
)


def _vector_input(state: OnnxTranslation, node: Any) -> str:
    """Input 0 of a dense-like node, refused unless it is (batch, features)."""
    shape = state.full_shape(node.input[0], node)
    if len(shape) != 2:
        raise UnsupportedError(
            f"{where(node)} multiplies a rank-{len(shape)} tensor; Core ML's "
            "innerProduct needs a flat (batch, features) input: flatten before it"
        )
    return state.tensor(node.input[0], node)


@converts("Gemm")
def _gemm(state: OnnxTranslation, node: Any, a: dict) -> None:
    if a.get("transA", 0):
        raise UnsupportedError(
            f"{where(node)}: transA=1 transposes the batch; export A as (batch, features)"
        )
    x = _vector_input(state, node)
    weight = state.required_constant(node, 1)
    weight = float(a.get("alpha", 1.0)) * (weight if a.get("transB", 0) else weight.T)
    bias = state.constant(node, 2)
    vector = (
        None if bias is None else _per_output(float(a.get("beta", 1.0)) * bias, weight.shape[0])
    )
    if bias is not None and vector is None:
        raise UnsupportedError(
            f"{where(node)}: bias of shape {list(bias.shape)} differs per "
            f"example; expected ({weight.shape[0]},)"
        )
    state.emit(node, "dense", [x], weights={"weight": weight, "bias": vector})


def _per_output(bias: np.ndarray, size: int) -> Optional[np.ndarray]:
    """A constant that adds the same (size,) vector to every example of (batch, size), as that
    vector; None when it differs per example."""
    if bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1) or bias.size not in (1, size):
        return None
    return np.broadcast_to(bias.reshape(-1), (size,))


@converts("MatMul")
def _matmul(state: OnnxTranslation, node: Any, a: dict) -> None:
    """``x @ W`` with a constant ``W`` (in, out); a following ``Add`` of a constant becomes
    its bias (see ``_fold_bias``)."""
    weight = state.required_constant(node, 1)
    if weight.ndim != 2:
        raise UnsupportedError(
            f"{where(node)}: the constant operand has shape {list(weight.shape)}; "
            "only (in, out) matrices map to innerProduct"
        )
    state.emit(node, "dense", [_vector_input(state, node)], weights={"weight": weight.T})


def _fold_bias(state: OnnxTranslation, node: Any, x: str, constant: np.ndarray) -> bool:
    """Fold ``Add(MatMul(x, W), b)`` into the dense layer's bias when nothing else reads the
    product. Returns whether it did."""
    producer = state.graph.producer(state.tensors.get(x, ""))
    if (
        producer is None
        or producer.source != "onnx.MatMul"
        or "bias" in producer.weights
        or state.uses.get(x, 0) != 1
    ):
        return False
    vector = _per_output(constant, producer.weights["weight"].shape[0])
    if vector is None:
        return False
    producer.weights["bias"] = np.ascontiguousarray(vector, dtype=np.float32)
    producer.outputs = [node.output[0]]
    state.tensors[node.output[0]] = node.output[0]
    state.weight_sources[producer.name] |= {n for n in node.input if n in state.constants}
    return True


@converts("Conv")
def _conv(state: OnnxTranslation, node: Any, a: dict) -> None:
    _, height, width = _image_input(state, node)
    weight = state.required_constant(node, 1)
    strides = tuple(a.get("strides", (1, 1)))
    dilations = tuple(a.get("dilations", (1, 1)))
    pads = explicit_pads(node, a, (height, width), weight.shape[2:], strides, dilations)
    state.emit(
        node,
        "conv2d",
        [state.tensor(node.input[0], node)],
        attrs={
            "strides": strides,
            "dilations": dilations,
            "groups": int(a.get("group", 1)),
            "padding": pads,
        },
        weights={"weight": weight, "bias": state.constant(node, 2)},
    )


@converts("BatchNormalization")
def _batchnorm(state: OnnxTranslation, node: Any, a: dict) -> None:
    if a.get("training_mode", 0):
        raise UnsupportedError(
            f"{where(node)} is in training mode (batch statistics); export the model in eval mode"
        )
    _unused(state, node, "running statistics")
    gamma, beta, mean, variance = (state.constant(node, i) for i in range(1, 5))
    state.emit(
        node,
        "batchnorm",
        [state.tensor(node.input[0], node)],
        attrs={"eps": float(a.get("epsilon", 1e-5))},
        weights={"gamma": gamma, "beta": beta, "mean": mean, "variance": variance},
    )
