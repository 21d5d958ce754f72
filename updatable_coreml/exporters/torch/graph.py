"""A torch model as an IR graph: captured, translated op by op, with what trains marked."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional

from ..common.refusals import Refusals
from .capture import capture
from .context import Translation
from .training import mark_trainable, trainable_parameters
from .translate import translate


def torch_to_graph(
    model: Any,
    example_inputs: Any,
    *,
    optimizer: Any = None,
    trainable: Optional[Iterable[str]] = None,
    image_input: Optional[dict] = None,
    input_names: Optional[Sequence[str]] = None,
    refusals: Optional[Refusals] = None,
) -> Translation:
    """Capture and translate ``model``, with ``Node.trainable`` set (no loss, no passes)."""
    refusals = refusals or Refusals()
    program = capture(model, example_inputs)
    state = translate(program, image_input, input_names)
    mark_trainable(state, trainable_parameters(model, optimizer, trainable), refusals)
    return state
