"""One refuse-or-downgrade mechanism for every frontend.

An option Core ML cannot carry (a loss's class weights, an optimizer's weight decay, a layer
that trains but cannot) is an error that names it and the fix; ``allow_unsupported=True``
(``--allow-unsupported``) turns it into a report warning that also says what the export did
instead. Never a silent change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import UnsupportedError


@dataclass
class Refusals:
    """Raise an option refusal, or, with ``allow``, record it as a warning saying what was done."""

    allow: bool = False
    warnings: list[str] = field(default_factory=list)

    def refuse(self, message: str, instead: str, error: type = UnsupportedError) -> None:
        if not self.allow:
            raise error(message)
        self.warnings.append(f"{message} [allow_unsupported: {instead}]")


