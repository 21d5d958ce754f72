"""``nn.MultiheadAttention`` converted as one call: the ``self_attention`` op.

torch.export records the module's forward as a dozen aten ops whose reshapes fold the batch
axis into the heads (``view(L, N * heads, d)``); Core ML layers see one example at a time,
so those ops cannot be converted one by one. The call is recognized instead by the module
that made its ops (``nn_module_stack``), checked to be the plain self-attention the
``self_attention`` op computes, and written from the module's parameters.
"""

from __future__ import annotations

from operator import getitem
from typing import Any, Optional

import numpy as np

from ....errors import UnsupportedError
from .. import layout
from ..context import Translation, _op_name, full_shape

MULTIHEAD_ATTENTION = "torch.nn.modules.activation.MultiheadAttention"

#: aten ops torch's MultiheadAttention runs for self-attention without masks, either through
#: ``scaled_dot_product_attention`` (need_weights=False) or through its own product, softmax
#: and averaged weights (need_weights=True). Anything else (add_zero_attn's padding, masks)
#: is refused.
ALLOWED_OPS = frozenset(
    {
        "transpose",
        "linear",
        "unflatten",
        "unsqueeze",
        "squeeze",
        "contiguous",
        "clone",
        "select",
        "view",
        "reshape",
        "_unsafe_view",
        "permute",
        "scaled_dot_product_attention",
        "mul",
        "bmm",
        "softmax",
        "mean",
        "dropout",
    }
)

#: The module's parameters, by name under the module, for self-attention with kdim = vdim =
#: embed_dim and no add_bias_kv; the biases are optional (bias=False).
_PARAMETERS = {
    "in_proj_weight": "in_weight",
    "in_proj_bias": "in_bias",
    "out_proj.weight": "out_weight",
    "out_proj.bias": "out_bias",
}


def attention_call(fx: Any) -> Optional[str]:
    """The module path of the ``nn.MultiheadAttention`` call ``fx`` belongs to, else None."""
    for path, cls in (fx.meta.get("nn_module_stack") or {}).values():
        name = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
        if name == MULTIHEAD_ATTENTION:
            return str(path)
    return None


def convert_call(state: Translation, fx: Any) -> bool:
    """Convert the whole attention call at its first op and skip its other ops; False for an
    op outside any attention call."""
    path = attention_call(fx)
    if path is None:
        return False
    if path not in state.modules:
        state.modules.add(path)
        group = [
            node
            for node in fx.graph.nodes
            if node.op == "call_function" and attention_call(node) == path
        ]
        _self_attention(state, path, group)
    return True


def _refuse(path: str, why: str) -> UnsupportedError:
    return UnsupportedError(
        f"nn.MultiheadAttention {path!r}: {why}; only self-attention (query, key and value "
        "the same tokens, batch_first=True, no masks, add_bias_kv and add_zero_attn off) on "
        "an image's tokens (x.flatten(2).transpose(1, 2)) is supported"
    )


def _self_attention(state: Translation, path: str, group: list) -> None:
    members = {node.name for node in group}
    for node in group:
        if _op_name(node) == "scaled_dot_product_attention":
            extras = [node.kwargs.get(k) for k in ("attn_mask", "scale")] + list(node.args[3:])
            if any(v not in (None, 0.0, False) for v in extras) or node.kwargs.get("is_causal"):
                raise _refuse(path, "a mask, causal attention or a custom scale")
    sources, weights, placeholders = [], {}, {}
    for node in group:
        for arg in node.all_input_nodes:
            if arg.name in members:
                continue
            if state.is_weight(arg):
                pair = state.weight(arg)
                fqn = pair[1]
                role = _PARAMETERS.get(fqn[len(path) + 1 :] if fqn.startswith(path) else fqn)
                if role is None:
                    raise _refuse(path, f"parameter {fqn!r}")
                weights[role], placeholders[role] = pair, arg
            elif arg not in sources:
                sources.append(arg)
    if len(sources) != 1:
        raise _refuse(
            path,
            f"it reads {len(sources)} activations (query, key, value, masks; or the module "
            "is called more than once)",
        )
    unsupported = sorted(
        {_op_name(node) for node in group if node.target is not getitem} - ALLOWED_OPS
    )
    if unsupported:
        raise _refuse(path, f"torch op {unsupported[0]!r} in its forward")
    (source,) = sources
    view = layout.channel_last(state, source)
    if view is None or view.index.ndim != 2:
        raise _refuse(path, f"its input {list(full_shape(source))} is not an image's tokens")
    readers = [node for node in group if source in node.all_input_nodes]
    if any(_op_name(node) != "transpose" for node in readers):
        raise _refuse(path, "batch_first=False")
    outputs = [node for node in group if any(u.name not in members for u in node.users)]
    if len(outputs) != 1 or not _projects_out(outputs[0], placeholders.get("out_weight")):
        raise _refuse(path, "its attention weights are read")
    (output,) = outputs
    embed, size = full_shape(source)[2], _head_size(path, group)
    for node in group:
        if _op_name(node) == "mul" and not _is_query_scale(node.args[1], size):
            raise _refuse(path, f"a query scaled by {node.args[1]!r}, not 1 / sqrt({size})")
    if "in_weight" not in weights:
        raise _refuse(path, "no packed in_proj_weight (separate kdim, vdim projections)")
    state.emit(
        output, "self_attention", [view.tensor], attrs={"heads": embed // size}, weights=weights
    )
    layout.emitted_channel_last(state, output, view.base, view.made_by)


def _projects_out(node: Any, out_weight: Any) -> bool:
    """``node`` is the output projection's result, reshaped (the attention output, not the
    attention weights, which can have the same shape when S = C)."""
    while _op_name(node) in ("view", "reshape", "_unsafe_view", "transpose", "permute"):
        node = node.args[0]
    return _op_name(node) == "linear" and out_weight is not None and node.args[1] is out_weight


def _head_size(path: str, group: list) -> int:
    """d, from the view that splits the query into heads: (L, N * heads, d)."""
    for node in group:
        if _op_name(node) == "view" and _op_name(node.args[0]) == "select":
            return int(full_shape(node)[-1])
    raise _refuse(path, "its heads are not split the way torch's own forward does")


def _is_query_scale(value: Any, head_size: int) -> bool:
    """``value`` is torch's 1 / sqrt(d) query scale (need_weights=True multiplies by it)."""
    return isinstance(value, float) and bool(np.isclose(value, 1.0 / np.sqrt(head_size)))
