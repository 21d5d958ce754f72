"""1-D feature maps: ``Conv1d``, ``MaxPool1d``, ``AvgPool1d``, ``AdaptiveAvgPool1d``.

torch's ``(N, C, L)`` is a 2-D map of height 1 in the IR, ``(C, 1, L)``: Core ML's
``convolution`` and ``pooling`` then slide over the width, and a ``Conv1d`` is an ordinary
``convolution`` Core ML can update (``coreml_rules``), which a convolution over the sequence
axis of a ``(Seq, C)`` tensor could not be (Core ML's convolution never looks across Seq).
A model input read by a ``Conv1d`` is declared ``(C, 1, L)``: the app feeds the same values
with a unit height axis. A ``(Seq, C)`` sequence (an embedding's or an LSTM's output) becomes
a width map through ``transpose(1, 2)`` (see ``converters/sequence.py``).
"""

from __future__ import annotations

from typing import Any

from ....errors import UnsupportedError
from ....passes import infer_shapes
from ...common.inputs import width_description
from ...common.pooling import ceil_mode_pads
from ..context import Translation, _op_name, converter, full_shape, where
from .sequence import TIME_MAJOR

#: aten ops that read a rank-3 tensor as a 1-D map (N, C, L): their model inputs are maps.
WIDTH_OPS = {
    "conv1d",
    "max_pool1d",
    "max_pool1d_with_indices",
    "avg_pool1d",
    "adaptive_avg_pool1d",
    "adaptive_max_pool1d",
    "batch_norm",
    "_native_batch_norm_legit_no_training",
}


def declare_width_inputs(state: Translation, placeholders: list) -> None:
    """Declare a model input ``(N, C, L)`` as ``(C, 1, L)`` before anything reads it, when
    the first layer that gives it a meaning (past ops that keep its shape: activations,
    elementwise arithmetic, dropout) is a 1-D map layer: a ``BatchNorm1d`` or an activation
    may come before the first ``Conv1d``, and must then see the same layout."""
    for fx in placeholders:
        shape = full_shape(fx) if fx.meta.get("val") is not None else ()
        spec = next((s for s in state.graph.inputs if s.name == state.tensors[fx.name]), None)
        if len(shape) != 3 or spec is None or not fx.meta["val"].is_floating_point():
            continue
        frontier, seen = list(fx.users), set()
        while frontier:
            user = frontier.pop()
            if user.name in seen or user.op != "call_function":
                continue
            seen.add(user.name)
            if _op_name(user).rstrip("_") in WIDTH_OPS:
                spec.shape = (shape[1], 1, shape[2])
                spec.description = width_description(shape[1], shape[2])
                break
            value = user.meta.get("val")
            if getattr(value, "shape", None) is not None and tuple(value.shape) == shape:
                frontier.extend(user.users)


