"""Keras 3 frontend: a built Keras model -> IR graph -> updatable ``.mlmodel``.

One small converter per Keras layer class (``@converts("Dense")``); a layer without one is
an error that names it. Keras is channel-last; the IR is channel-first, so shapes and kernels
are transposed here, at the edge. What trains comes from ``layer.trainable`` (or an explicit
list), the loss and optimizer from ``model.compile`` (or arguments), and everything we had
to decide for the user is recorded in the returned ``ExportReport``.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ..errors import (ConfigError, ModelFileError, UnsupportedError, UpdatableCoreMLError,
                      first_line)
from ..export import ExportReport, export_graph
from ..frameworks import quiet_import
from ..ir import Graph, Node, TensorSpec
from ..options import ExportOptions
from ..registry import Registry
from ..runtime.assumptions import framework_form_note
from .common import unique_name
from ..training import SGD, Adam, Optimizer

PathLike = Union[str, os.PathLike]


def _keras():
    """keras, imported on first use without TensorFlow's start-up noise."""
    return quiet_import("keras")


# -- tracing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """A traced value: IR tensor name and its per-example channel-first shape."""

    name: str
    shape: tuple[int, ...]


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

    def add(self, op: str, name: str, inputs: Sequence[Tensor], *, attrs=None, weights=None,
            trainable: bool = False, source: str = "", output: Optional[str] = None) -> str:
        """Append a node; returns its output tensor name (``output`` or the node name)."""
        name = unique_name(self.node_names, name)
        out = self.tensor(name if output is None else output)
        self.nodes.append(Node(op, name, [t.name for t in inputs], [out], attrs=dict(attrs or {}),
                               weights=dict(weights or {}), trainable=trainable, source=source))
        return out

    def refuse(self, message: str) -> None:
        """An option we cannot carry: an error, or a warning with ``allow_unsupported``."""
        if not self.allow_unsupported:
            raise UnsupportedError(f"{message} (pass allow_unsupported=True to export anyway)")
        self.warnings.append(message)


Converter = Callable[[Context, Any, list, dict, tuple], str]
#: Keras layer class name -> converter ``(ctx, layer, inputs, kwargs, out_shape) -> IR tensor``;
#: ``inputs`` are ``Tensor`` s, ``out_shape`` the channel-first output shape. Only classes
#: from keras itself match (a subclass may change ``call``).
CONVERTERS = Registry("converter for Keras layer")
converts = CONVERTERS.register


def channel_first(shape: Sequence[Optional[int]], where: str) -> tuple[int, ...]:
    """Keras per-example shape (channel-last) -> IR shape (channel-first). A sequence
    ``(steps, features)`` is already the IR's ``(Seq, C)``."""
    if any(d is None for d in shape):
        raise UnsupportedError(f"{where}: shape {tuple(shape)} has unknown dimensions; Core ML "
                               "needs fixed sizes: give the Input an explicit shape")
    shape = tuple(int(d) for d in shape)
    if len(shape) == 3:
        return (shape[2], shape[0], shape[1])
    if len(shape) in (1, 2):
        return shape
    raise UnsupportedError(f"{where}: rank-{len(shape)} tensors {shape} are not supported; "
                           "use vectors (N,), sequences (steps, features) or images (H, W, C)")


def _source(layer) -> str:
    return f"keras.layers.{type(layer).__name__}"


def _functional(model):
    """The functional graph behind a model (Sequential keeps one once built)."""
    if isinstance(model, _keras().Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ConfigError(f"model {model.name!r} is not built: give it an Input layer or call "
                              "model.build(input_shape) before exporting")
        return graph
    if not hasattr(model, "_nodes_by_depth"):
        raise UnsupportedError(f"model {model.name!r} ({type(model).__name__}) is a subclassed "
                               "model; export a Sequential or functional model")
    return model


def _trace(ctx: Context, model, inputs: list[Tensor]) -> list[Tensor]:
    """Walk a functional graph in Keras's own execution order, converting each layer call."""
    graph = _functional(model)
    values: dict[int, Tensor] = {id(k): t for k, t in zip(graph.inputs, inputs)}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.is_input:
                continue
            layer = node.operation
            args, kwargs = node.arguments.fill_in(values)
            flat = _flatten_args(args)
            out_keras = node.outputs
            if isinstance(layer, _keras().Model):
                results = _trace(ctx, layer, flat)
            else:
                results = [_convert(ctx, layer, flat, kwargs, out_keras)]
            for keras_tensor, result in zip(out_keras, results):
                values[id(keras_tensor)] = result
    return [values[id(k)] for k in graph.outputs]


def _flatten_args(args) -> list[Tensor]:
    flat = []
    for arg in args:
        if isinstance(arg, Tensor):
            flat.append(arg)
        elif isinstance(arg, (list, tuple)):
            flat += _flatten_args(arg)
    return flat


def _convert(ctx: Context, layer, inputs: list[Tensor], kwargs: dict, out_keras) -> Tensor:
    kind = type(layer).__name__
    converter = CONVERTERS.get(kind) if type(layer).__module__.startswith("keras.") else None
    if converter is None:
        raise UnsupportedError(f"layer {layer.name!r} of class {type(layer).__module__}.{kind} "
                               "has no Core ML converter; supported: " + ", ".join(sorted(CONVERTERS)))
    if len(out_keras) != 1:
        raise UnsupportedError(f"layer {layer.name!r} ({kind}) has {len(out_keras)} outputs")
    ctx.seen.add(layer.name)
    _check_regularizers(ctx, layer)
    out_shape = channel_first(out_keras[0].shape[1:], f"layer {layer.name!r}")
    try:
        name = converter(ctx, layer, inputs, kwargs, out_shape)
    except UpdatableCoreMLError:
        raise
    except Exception as exc:  # a converter bug or an unexpected configuration: name the layer
        raise UnsupportedError(f"layer {layer.name!r} ({kind}) could not be converted "
                               f"({type(exc).__name__}: {first_line(exc)}); please report it "
                               "with the model") from exc
    return Tensor(name, out_shape)


def _check_regularizers(ctx: Context, layer) -> None:
    for attr in ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                 "depthwise_regularizer", "pointwise_regularizer"):
        if getattr(layer, attr, None) is not None and ctx.trains(layer):
            ctx.warnings.append(f"layer {layer.name!r}: {attr} is not carried to the device (Core ML "
                                "has no regularization); on-device training runs without it")


