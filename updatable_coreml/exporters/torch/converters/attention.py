"""Attention: ``nn.MultiheadAttention`` converted as one call (the ``self_attention`` op), and
``scaled_dot_product_attention`` of projected tokens (``dot_product_attention``).

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
from ..context import Translation, _op_name, arguments, converter, example_shape, full_shape, where

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


# -- scaled_dot_product_attention of the user's own projections ---------------------------------

#: Ops that only rearrange an activation: after a batch-axis move (timm's packed query, key
#: and value) they are deferred and replayed on the index (``_replay``).
REARRANGING = frozenset(
    {
        "view",
        "reshape",
        "_unsafe_view",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "permute",
        "transpose",
        "select",
        "unbind",
        "contiguous",
        "clone",
        "alias",
        "detach",
        "getitem",
    }
)


def _kind(fx: Any) -> str:
    return "getitem" if fx.target is getitem else _op_name(fx)


def defer(state: Translation, fx: Any) -> bool:
    """An op reading a deferred activation (``Translation.deferred``): deferred too when it
    only rearranges it; refused with the reason when anything but attention reads it. False
    when ``fx`` reads nothing deferred, or is the attention that resolves it."""
    held = [node for node in fx.all_input_nodes if node.name in state.deferred]
    if not held or _kind(fx) == "scaled_dot_product_attention":
        return False
    if _kind(fx) not in REARRANGING:
        raise UnsupportedError(state.deferred[held[0].name])
    state.deferred[fx.name] = state.deferred[held[0].name]
    return True


def _replay(fx: Any, index: np.ndarray) -> np.ndarray:
    """What ``fx`` does to the (whole-batch) positions ``index`` of its first input."""
    kind = _kind(fx)
    if kind == "getitem":
        source = fx.args[0]
        if _kind(source) != "unbind":
            raise UnsupportedError(f"{source.name} in {where(fx)}: only unbind's pieces are held")
        return np.take(index, int(fx.args[1]), axis=int(arguments(source)["dim"]))
    if kind in ("unbind", "contiguous", "clone", "alias", "detach"):
        return index  # unbind's pieces are taken by the getitems that read it
    if kind == "select":
        a = arguments(fx)
        return np.take(index, int(a["index"]), axis=int(a["dim"]))
    if kind == "permute":
        return index.transpose([int(d) for d in arguments(fx)["dims"]])
    if kind == "transpose":
        a = arguments(fx)
        return np.swapaxes(index, int(a["dim0"]), int(a["dim1"]))
    return index.reshape(full_shape(fx))


def _as_view(state: Translation, arg: Any) -> Optional[layout.View]:
    """The view behind ``arg``, resolving a deferred chain: the chain is replayed on the
    positions of the whole batch from the last activation held per example, and must give
    every example the same positions in its own example."""
    chain = []
    node = arg
    while node.name in state.deferred:
        chain.append(node)
        node = node.args[0]
    root = state.views.get(node.name)
    if root is None and node.name in state.tensors:
        shape = example_shape(node)
        root = layout.View(
            state.tensors[node.name], shape, np.arange(int(np.prod(shape))).reshape(shape), ""
        )
    if root is None or not chain:
        return root
    size = int(np.prod(root.base))
    batch = full_shape(node)[0]
    index = np.arange(batch)[:, None] * size + root.index.reshape(1, -1)
    index = index.reshape(full_shape(node))
    for step in reversed(chain):
        index = _replay(step, index)
    if index.shape != full_shape(arg):
        raise AssertionError(f"{arg.name}: replayed {index.shape} != {full_shape(arg)}")
    per_example = index.reshape(batch, -1) - np.arange(batch)[:, None] * size
    if (
        not (per_example == per_example[:1]).all()
        or per_example.min() < 0
        or per_example.max() >= size
    ):
        raise UnsupportedError(state.deferred[arg.name])
    made_by = root.made_by or f"the query, key and value in {where(arg)}"
    return layout.View(root.tensor, root.base, per_example[0].reshape(full_shape(arg)[1:]), made_by)


def _heads_tensor(
    state: Translation, fx: Any, arg: Any, role: str
) -> tuple[str, tuple[int, int, int]]:
    """The IR tensor of ``arg``, torch's (N, heads, S, d) query, key or value, as the
    (heads * d, H, W) tensor whose channel ``head * d + i`` at position n is its element
    (head, n, i): a channel slice of the projection's output when the projection packs
    query, key and value (one Linear), else that output itself."""
    view = _as_view(state, arg)
    shape = full_shape(arg)
    if view is None or len(shape) != 4 or len(view.base) != 3:
        raise UnsupportedError(
            f"scaled_dot_product_attention in {where(fx)}: its {role} {list(shape)} is not "
            "the heads of a Linear over an image's tokens ((N, heads, S, d), as "
            "linear(x).reshape(N, S, heads, d).transpose(1, 2) makes them)"
        )
    heads, tokens, depth = shape[1:]
    channels, height, width = view.base
    first = int(view.index.reshape(-1)[0]) // (height * width)
    expected = (
        first + np.arange(heads)[:, None, None] * depth + np.arange(depth)[None, None, :]
    ) * (height * width) + np.arange(tokens)[None, :, None]
    if tokens != height * width or not np.array_equal(view.index, expected):
        raise UnsupportedError(
            f"scaled_dot_product_attention in {where(fx)}: its {role}'s heads are not "
            "consecutive channels of a Linear over the tokens (head h, element i = "
            "channel h * d + i); split the heads with reshape(N, S, heads, d)"
        )
    embed = heads * depth
    if (first, embed) == (0, channels):
        return view.tensor, (embed, height, width)
    node = state.emit(
        fx,
        "slice_channels",
        [view.tensor],
        attrs={"start": first, "end": first + embed},
        suffix=f".{role}",
    )
    return node.outputs[0], (embed, height, width)


@converter("scaled_dot_product_attention")
def _scaled_dot_product_attention(state: Translation, fx: Any, a: dict) -> None:
    """``softmax(q k^T * scale) v`` over tokens: the ``dot_product_attention`` op on the query,
    key and value tensors; torch sees its result (N, heads, S, d), held as the (C, H, W)
    tensor channel ``head * d + i``, so ``transpose(1, 2).reshape(N, S, C)`` gives tokens."""
    if a["attn_mask"] is not None or float(a["dropout_p"]) != 0.0 or a["is_causal"]:
        raise UnsupportedError(
            f"scaled_dot_product_attention in {where(fx)} with a mask, dropout or causal "
            "attention: only plain attention over all tokens is supported"
        )
    if a.get("enable_gqa"):
        raise UnsupportedError(f"scaled_dot_product_attention in {where(fx)}: enable_gqa")
    roles = ("query", "key", "value")
    shapes = {full_shape(a[role]) for role in roles}
    if len(shapes) != 1:
        raise UnsupportedError(
            f"scaled_dot_product_attention in {where(fx)} of query, key and value shaped "
            f"{[list(full_shape(a[r])) for r in roles]}: only self-attention (one shape) is supported"
        )
    tensors = [_heads_tensor(state, fx, a[role], role) for role in roles]
    heads, depth = full_shape(fx)[1], full_shape(fx)[3]
    scale = float(a["scale"]) if a["scale"] is not None else 1.0 / float(np.sqrt(depth))
    node = state.emit(
        fx,
        "dot_product_attention",
        [tensor for tensor, _ in tensors],
        attrs={"heads": heads, "scale": scale},
    )
    embed, height, width = tensors[0][1]
    index = (np.arange(heads)[:, None, None] * depth + np.arange(depth)[None, None, :]) * (
        height * width
    ) + np.arange(height * width)[None, :, None]
    state.tensors.pop(fx.name)
    state.views[fx.name] = layout.View(
        node.outputs[0],
        (embed, height, width),
        index,
        f"scaled_dot_product_attention in {where(fx)}",
    )