def _one(value: Any) -> int:
    """torch's 1-D size arguments come as ``[k]`` (or an int)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise UnsupportedError(f"expected one 1-D size, got {list(value)}")
        return int(value[0])
    return int(value)


def width_map(state: Translation, arg: Any, fx: Any) -> str:
    """The IR tensor of a torch ``(N, C, L)`` activation, as a ``(C, 1, L)`` map.

    A model input of per-example shape ``(C, L)`` that nothing has read yet is re-declared
    ``(C, 1, L)``; any other tensor must already be a height-1 map (a layer of this family
    made it, or a transposed sequence did)."""
    name = state.tensor(arg)
    channels, length = full_shape(arg)[1:] if len(full_shape(arg)) == 3 else (0, 0)
    if not channels:
        raise UnsupportedError(
            f"1-D layer in {where(fx)} reads a rank-{len(full_shape(arg))} tensor; "
            "it needs (N, C, L)"
        )
    spec = next((s for s in state.graph.inputs if s.name == name), None)
    if spec is not None and len(spec.shape) == 2:
        if any(name in node.inputs for node in state.graph.nodes):
            raise UnsupportedError(
                f"1-D layer in {where(fx)} reads model input {name!r}, which an earlier "
                "layer reads as a sequence (steps, features); give the two readers "
                "separate inputs"
            )
        spec.shape = (channels, 1, length)
        return name
    shape = infer_shapes(state.graph)[name]
    if shape != (channels, 1, length):
        raise UnsupportedError(
            f"1-D layer in {where(fx)} reads a tensor the exporter holds as {shape}, not a "
            f"map of {channels} channels x {length} steps; a (N, L, C) sequence must be "
            "transposed to (N, C, L) first"
        )
    return name


@converter("conv1d")
def _conv1d(state: Translation, fx: Any, a: dict) -> None:
    """A ``Conv1d`` as a ``convolution`` with a (1, k) kernel; its weight keeps the
    parameter's name, so the optimizer's choice of what trains carries over."""
    x = width_map(state, a["input"], fx)
    padding = a["padding"]
    pads: Any = padding if isinstance(padding, str) else (0, 0, _one(padding), _one(padding))
    weight, fqn = state.weight(a["weight"])
    state.emit(
        fx,
        "conv2d",
        [x],
        attrs={
            "strides": (1, _one(a["stride"])),
            "dilations": (1, _one(a["dilation"])),
            "groups": int(a["groups"]),
            "padding": pads,
        },
        weights={"weight": (weight[:, :, None, :], fqn), "bias": state.state(a["bias"])},
    )


def _window_pool(state: Translation, fx: Any, a: dict, kind: str, include_pad: bool) -> None:
    x = width_map(state, a["self"], fx)
    kernel = _one(a["kernel_size"])
    stride = _one(a["stride"]) if a["stride"] else kernel
    pad = _one(a["padding"])
    pads: tuple[int, int, int, int] = (0, 0, pad, pad)
    if a["ceil_mode"]:
        pads = ceil_mode_pads(
            (1, full_shape(a["self"])[2]), (1, kernel), (1, stride), pads, include_pad, where(fx)
        )
    state.emit(
        fx,
        "pool2d",
        [x],
        attrs={
            "kind": kind,
            "kernel": (1, kernel),
            "strides": (1, stride),
            "padding": pads,
            "global": False,
            "count_include_pad": include_pad,
        },
    )


@converter("max_pool1d", "max_pool1d_with_indices")
def _max_pool1d(state: Translation, fx: Any, a: dict) -> None:
    if _one(a["dilation"]) != 1:
        raise UnsupportedError(f"dilated max pooling in {where(fx)} is not supported")
    _window_pool(state, fx, a, "max", include_pad=False)


@converter("avg_pool1d")
def _avg_pool1d(state: Translation, fx: Any, a: dict) -> None:
    _window_pool(state, fx, a, "avg", include_pad=bool(a["count_include_pad"]))


@converter("adaptive_avg_pool1d")
def _adaptive_avg_pool1d(state: Translation, fx: Any, a: dict) -> None:
    """To one step: global average pooling, keeping torch's ``(N, C, 1)`` as ``(C, 1, 1)``;
    to ``n`` steps that divide the length: windows of length / n."""
    x = width_map(state, a["self"], fx)
    length, out = full_shape(a["self"])[2], _one(a["output_size"])
    if out == length:
        state.alias(fx, a["self"])
        return
    if out != 1 and length % out:
        raise UnsupportedError(
            f"AdaptiveAvgPool1d to {out} steps of a length-{length} input in {where(fx)}: "
            "Core ML pools in equal windows; pick an output size that divides the length"
        )
    window = (1, length // out)
    state.emit(
        fx,
        "pool2d",
        [x],
        attrs={
            "kind": "avg",
            "kernel": window,
            "strides": window,
            "padding": "valid",
            "global": out == 1,
            "count_include_pad": False,
            "keepdims": True,
        },
    )


def _global_over_length(
    state: Translation, fx: Any, source: Any, kind: str, keep: bool, x: str = ""
) -> None:
    """Pooling over the whole length of a 1-D map (``x``, else ``source`` as one): global
    pooling, torch's ``(N, C, 1)`` kept as ``(C, 1, 1)`` or dropped to ``(C,)``."""
    x = x or width_map(state, source, fx)
    state.emit(
        fx,
        "pool2d",
        [x],
        attrs={
            "kind": kind,
            "kernel": (1, infer_shapes(state.graph)[x][2]),
            "strides": (1, 1),
            "padding": "valid",
            "global": True,
            "count_include_pad": False,
            "keepdims": keep,
        },
    )


def reduce_over_length(state: Translation, fx: Any, a: dict, kind: str) -> None:
    """``x.mean(2)`` / ``x.amax(2)`` / ``x.max(2)`` of a 1-D map ``(N, C, L)`` (a text CNN's
    max over time), or the same over the steps of a sequence (``out.mean(1)`` of an LSTM's
    batch-first output, its steps moved onto the width axis first): global pooling over the
    length. Other axes are refused."""
    dims = a["dim"]
    dims = [dims] if isinstance(dims, int) else list(dims or ())
    name = state.tensor(a["self"])
    if len(infer_shapes(state.graph)[name]) == 2:  # a (Seq, C) sequence
        step_axis = 0 if state.layouts.get(a["self"].name) == TIME_MAJOR else 1
        if [int(d) % 3 for d in dims] == [step_axis] and not a["keepdim"]:
            wide = state.emit(fx, "sequence_to_width", [name], suffix=".steps")
            _global_over_length(state, fx, a["self"], kind, False, wide.outputs[0])
            return
        raise UnsupportedError(
            f"{kind} over axes {dims} of a sequence in {where(fx)}: only over its steps "
            f"(axis {step_axis}, keepdim=False) is supported"
        )
    if [int(d) % 3 for d in dims] != [2]:
        raise UnsupportedError(
            f"{kind} over axes {dims} of a (N, C, L) tensor in {where(fx)}: only the length "
            "axis 2 (global pooling) is supported"
        )
    _global_over_length(state, fx, a["self"], kind, bool(a["keepdim"]))


@converter("amax", "max")
def _max(state: Translation, fx: Any, a: dict) -> None:
    """The maximum over a 1-D map's length (``x.max(2)`` returns (values, indices); only the
    values may be read)."""
    if len(full_shape(a["self"])) != 3 or a.get("dim") is None:
        raise UnsupportedError(
            f"max in {where(fx)}: only a maximum over the length axis of a (N, C, L) map "
            "(global max pooling) is supported"
        )
    reduce_over_length(state, fx, a, "max")


@converter("adaptive_max_pool1d")
def _adaptive_max_pool1d(state: Translation, fx: Any, a: dict) -> None:
    """To one step: global max pooling (torch returns (values, indices); only the values may
    be read); other sizes are refused."""
    if _one(a["output_size"]) != 1:
        raise UnsupportedError(
            f"AdaptiveMaxPool1d to {_one(a['output_size'])} steps in {where(fx)}: only an "
            "output size of 1 (global max pooling) is supported"
        )
    _global_over_length(state, fx, a["self"], "max", keep=True)
