"""Translate a captured ``torch.export`` program into the IR: one converter per aten op.

Every ``call_function`` node of the program is looked up in ``CONVERTERS`` by its aten op
name (``"conv2d"``; an in-place ``"relu_"`` finds ``"relu"``); an op without a converter is
an ``UnsupportedError`` that names the op and the module it came from, never a silent skip.
Converters (``converters/``, by family) read their arguments by schema name
(``args["stride"]``) so positional/keyword/default forms look alike, and they know tensor
shapes from the program's fake-tensor metadata (see ``context``).

torch is imported by the caller; this module only touches the objects it is handed.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, Optional

from ...errors import ConfigError, UnsupportedError
from ...ir import Graph, TensorSpec
from ..common.builder import run_converter
from ..common.image import apply_image_input
from . import converters, layout  # noqa: F401  (importing registers the converters)
from .context import (
    _IGNORED,
    CONVERTERS,
    Translation,
    _op_name,
    arguments,
    example_shape,
    where,
)
from .converters import attention
from .converters.conv1d import declare_width_inputs


def translate(
    program: Any, image_input: Optional[dict] = None, input_names: Optional[Sequence[str]] = None
) -> Translation:
    """Build the IR graph of an ``ExportedProgram`` (inputs, nodes, outputs).

    Inputs keep forward()'s argument names unless ``input_names`` renames them (in order);
    ``image_input`` makes the first input an image (see ``ir.TensorSpec.image``).
    """
    signature = program.graph_signature
    state_names = {
        **signature.inputs_to_parameters,
        **signature.inputs_to_buffers,
        **getattr(signature, "inputs_to_lifted_tensor_constants", {}),
    }
    user_inputs = list(signature.user_inputs)
    names = list(input_names) if input_names is not None else user_inputs
    if len(names) != len(user_inputs) or len(set(names)) != len(names):
        raise ConfigError(
            f"input_names {names} must be {len(user_inputs)} distinct names, one per "
            f"forward() input ({', '.join(user_inputs)})"
        )
    fx_nodes = {node.name: node for node in program.graph.nodes}
    inputs = [
        TensorSpec(name, example_shape(fx_nodes[fx_name]))
        for name, fx_name in zip(names, user_inputs)
    ]
    apply_image_input(image_input, inputs)
    state = Translation(program, Graph(inputs=inputs, outputs=[]), state_names=state_names)
    state.tensors.update(zip(user_inputs, names))
    state.taken.update(names)
    declare_width_inputs(state, [fx_nodes[name] for name in user_inputs])
    for node in program.graph.nodes:
        if node.op == "call_function":
            _convert(state, node)
        elif node.op == "output":
            state.graph.outputs = [state.tensor(arg) for arg in _flat_outputs(node.args[0])]
        elif node.op != "placeholder":
            raise UnsupportedError(
                f"graph node {node.name} ({node.op}) in {where(node)} is not "
                "an op call; export the model without submodule calls"
            )
    return state


def _flat_outputs(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return [item for sub in value for item in _flat_outputs(sub)]
    return [value]


def _convert(state: Translation, fx: Any) -> None:
    if attention.convert_call(state, fx) or attention.defer(state, fx):
        return
    if fx.target is operator.getitem:
        _getitem(state, fx)
        return
    op = _op_name(fx)
    if op in _IGNORED:
        return
    fn = CONVERTERS.get(out_of_place(op)) if getattr(fx.target, "namespace", "") == "aten" else None
    if fn is None:
        raise UnsupportedError(
            f"torch op {op!r} in {where(fx)} has no Core ML converter; "
            "replace it with a supported layer (see the exporter's op list)"
        )
    what = f"torch op {op!r} in {where(fx)}"
    if out_of_place(op) in layout.PER_ELEMENT and layout.per_element(
        state, fx, lambda: run_converter(fn, what, state, fx, arguments(fx))
    ):
        return
    run_converter(fn, what, state, fx, arguments(fx))


def out_of_place(op: str) -> str:
    """The op an in-place aten op (``relu_``, ``add_``, ``dropout_``) computes in place: one
    converter serves both, since in an exported inference graph nothing else reads the
    overwritten tensor. Private ops (``_softmax``) keep their name."""
    return op[:-1] if op.endswith("_") and not op.startswith("_") else op


def _getitem(state: Translation, fx: Any) -> None:
    """Element 0 of a multi-output op (batch norm, dropout) is its result; the rest are
    statistics/masks nothing downstream may use, unless the op's converter mapped them."""
    source, index = fx.args
    if fx.name in state.tensors or not fx.users:
        return  # mapped by its multi-output op's converter (LSTM states), or read by nothing
    if index != 0 or source.name not in state.tensors:
        raise UnsupportedError(
            f"output {index} of {source.name} in {where(fx)} is used; only "
            "the main result of an op can be exported"
        )
    state.alias(fx, source)
