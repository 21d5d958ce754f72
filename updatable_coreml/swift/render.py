"""Filling the Swift templates (``templates/*.swift.tmpl``, shipped as package data).

Placeholders are ``${name}`` only: Swift itself uses ``$0`` (closure arguments) and ``\\(x)``
(interpolation), which stay as they are. Every placeholder of a template must be given and
every value given must be used, so a renamed placeholder cannot silently leave a hole or a
stale value in the generated file.
"""

from __future__ import annotations

import re
import string
from functools import cache
from importlib import resources


class SwiftTemplate(string.Template):
    """``${name}`` placeholders; a bare ``$`` (``$0``) is Swift's, not ours."""

    flags = re.RegexFlag(0)  # case-sensitive, like _PLACEHOLDER

    pattern = r"""\$\{(?:
        (?P<braced>[a-z_][a-z0-9_]*)\} |
        (?P<escaped>\$)\} |
        (?P<named>(?!)) |
        (?P<invalid>)
    )"""  # type: ignore[assignment]  # a str: Template compiles it


_PLACEHOLDER = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")


@cache
def template(name: str) -> str:
    folder = resources.files(__package__).joinpath("templates")
    return folder.joinpath(name).read_text(encoding="utf-8")


def render(name: str, /, **values: str) -> str:
    """The template ``name`` with every placeholder replaced by ``values``."""
    text = template(name)
    wanted, given = set(_PLACEHOLDER.findall(text)), set(values)
    if wanted != given:
        raise KeyError(f"{name}: placeholders {sorted(wanted)} but values for {sorted(given)}")
    return SwiftTemplate(text).substitute(values)
