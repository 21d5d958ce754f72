"""One refuse-or-downgrade mechanism for every frontend.

An option Core ML cannot carry (a loss's class weights, an optimizer's weight decay, a layer
that trains but cannot) is an error that names it and the fix; ``allow_unsupported=True``
(``--allow-unsupported``) turns it into a report warning that also says what the export did
instead. Never a silent change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import UnsupportedError


def refuse(
    allow: bool, warnings: list[str], message: str, instead: str, error: type = UnsupportedError
) -> None:
    """Raise ``error(message)`` naming the downgrade, or with ``allow`` append a warning that
    says what the export did ``instead``."""
    if not allow:
        raise error(
            f"{message} (--allow-unsupported / allow_unsupported=True exports anyway: {instead})"
        )
    warnings.append(f"{message} [allow_unsupported: {instead}]")


@dataclass
class Refusals:
    """Raise an option refusal, or, with ``allow``, record it as a warning saying what was done."""

    allow: bool = False
    warnings: list[str] = field(default_factory=list)

    def refuse(self, message: str, instead: str, error: type = UnsupportedError) -> None:
        refuse(self.allow, self.warnings, message, instead, error)
