"""``updatable-coreml plan``: registered from ``updatable_coreml.plan.command``, which holds
its options and its run function (kept there by its owner; it imports nothing heavy)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..plan.command import add_cli_command

    add_cli_command(sub)
