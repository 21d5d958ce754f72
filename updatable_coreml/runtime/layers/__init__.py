"""The runtime's layers by family: each module holds the forward op, the backward op (for
the layer types Core ML trains through) and the size estimate of its layer types side by side,
registered in ``runtime.registry``. Importing this package registers every family."""

from __future__ import annotations

from . import (  # noqa: F401  (importing registers the families)
    activation,
    compare,
    constant,
    conv,
    custom,
    detection,
    elementwise,
    indexing,
    linear,
    normalization,
    pooling,
    random,
    recurrent,
    reduce,
    resize,
    rnn,
    shape,
    tensor,
    volume,
)
