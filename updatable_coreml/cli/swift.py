"""``updatable-coreml swift MODEL -o FILE.swift``: the app-side training glue for a model."""

from __future__ import annotations

import argparse

from .common import EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "swift",
        help="generate Swift glue (input builder, batch provider, "
        "MLUpdateTask trainer) for an updatable model",
    )
    p.add_argument(
        "model", help="an updatable .mlmodel (network, k-NN, or a pipeline ending in one)"
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE.swift", help="the Swift file to write"
    )
    p.add_argument(
        "--class-name",
        metavar="NAME",
        help="Swift class name (default: the model file's stem + Trainer)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..swift import write_swift

    write_swift(args.model, args.output, class_name=args.class_name)
    return EXIT_OK
