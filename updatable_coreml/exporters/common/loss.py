"""The loss every frontend maps its framework's loss to."""

from __future__ import annotations

from dataclasses import dataclass

#: The losses Core ML trains on device: categorical cross-entropy and mean squared error.
LOSS_KINDS = ("cce", "mse")


@dataclass(frozen=True)
class LossPlan:
    """The Core ML loss for a framework's loss: ``kind`` (``cce``/``mse``), whether the model
    output it reads holds logits (the export then appends the softmax cross-entropy needs),
    the output it reads (empty when the frontend leaves that to the graph) and the
    framework's own name for the loss (for report notes)."""

    kind: str
    from_logits: bool
    output: str = ""
    source_name: str = ""
