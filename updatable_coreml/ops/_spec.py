"""Small helpers the op writers share to fill Core ML ``NeuralNetwork`` messages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..ir import Node
from ._table import Shapes, Writer


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def put_weights(params: Any, array: np.ndarray, updatable: bool = False) -> None:
    """Write ``array`` as fp32 ``floatValue`` into an empty ``WeightParams``.

    The packed field is built from NumPy bytes and merged in one protobuf call (field 1
    packed: tag 0x0A, varint byte length, little-endian float32 bytes): filling the repeated
    field element by element costs seconds for a ResNet50.
    """
    array = np.asarray(array)
    header = b"\x0a" + _varint(4 * array.size)
    buffer = bytearray(len(header) + 4 * array.size)
    buffer[: len(header)] = header
    np.frombuffer(buffer, dtype="<f4", offset=len(header)).reshape(array.shape)[...] = array
    params.MergeFromString(memoryview(buffer))
    if updatable:
        params.isUpdatable = True


def new_layer(nn: Any, name: str, inputs: Sequence[str], outputs: Sequence[str]) -> Any:
    """Append a ``NeuralNetworkLayer`` named ``name`` with its input and output blobs."""
    layer = nn.layers.add()
    layer.name = name
    layer.input.extend(inputs)
    layer.output.extend(outputs)
    return layer


def border(padding: Any, pads: tuple[int, int, int, int]) -> None:
    """Explicit (t, b, l, r) pads into a ``ValidPadding`` / ``PaddingLayerParams`` message."""
    for start, end in ((pads[0], pads[1]), (pads[2], pads[3])):
        amount = padding.paddingAmounts.borderAmounts.add()
        amount.startEdgeSize, amount.endEdgeSize = int(start), int(end)


def pointwise(params: Any, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
    """Fill a ``ConvolutionLayerParams`` as a 1x1 convolution with ``weight`` (out, in): the
    same linear map at every position (per-token projections, channel permutations)."""
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


def one_layer(fill: Callable[[Any, Node, Shapes], None]) -> Writer:
    """A writer for an op written as one layer named after the node: ``fill(layer, node,
    shapes)`` sets the params; a trainable node's layer is marked updatable."""

    def write(nn: Any, node: Node, shapes: Shapes) -> None:
        layer = new_layer(nn, node.name, node.inputs, node.outputs)
        fill(layer, node, shapes)
        if node.trainable:
            layer.isUpdatable = True

    write.__doc__ = fill.__doc__
    return write
