"""``updatable-coreml demo``: the end-to-end job on bundled digits (``updatable_coreml.demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_OK
from .deps import require


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run the end-to-end demo on bundled digits (no downloads)")
    parser.add_argument("--out", default="demo-output", help="folder for the demo's files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=5, help="examples per new digit")
    parser.add_argument("--epochs", type=int, default=20, help="on-device epochs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for module in ("sklearn", "matplotlib", "keras"):
        require(module, "the demo", extra="demo")
    from ..demo import run as run_demo

    run_demo(Path(args.out), seed=args.seed, shots=args.shots, epochs=args.epochs)
    return EXIT_OK