def _numpy(variable) -> np.ndarray:
    return np.asarray(_keras().ops.convert_to_numpy(variable), dtype=np.float32)


def _channels_last(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise UnsupportedError(f"layer {layer.name!r}: data_format={layer.data_format!r}; only "
                               "channels_last models are supported")


# -- activations -------------------------------------------------------------------------

#: Keras activation function name -> IR activation attrs (None: softmax op; {}: linear).
ACTIVATIONS: dict[str, Optional[dict]] = {
    "linear": {}, "relu": {"kind": "relu"}, "relu6": {"kind": "relu6", "min": 0.0, "max": 6.0},
    "sigmoid": {"kind": "sigmoid"}, "tanh": {"kind": "tanh"}, "softplus": {"kind": "softplus"},
    "softsign": {"kind": "softsign"}, "elu": {"kind": "elu", "alpha": 1.0},
    "leaky_relu": {"kind": "leaky_relu", "alpha": 0.2},
    "hard_sigmoid": {"kind": "hard_sigmoid", "alpha": 1 / 6, "beta": 0.5},
    "silu": {"kind": "silu"}, "swish": {"kind": "silu"}, "gelu": {"kind": "gelu", "approximate": False},
    "softmax": None,
}


def _activation_name(fn, where: str) -> str:
    keras = _keras()
    name = getattr(fn, "__name__", "")
    try:
        known = keras.activations.get(name) is fn
    except (ValueError, TypeError):
        known = False
    if not known or name not in ACTIVATIONS:
        raise UnsupportedError(f"{where}: activation {name or fn!r} is not supported; use one of "
                               + ", ".join(sorted(ACTIVATIONS)))
    return name


def _apply(ctx: Context, attrs: Optional[dict], name: str, x: Tensor, source: str,
           output: Optional[str] = None) -> str:
    """Add an activation node (or a softmax node for ``attrs=None``)."""
    if attrs is None:
        return ctx.add("softmax", name, [x], source=source, output=output)
    return ctx.add("activation", name, [x], attrs=attrs, source=source, output=output)


def _with_activation(ctx: Context, layer, build: Callable[[Optional[str]], str],
                     shape: tuple[int, ...]) -> str:
    """Run ``build(output_name)`` for the layer's linear part, then its ``activation=``.

    The layer's name stays on the weight node (people look for ``dense_1``); the activation
    node writes the tensor named after the layer.
    """
    kind = _activation_name(getattr(layer, "activation", None), f"layer {layer.name!r}")
    if kind == "linear":
        return build(None)
    linear = build(f"{layer.name}_preact")
    return _apply(ctx, ACTIVATIONS[kind], f"{layer.name}_{kind}", Tensor(linear, shape),
                  _source(layer), output=layer.name)


# -- converters: weights layers ----------------------------------------------------------


@converts("Dense")
def _dense(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    if getattr(layer, "quantization_mode", None):
        raise UnsupportedError(f"layer {layer.name!r}: quantized Dense ({layer.quantization_mode}) "
                               "cannot be exported; export the float model")
    kernel = _numpy(layer.kernel)
    weights = {"weight": np.ascontiguousarray(kernel.T)}
    if layer.use_bias:
        weights["bias"] = _numpy(layer.bias)
    if len(x.shape) == 1:
        op, attrs = "dense", {}
    elif len(x.shape) == 3:  # Dense on (H, W, C) acts per pixel: a 1x1 convolution
        op, attrs = "conv2d", {"strides": (1, 1), "padding": "valid"}
        weights["weight"] = weights["weight"][:, :, None, None]
    else:
        raise UnsupportedError(f"layer {layer.name!r}: Dense on a rank-{len(x.shape)} input "
                               f"{x.shape} is not supported")

    def build(output):
        return ctx.add(op, layer.name, [x], attrs=attrs, weights=weights,
                       trainable=ctx.trains(layer), source=_source(layer), output=output)

    return _with_activation(ctx, layer, build, out_shape)


def _conv_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras kernel (kh, kw, in, out) -> IR weight (out, in, kh, kw).

    Done as two cache-friendly transposes: a direct 4-D transpose is ~3x slower on
    ResNet-sized kernels, and export time is dominated by moving weights.
    """
    kh, kw, cin, cout = kernel.shape
    per_tap = np.ascontiguousarray(kernel.reshape(kh * kw, cin, cout).transpose(0, 2, 1))
    return np.ascontiguousarray(per_tap.reshape(kh * kw, cout * cin).T).reshape(cout, cin, kh, kw)


def _conv_attrs(layer, where: str) -> dict:
    _channels_last(layer)
    if layer.padding not in ("valid", "same"):
        raise UnsupportedError(f"{where}: padding={layer.padding!r} is not supported")
    return {"strides": tuple(layer.strides), "dilations": tuple(layer.dilation_rate),
            "padding": layer.padding}


def _conv_node(ctx: Context, layer, x: Tensor, groups: int, weight: np.ndarray, out_shape):
    """One Keras convolution (plain or depthwise) as an IR conv2d, activation fused after."""
    attrs = {**_conv_attrs(layer, f"layer {layer.name!r}"), "groups": groups}
    weights = {"weight": weight}
    if layer.use_bias:
        weights["bias"] = _numpy(layer.bias)

    def build(output):
        return ctx.add("conv2d", layer.name, [x], attrs=attrs, weights=weights,
                       trainable=ctx.trains(layer), source=_source(layer), output=output)

    return _with_activation(ctx, layer, build, out_shape)


@converts("Conv2D")
def _conv2d(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    return _conv_node(ctx, layer, x, int(layer.groups), _conv_weight(_numpy(layer.kernel)), out_shape)


def _depthwise_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras depthwise kernel (kh, kw, C, M) -> grouped conv weight (C*M, 1, kh, kw);
    output channel c*M + m reads input channel c, as Keras orders them."""
    kh, kw, channels, multiplier = kernel.shape
    return np.ascontiguousarray(kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw))


@converts("DepthwiseConv2D")
def _depthwise(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    return _conv_node(ctx, layer, x, x.shape[0], _depthwise_weight(_numpy(layer.kernel)), out_shape)


@converts("SeparableConv2D")
def _separable(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    attrs = {**_conv_attrs(layer, f"layer {layer.name!r}"), "groups": x.shape[0]}
    depthwise = _depthwise_weight(_numpy(layer.depthwise_kernel))
    trains = ctx.trains(layer)
    mid = ctx.add("conv2d", f"{layer.name}_depthwise", [x], attrs=attrs,
                  weights={"weight": depthwise}, trainable=trains, source=_source(layer))
    mid_shape = (depthwise.shape[0], *out_shape[1:])
    pointwise = {"weight": _conv_weight(_numpy(layer.pointwise_kernel))}
    if layer.use_bias:
        pointwise["bias"] = _numpy(layer.bias)

    def build(output):
        return ctx.add("conv2d", layer.name, [Tensor(mid, mid_shape)], weights=pointwise,
                       attrs={"strides": (1, 1), "padding": "valid"}, trainable=trains,
                       source=_source(layer), output=output)

    return _with_activation(ctx, layer, build, out_shape)


@converts("BatchNormalization")
def _batchnorm(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    rank = len(x.shape)
    axis = layer.axis if layer.axis >= 0 else layer.axis + rank + 1
    if axis != rank:
        raise UnsupportedError(f"layer {layer.name!r}: batch normalization over axis {layer.axis} "
                               "is not supported; normalize the channel (last) axis")
    if rank == 2:
        raise UnsupportedError(f"layer {layer.name!r}: batch normalization of sequences is not supported")
    channels = x.shape[0]
    weights = {"gamma": _numpy(layer.gamma) if layer.scale else np.ones(channels, np.float32),
               "beta": _numpy(layer.beta) if layer.center else np.zeros(channels, np.float32),
               "mean": _numpy(layer.moving_mean), "variance": _numpy(layer.moving_variance)}
    return ctx.add("batchnorm", layer.name, [x], attrs={"eps": float(layer.epsilon)},
                   weights=weights, trainable=ctx.trains(layer), source=_source(layer))


# -- converters: sequence layers ---------------------------------------------------------
# A sequence is (Seq, C) in the IR; Core ML carries its steps on the Seq axis of the rank-5
# mapping (see docs/keras.md, "Sequence models").

#: Activations a Keras LSTM may use: bounded ones, because Core ML clips the LSTM's gate
#: pre-activations and cell to [-50, 50], which would change an unbounded activation's result.
LSTM_ACTIVATIONS = ("sigmoid", "tanh", "hard_sigmoid")


@converts("Embedding")
def _embedding(ctx: Context, layer, inputs, kwargs, out_shape):
    """Token ids ``(steps,)`` -> ``(steps, dim)``. The model input it reads becomes a sequence
    of one-value steps, ``(Seq, 1)`` (see ``keras_to_graph``)."""
    (x,) = inputs
    where = f"layer {layer.name!r}"
    if getattr(layer, "quantization_mode", None):
        raise UnsupportedError(f"{where}: quantized Embedding ({layer.quantization_mode}) cannot "
                               "be exported; export the float model")
    if len(x.shape) != 1 or any(x.name in node.outputs for node in ctx.nodes):
        raise UnsupportedError(f"{where}: an Embedding must read a model input of token ids shaped "
                               f"(steps,), not {x.shape}")
    if layer.mask_zero:
        raise UnsupportedError(f"{where}: mask_zero=True cannot be carried: Core ML has no "
                               "masking, so the layers after it would process padding tokens (0) "
                               "like any other token; export a copy built with mask_zero=False")
    return ctx.add("embedding", layer.name, [Tensor(x.name, (x.shape[0], 1))],
                   weights={"weight": _numpy(layer.embeddings)}, trainable=ctx.trains(layer),
                   source=_source(layer))


def _lstm_activation(fn, where: str) -> dict:
    name = _activation_name(fn, where)
    if name not in LSTM_ACTIVATIONS:
        raise UnsupportedError(f"{where}: activation {name!r} in an LSTM is not supported; Core ML "
                               "clips LSTM pre-activations to [-50, 50], so use one of "
                               + ", ".join(LSTM_ACTIVATIONS))
    return ACTIVATIONS[name]


@converts("LSTM")
def _lstm(ctx: Context, layer, inputs, kwargs, out_shape):
    """An LSTM from zero state, as a uniDirectionalLSTM (experimental when trainable)."""
    (x,) = inputs
    where = f"layer {layer.name!r}"
    if len(x.shape) != 2:
        raise UnsupportedError(f"{where}: an LSTM needs a sequence (steps, features), got {x.shape}")
    if layer.stateful:
        raise UnsupportedError(f"{where}: stateful=True keeps state between batches, but a Core ML "
                               "prediction always starts from zero state; export with stateful=False")
    if layer.go_backwards:
        raise UnsupportedError(f"{where}: go_backwards=True is not supported (the reference runtime "
                               "cannot check Core ML's reverseInput); reverse the sequence instead")
    if kwargs.get("initial_state") is not None or kwargs.get("mask") is not None:
        raise UnsupportedError(f"{where}: initial_state and mask arguments cannot be carried; the "
                               "Core ML LSTM starts from zero state and reads every step")
    if layer.dropout or layer.recurrent_dropout:
        ctx.refuse(f"{where}: dropout={layer.dropout}, recurrent_dropout={layer.recurrent_dropout} "
                   "cannot be carried: Core ML has no dropout, so on-device training would run "
                   "without it")
    cell = layer.cell
    weights = {"W_ih": np.ascontiguousarray(_numpy(cell.kernel).T),
               "W_hh": np.ascontiguousarray(_numpy(cell.recurrent_kernel).T)}
    if layer.use_bias:
        weights["bias"] = _numpy(cell.bias)
    attrs = {"hidden": int(layer.units), "return_sequences": bool(layer.return_sequences),
             "activation": _lstm_activation(layer.activation, where),
             "recurrent_activation": _lstm_activation(layer.recurrent_activation, where)}
    trains = ctx.trains(layer)
    if trains:
        ctx.warnings.append(f"{where}: training an LSTM on device is experimental: only Apple's "
                            "newest validator accepts an updatable uniDirectionalLSTM; verify on a "
                            "device, or freeze it and train the layers after it")
    return ctx.add("lstm", layer.name, [x], attrs=attrs, weights=weights, trainable=trains,
                   source=_source(layer))


# -- converters: shape and pooling layers ------------------------------------------------


def _pool(kind: str):
    def convert(ctx: Context, layer, inputs, kwargs, out_shape):
        (x,) = inputs
        _channels_last(layer)
        if layer.padding not in ("valid", "same"):
            raise UnsupportedError(f"layer {layer.name!r}: padding={layer.padding!r}")
        attrs = {"kind": kind, "kernel": tuple(layer.pool_size), "padding": layer.padding,
                 "strides": tuple(layer.strides or layer.pool_size)}
        return ctx.add("pool2d", layer.name, [x], attrs=attrs, source=_source(layer))

    return convert


def _global_pool(kind: str):
    def convert(ctx: Context, layer, inputs, kwargs, out_shape):
        _channels_last(layer)
        (x,) = inputs
        return ctx.add("pool2d", layer.name, [x], attrs={"kind": kind, "global": True,
                                                        "keepdims": bool(layer.keepdims)},
                       source=_source(layer))

    return convert


converts("MaxPooling2D")(_pool("max"))
converts("AveragePooling2D")(_pool("avg"))
converts("GlobalMaxPooling2D")(_global_pool("max"))
converts("GlobalAveragePooling2D")(_global_pool("avg"))


@converts("Flatten")
def _flatten(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    _channels_last(layer)
    if len(x.shape) == 1:
        return ctx.add("identity", layer.name, [x], source=_source(layer))
    if len(x.shape) != 3:
        raise UnsupportedError(f"layer {layer.name!r}: flattening a sequence {x.shape} is not supported")
    return ctx.add("flatten", layer.name, [x], attrs={"order": "hwc"}, source=_source(layer))


@converts("Reshape")
def _reshape(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    if out_shape == x.shape:
        return ctx.add("identity", layer.name, [x], source=_source(layer))
    if len(out_shape) == 1 and len(x.shape) == 3:
        return ctx.add("flatten", layer.name, [x], attrs={"order": "hwc"}, source=_source(layer))
    if len(out_shape) == 3 and len(x.shape) in (1, 3):
        return ctx.add("reshape", layer.name, [x], attrs={"shape": out_shape, "order": "hwc"},
                       source=_source(layer))
    raise UnsupportedError(f"layer {layer.name!r}: reshape {x.shape} -> {out_shape} (channel-first) "
                           "is not supported; reshape to a vector or to (H, W, C)")


@converts("ZeroPadding2D")
def _zero_padding(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    _channels_last(layer)
    (top, bottom), (left, right) = layer.padding
    return ctx.add("pad", layer.name, [x], attrs={"pads": (top, bottom, left, right), "value": 0.0},
                   source=_source(layer))


@converts("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
          "AlphaDropout")
def _dropout(ctx: Context, layer, inputs, kwargs, out_shape):
    return ctx.add("dropout", layer.name, inputs, source=_source(layer))


@converts("Identity")
def _identity(ctx: Context, layer, inputs, kwargs, out_shape):
    return ctx.add("identity", layer.name, inputs, source=_source(layer))


# -- converters: elementwise -------------------------------------------------------------


@converts("Activation")
def _activation_layer(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    kind = _activation_name(layer.activation, f"layer {layer.name!r}")
    if kind == "linear":
        return ctx.add("identity", layer.name, [x], source=_source(layer))
    return _apply(ctx, ACTIVATIONS[kind], layer.name, x, _source(layer))


@converts("ReLU")
def _relu(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    max_value, slope, threshold = layer.max_value, float(layer.negative_slope), float(layer.threshold)
    if threshold != 0 or (slope != 0 and max_value is not None):
        raise UnsupportedError(f"layer {layer.name!r}: ReLU with threshold={threshold} and "
                               f"negative_slope={slope}, max_value={max_value} has no Core ML "
                               "equivalent; use max_value or negative_slope alone")
    if slope:
        attrs = {"kind": "leaky_relu", "alpha": slope}
    elif max_value is not None:
        attrs = {"kind": "clip", "min": 0.0, "max": float(max_value)}
    else:
        attrs = {"kind": "relu"}
    return ctx.add("activation", layer.name, [x], attrs=attrs, source=_source(layer))


@converts("LeakyReLU")
def _leaky_relu(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    slope = float(getattr(layer, "negative_slope", getattr(layer, "alpha", 0.3)))
    return ctx.add("activation", layer.name, [x], attrs={"kind": "leaky_relu", "alpha": slope},
                   source=_source(layer))


@converts("ELU")
def _elu(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    return ctx.add("activation", layer.name, [x], attrs={"kind": "elu", "alpha": float(layer.alpha)},
                   source=_source(layer))


@converts("Softmax")
def _softmax(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
    if axis not in (-1, len(x.shape)):
        raise UnsupportedError(f"layer {layer.name!r}: softmax over axis {layer.axis}; Core ML's "
                               "softmax works on the channel (last) axis")
    if kwargs.get("mask") is not None:
        raise UnsupportedError(f"layer {layer.name!r}: masked softmax is not supported")
    return ctx.add("softmax", layer.name, [x], source=_source(layer))


def _merge(op: str):
    def convert(ctx: Context, layer, inputs, kwargs, out_shape):
        if any(t.shape != out_shape for t in inputs):
            raise UnsupportedError(f"layer {layer.name!r}: inputs of shapes "
                                   f"{[t.shape for t in inputs]} need broadcasting, which is not "
                                   "supported; give all inputs the same shape")
        return ctx.add(op, layer.name, inputs, source=_source(layer))

    return convert


converts("Add")(_merge("add"))
converts("Multiply")(_merge("mul"))


@converts("Concatenate")
def _concatenate(ctx: Context, layer, inputs, kwargs, out_shape):
    rank = len(out_shape)
    if layer.axis not in (-1, rank) or rank == 2:
        raise UnsupportedError(f"layer {layer.name!r}: concatenation along axis {layer.axis}; only "
                               "the channel (last) axis of vectors or images is supported")
    return ctx.add("concat", layer.name, inputs, source=_source(layer))


def _per_channel(value, channels: int, where: str) -> np.ndarray:
    array = np.asarray(_keras().ops.convert_to_numpy(value), dtype=np.float64)
    if array.size not in (1, channels) or array.size != max(array.shape, default=1):
        raise UnsupportedError(f"{where}: expected a scalar or one value per channel, got shape "
                               f"{array.shape}")
    return np.broadcast_to(array.reshape(-1), (channels,)).astype(np.float32)


@converts("Rescaling")
def _rescaling(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    where = f"layer {layer.name!r}"
    channels = x.shape[0]
    weights = {"scale": _per_channel(layer.scale, channels, where),
               "bias": _per_channel(layer.offset, channels, where)}
    return ctx.add("scale", layer.name, [x], weights=weights, source=_source(layer))


@converts("Normalization")
def _normalization(ctx: Context, layer, inputs, kwargs, out_shape):
    (x,) = inputs
    where = f"layer {layer.name!r}"
    axis = layer.axis if isinstance(layer.axis, (tuple, list)) else (layer.axis,)
    if layer.invert or tuple(axis) not in ((-1,), (len(x.shape),)):
        raise UnsupportedError(f"{where}: only normalization over the last axis (invert=False) is "
                               "supported")
    channels = x.shape[0]
    mean = _per_channel(layer.mean, channels, where).astype(np.float64)
    std = np.maximum(np.sqrt(_per_channel(layer.variance, channels, where).astype(np.float64)),
                     _keras().backend.epsilon())
    weights = {"scale": (1 / std).astype(np.float32), "bias": (-mean / std).astype(np.float32)}
    return ctx.add("scale", layer.name, [x], weights=weights, source=_source(layer))


# -- loss and optimizer ------------------------------------------------------------------

_LOSS_ALIASES = {
    "categorical_crossentropy": "categorical_crossentropy", "cce": "categorical_crossentropy",
    "categoricalcrossentropy": "categorical_crossentropy",
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    "sparsecategoricalcrossentropy": "sparse_categorical_crossentropy",
    "mse": "mean_squared_error", "mean_squared_error": "mean_squared_error",
    "meansquarederror": "mean_squared_error",
}


@dataclass(frozen=True)
class LossMapping:
    kind: str           # "cce" | "mse"
    from_logits: bool
    keras_name: str


def map_loss(loss, ctx: Context) -> LossMapping:
    """A Keras loss (string, function or ``keras.losses.Loss``) -> Core ML loss kind."""
    keras = _keras()
    if loss is None:
        raise ConfigError("the model has no loss: compile it, or pass loss='categorical_crossentropy', "
                          "'sparse_categorical_crossentropy' or 'mse'")
    if isinstance(loss, (list, tuple, dict)):
        if len(loss) != 1:
            raise UnsupportedError("several losses (one per output) cannot be exported; Core ML "
                                   "trains exactly one loss on one output")
        loss = next(iter(loss.values())) if isinstance(loss, dict) else loss[0]
    config: dict = {}
    if isinstance(loss, keras.losses.Loss) and type(loss).__module__.startswith("keras."):
        config = loss.get_config()
        name = type(loss).__name__
        if name == "LossFunctionWrapper":  # keras wrapping one of its loss functions
            name = getattr(loss.fn, "__name__", name)
    elif isinstance(loss, str):
        name = loss
    elif callable(loss) and getattr(loss, "__module__", "").startswith("keras."):
        name = loss.__name__
    else:
        raise UnsupportedError(f"custom loss {getattr(loss, '__name__', loss)!r} cannot be carried "
                               "to Core ML, which trains only categorical cross-entropy and mean "
                               "squared error; compile with one of those")
    key = _LOSS_ALIASES.get(name.lower())
    if key is None:
        raise UnsupportedError(f"loss {name!r} is not supported by Core ML on device (it trains "
                               "categorical cross-entropy and mean squared error only)" +
                               ("; binary cross-entropy: use a 2-unit softmax output with "
                                "sparse_categorical_crossentropy" if "binary" in name.lower() else ""))
    if config.get("label_smoothing"):
        ctx.refuse(f"loss {name}: label_smoothing={config['label_smoothing']} cannot be carried to "
                   "Core ML; compile without it")
    if config.get("axis", -1) != -1:
        raise UnsupportedError(f"loss {name}: axis={config['axis']}; only the last axis is supported")
    if config.get("ignore_class") is not None:
        ctx.refuse(f"loss {name}: ignore_class={config['ignore_class']} has no Core ML equivalent")
    reduction = config.get("reduction", "sum_over_batch_size")
    if reduction != "sum_over_batch_size":
        ctx.refuse(f"loss {name}: reduction={reduction!r}; Core ML averages over the mini-batch "
                   "(reduction='sum_over_batch_size')")
    kind = "mse" if key == "mean_squared_error" else "cce"
    return LossMapping(kind, bool(config.get("from_logits", False)), key)


def map_optimizer(optimizer, ctx: Context) -> tuple[Optimizer, list[str]]:
    """A Keras optimizer -> Core ML SGD/Adam, plus notes for the report."""
    if isinstance(optimizer, (SGD, Adam)):
        return optimizer, []
    if optimizer is None:
        raise ConfigError("the model has no optimizer: compile it, or pass optimizer=SGD(...)/Adam(...)")
    keras = _keras()
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    kind = type(optimizer).__name__
    if not isinstance(optimizer, keras.optimizers.Optimizer) or kind not in ("SGD", "Adam"):
        raise UnsupportedError(f"optimizer {kind!r} "
                               "is not supported: Core ML trains with SGD (with momentum) or Adam")
    config = optimizer.get_config()
    name = f"keras.optimizers.{kind}"
    notes = []
    if config.get("weight_decay"):
        ctx.refuse(f"{name}: weight_decay={config['weight_decay']} cannot be carried (Core ML has "
                   "no weight decay); compile without it")
    if kind == "SGD" and config.get("nesterov"):
        ctx.refuse(f"{name}: nesterov=True cannot be carried (Core ML's SGD uses plain momentum)")
    if kind == "Adam" and config.get("amsgrad"):
        ctx.refuse(f"{name}: amsgrad=True cannot be carried (Core ML's Adam has no AMSGrad)")
    for clip in ("clipnorm", "clipvalue", "global_clipnorm"):
        if config.get(clip) is not None:
            ctx.warnings.append(f"{name}: {clip}={config[clip]} is not carried (Core ML has no "
                                "gradient clipping)")
    if config.get("use_ema"):
        ctx.warnings.append(f"{name}: use_ema is not carried (Core ML keeps no moving average)")
    if (config.get("gradient_accumulation_steps") or 1) > 1:
        ctx.refuse(f"{name}: gradient_accumulation_steps has no Core ML equivalent")
    learning_rate = float(_keras().ops.convert_to_numpy(optimizer.learning_rate))
    if isinstance(config.get("learning_rate"), dict):
        notes.append(f"the learning-rate schedule became its value at export time, "
                     f"{learning_rate:g} (Core ML uses a constant rate; the app may change it "
                     "between epochs)")
    if kind == "SGD":
        momentum = float(config.get("momentum", 0.0))
        if momentum:
            notes.append(framework_form_note("keras", "sgd", momentum))
        return SGD(learning_rate, momentum), notes
    notes.append(framework_form_note("keras", "adam"))
    return Adam(learning_rate, float(config["beta_1"]), float(config["beta_2"]),
                float(config["epsilon"])), notes


# -- fit arguments seen from a callback --------------------------------------------------


def fit_arguments(model) -> dict:
    """``batch_size`` and ``class_weight`` of the ``fit`` call running ``model``.

    Keras does not pass them to callbacks; they are read from the ``fit`` frame on the
    stack (its data adapter knows the batch size even for datasets). Empty when not found.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            local = frame.f_locals
            if frame.f_code.co_name == "fit" and local.get("self") is model:
                adapter = getattr(local.get("epoch_iterator"), "data_adapter", None)
                batch_size = getattr(adapter, "batch_size", None) or local.get("batch_size")
                return {"batch_size": batch_size, "class_weight": local.get("class_weight")}
            frame = frame.f_back
        return {}
    finally:
        del frame


# -- entry points ------------------------------------------------------------------------


def keras_to_graph(model, *, trainable: Optional[Sequence[str]] = None, image_input=None,
                   allow_unsupported: bool = False) -> tuple[Graph, Context]:
    """Trace a built Keras model into an IR graph (before any pass)."""
    ctx = Context(set(trainable) if trainable is not None else None, allow_unsupported)
    graph = _functional(model)
    inputs = []
    for keras_tensor in graph.inputs:
        name = ctx.tensor(keras_tensor._keras_history.operation.name)
        inputs.append(TensorSpec(name, channel_first(keras_tensor.shape[1:], f"input {name!r}")))
    if image_input is not None and image_input is not False:
        if len(inputs) != 1:
            raise ConfigError("image_input needs a model with exactly one input")
        inputs[0].image = _image_options(image_input, inputs[0].shape)
    outputs = _trace(ctx, model, [Tensor(t.name, t.shape) for t in inputs])
    if ctx.trainable is not None:
        unknown = sorted(ctx.trainable - ctx.seen)
        if unknown:
            raise ConfigError(f"trainable names unknown layers {unknown}; layers are: "
                              + ", ".join(sorted(ctx.seen)))
    return _token_inputs(Graph(inputs, [t.name for t in outputs], ctx.nodes)), ctx


def _token_inputs(graph: Graph) -> Graph:
    """Inputs read by embeddings hold token ids ``(steps,)``: make them ``(Seq, 1)`` sequences.

    Keras cannot tell them from vectors by shape; only their use says what they are.
    """
    for spec in graph.inputs:
        consumers = graph.consumers(spec.name)
        if not any(node.op == "embedding" for node in consumers):
            continue
        others = [node.name for node in consumers if node.op != "embedding"]
        if others or spec.name in graph.outputs:
            raise UnsupportedError(f"input {spec.name!r} holds token ids for an Embedding and "
                                   f"cannot also feed {others or 'the output'}; give them "
                                   "separate inputs")
        spec.shape = (spec.shape[0], 1)
    return graph


def _image_options(image_input, shape: tuple[int, ...]) -> dict:
    if isinstance(image_input, dict):
        return dict(image_input)
    if isinstance(image_input, str):
        if image_input not in ("rgb", "bgr", "grayscale"):
            raise ConfigError(f"image_input={image_input!r}: use 'rgb', 'bgr' or 'grayscale'")
        return {"color": image_input}
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ConfigError(f"image_input: the input shape {shape} (C, H, W) is not an RGB or grayscale image")
    return {"color": "rgb" if shape[0] == 3 else "grayscale"}


def export_keras(model, path: PathLike, *, loss=None, optimizer=None,
                 options: Optional[ExportOptions] = None, **kwargs: Any) -> ExportReport:
    """Export a built Keras 3 model to an updatable Core ML ``.mlmodel`` at ``path``.

    Defaults come from the model: ``layer.trainable`` decides which Dense/Conv layers train
    on device (or name them in ``trainable``), the compiled loss and optimizer decide the
    update parameters (or pass ``loss``/``optimizer``: a Keras loss/optimizer or our
    ``SGD``/``Adam``). Everything else is an ``ExportOptions`` field, given as ``options`` or
    as keywords: ``class_labels`` makes a classifier (``extra_class_slots`` adds placeholder
    labels ``user0``… for classes the app learns later); options Core ML cannot carry raise
    ``UnsupportedError`` unless ``allow_unsupported=True`` turns them into report warnings;
    ``pipeline=True`` writes a frozen backbone + updatable head pipeline whose backbone is
    made by ``backbone='frontend'|'coremltools'|'auto'`` (see ``backbone.py``).
    Returns an ``ExportReport``; writes nothing when the export fails.
    """
    from ..backbone import keras_head, translate_or_convert

    options = ExportOptions.build(options, **kwargs)
    keras = _keras()
    trainable, image_input, allow = options.trainable, options.image_input, options.allow_unsupported
    (graph, ctx), converted = translate_or_convert(  # pipeline=True: see backbone.py
        options.backbone, options.pipeline,
        lambda: keras_to_graph(model, trainable=trainable, image_input=image_input,
                               allow_unsupported=allow),
        lambda reason: keras_head(model, trainable=trainable, image_input=image_input,
                                  allow_unsupported=allow, reason=reason))
    loss_map = map_loss(loss if loss is not None else getattr(model, "loss", None), ctx)
    if _non_unit_loss_weights(model):
        ctx.refuse("compile(loss_weights=...) cannot be carried: Core ML trains one unweighted loss")
    opt, notes = map_optimizer(optimizer if optimizer is not None else getattr(model, "optimizer", None),
                               ctx)
    assumptions = list(notes) + options.default_notes()
    if loss_map.keras_name == "categorical_crossentropy":
        assumptions.append("categorical_crossentropy: on device the target is the class label "
                           "(or index), not a one-hot vector")
    return export_graph(
        graph, path, loss=loss_map.kind, optimizer=opt, from_logits=loss_map.from_logits,
        options=options, source=f"keras=={keras.__version__} ({keras.backend.backend()} backend)",
        assumptions=assumptions, warnings=ctx.warnings, backbone=converted)


def _non_unit_loss_weights(model) -> bool:
    weights = getattr(getattr(model, "_compile_loss", None), "_user_loss_weights", None)
    if weights is None:
        return False
    values = weights.values() if isinstance(weights, dict) else weights if \
        isinstance(weights, (list, tuple)) else [weights]
    return any(float(v) != 1.0 for v in values)


# -- the fit callback --------------------------------------------------------------------


def _callback_class():
    """Build ``UpdatableCoreMLExport`` on first use, so importing this module stays free of keras."""
    keras = _keras()

    class UpdatableCoreMLExport(keras.callbacks.Callback):
        """Export the model being trained to an updatable ``.mlmodel`` when ``fit`` ends.

        ``path`` may contain ``{epoch}`` when ``every_n_epochs`` is set (like ModelCheckpoint).
        The batch size of the ``fit`` call is used unless given. The device's default epochs
        are ``epochs`` if given, else the on-device default (``options.DEFAULTS``), never the
        server's ``fit(epochs=...)`` unless asked with ``epochs="fit"``. Every other keyword
        is an ``ExportOptions`` field for ``export_keras``. Quiet like Keras's own callbacks;
        ``verbose=True`` prints the report. Options Core ML cannot carry (class weights, label
        smoothing, nesterov…) are refused when training *begins*, not after it. The written
        file is validated again from disk; ``self.report`` holds the last ``ExportReport``.
        """

        def __init__(self, path: PathLike, *, every_n_epochs: Optional[int] = None,
                     batch_size: Optional[int] = None, epochs: Union[int, str, None] = None,
                     verbose: bool = False, **export_options) -> None:
            super().__init__()
            if every_n_epochs is not None and every_n_epochs < 1:
                raise ConfigError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
            if isinstance(epochs, str) and epochs != "fit":
                raise ConfigError(f"epochs={epochs!r}: give a number, or 'fit' to copy the "
                                  "epochs of the fit call")
            ExportOptions.build(**{k: v for k, v in export_options.items()
                                   if k not in ("loss", "optimizer")})  # refuse typos now
            self.path = str(path)
            self.every_n_epochs = every_n_epochs
            self.batch_size = batch_size
            self.epochs = epochs
            self.verbose = verbose
            self.export_options = export_options
            self.report: Optional[ExportReport] = None
            self._fit_batch_size: Optional[int] = None
            self._warnings: list[str] = []
            self._epochs_done = 0
            self._exported_epoch: Optional[int] = None

        def on_train_begin(self, logs=None) -> None:
            fit = fit_arguments(self.model)
            self._fit_batch_size = fit.get("batch_size")
            self._epochs_done, self._exported_epoch = 0, None
            ctx = Context(None, self.export_options.get("allow_unsupported", False))
            if fit.get("class_weight"):
                ctx.refuse("fit(class_weight=...) cannot be carried: Core ML weighs every example "
                           "the same")
            map_loss(self.export_options.get("loss") or self.model.loss, ctx)
            map_optimizer(self.export_options.get("optimizer") or self.model.optimizer, ctx)
            self._warnings = ctx.warnings

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            self._epochs_done = epoch + 1
            if self.every_n_epochs and self._epochs_done % self.every_n_epochs == 0:
                self._export(self.path.format(epoch=self._epochs_done))

        def on_train_end(self, logs=None) -> None:
            if self._exported_epoch != self._epochs_done:  # not just written by on_epoch_end
                self._export(self.path.format(epoch=self._epochs_done))

        def _export(self, path: str) -> None:
            from ..validator import is_valid, validate

            options = dict(self.export_options)
            options.setdefault("batch_size", self.batch_size or self._fit_batch_size)
            epochs = self.params.get("epochs") if self.epochs == "fit" else self.epochs
            if epochs is not None:
                options.setdefault("epochs", epochs)
            report = export_keras(self.model, path, **options)
            report.warnings[:0] = self._warnings
            findings = validate(path)
            if not is_valid(findings):
                raise UnsupportedError(f"{path}: the written model does not validate: "
                                       + "; ".join(map(str, findings)))
            self.report = report
            self._exported_epoch = self._epochs_done
            if self.verbose:
                print(report.summary())

    UpdatableCoreMLExport.__qualname__ = "UpdatableCoreMLExport"
    return UpdatableCoreMLExport


def __getattr__(name: str):
    if name == "UpdatableCoreMLExport":
        cls = globals()[name] = _callback_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_keras_file(path: PathLike) -> Any:
    """A ``.keras``/``.h5`` model loaded without running code from the file (``safe_mode``)."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: {'is a directory, expected a file' if path.is_dir() else 'no such file'}")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a .keras archive (a zip file); it may be empty, truncated "
                             "or of another format: save it again with model.save('model.keras')")
    keras = _keras()
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:
        hint = ("; it holds a Lambda layer (Python code, never run from a file): replace it with "
                "built-in layers" if "`Lambda`" in str(exc) else "")
        raise ModelFileError(f"{path}: cannot load the Keras model safely ({first_line(exc)}){hint}") from None
