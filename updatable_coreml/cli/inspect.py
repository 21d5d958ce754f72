"""``updatable-coreml inspect MODEL``: what a model takes, gives, trains, and how."""

from __future__ import annotations

import argparse
import json

from .common import EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="show inputs, outputs, layers and update parameters",
        description="Describe a .mlmodel or .mlpackage: inputs, outputs, training "
        "inputs, layers (updatable, on the backprop path) and update "
        "parameters. Exit 0 when the file could be read.",
    )
    p.add_argument("model", help="a .mlmodel file or an .mlpackage folder")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..inspection import inspect

    info = inspect(args.model)
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.text())
    return EXIT_OK
