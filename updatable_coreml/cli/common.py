"""What every subcommand shares: exit codes, the one-line usage error, flag parsers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def int_list(value: Any, key: str = "value") -> list[int]:
    """Integers from ``'1,2,8'`` (a flag) or a list (a config file)."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        return [int(v) for v in items if str(v).strip()]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key}: expected integers (a list or 'N,N,...'), got {value!r}"
        ) from None


def float_pair(value: Any, key: str = "value") -> tuple[float, float]:
    """``MIN,MAX`` from a flag or a two-item list."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        low, high = (float(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected MIN,MAX, got {value!r}") from None
    return low, high


def flag(parse: Callable[[Any, str], Any], key: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that reports a bad value as one usage line."""

    def convert(text: str) -> Any:
        try:
            return parse(text, key)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def deprecated_alias(
    parser: argparse.ArgumentParser,
    old: str,
    new: str,
    *,
    dest: str,
    note: str = "",
    **options: Any,
) -> None:
    """``old`` keeps working, hidden from ``--help``, with one warning line naming ``new``.

    ``dest`` is where the value goes (the new flag's, or a separate one when the meaning
    differs, e.g. a total instead of a count of spare slots; ``note`` says how).
    """

    class Alias(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            import sys

            print(
                f"updatable-coreml: warning: {old} is deprecated, use {new}{note}", file=sys.stderr
            )
            setattr(namespace, self.dest, True if self.nargs == 0 else values)

    parser.add_argument(old, dest=dest, action=Alias, help=argparse.SUPPRESS, **options)
