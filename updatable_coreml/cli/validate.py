"""``updatable-coreml validate MODEL...``: Core ML's updatable rules, plus device pitfalls."""

from __future__ import annotations

import argparse
import json

from .common import EXIT_INVALID, EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check models with Core ML's updatable rules",
        description="Check models with Core ML's rules for updatable models. Exit "
        "0 when every model is valid, 1 when one is not.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="one or more .mlmodel files")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..validator import validate

    worst = EXIT_OK
    report = {}
    for path in args.models:
        findings = validate(path)
        errors = [
            f
            for f in findings
            if f.severity == "error" or (args.strict and f.severity == "warning")
        ]
        worst = max(worst, EXIT_INVALID if errors else EXIT_OK)
        report[path] = {"valid": not errors, "findings": [f.to_dict() for f in findings]}
        if not args.json:
            print(f"{path}: {'invalid' if errors else 'valid'}")
            for finding in findings:
                print(f"  {finding}")
    if args.json:
        print(json.dumps(report, indent=2))
    return worst
