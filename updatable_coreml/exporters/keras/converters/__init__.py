"""Keras layer converters by family; importing this package registers them all in
``context.CONVERTERS``. A converter is ``(ctx, layer, call.inputs, call.kwargs, call.out_shape) -> IR tensor``."""

from __future__ import annotations

from . import elementwise, normalization, sequence, shape, temporal, weights  # noqa: F401
