"""aten op converters by family; importing this package registers them all in
``context.CONVERTERS``. A converter is ``(state, fx_node, arguments_by_schema_name) -> None``
and writes IR nodes through ``state.emit``."""

from __future__ import annotations

from . import (  # noqa: F401
    activations,
    attention,
    conv1d,
    elementwise,
    normalization,
    pooling,
    sequence,
    shape,
    tokens,
    weights,
)
