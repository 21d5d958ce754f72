"""``updatable-coreml demo``: the end-to-end job on bundled digits (``updatable_coreml.demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_OK, deprecated_alias
from .deps import require


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run the end-to-end demo on bundled digits (no downloads)")
    parser.add_argument(
        "-o",
        "--output",
        default="demo-output",
        metavar="FOLDER",
        help="folder for the demo's files (default: %(default)s)",
    )
    deprecated_alias(parser, "--out", "-o/--output", dest="output", metavar="FOLDER")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data split, the training and the shuffle (default: %(default)s)",
    )
    parser.add_argument(
        "--shots", type=int, default=5, help="examples per new digit (default: %(default)s)"
    )
    parser.add_argument(
        "--epochs", type=int, default=20, help="on-device epochs (default: %(default)s)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for module in ("sklearn", "matplotlib", "keras"):
        require(module, "the demo", extra="demo")
    from ..demo import run as run_demo

    run_demo(Path(args.output), seed=args.seed, shots=args.shots, epochs=args.epochs)
    return EXIT_OK
