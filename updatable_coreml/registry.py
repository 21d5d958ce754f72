"""The one registry pattern every converter table and the runtime's op table use."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class Registry(dict):
    """Name -> function table filled by a decorator; a name registered twice is a bug, caught
    at import time rather than silently shadowing the first function."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, *names: str) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            for name in names:
                if name in self:
                    raise ValueError(f"{self.kind} {name!r} registered twice")
                self[name] = fn
            return fn

        return decorate
