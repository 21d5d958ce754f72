"""The program: the top-level parser, dispatch to a subcommand, and the exit-code contract.

Exit codes: 0 success/valid, 1 model invalid (validate, export), 2 unusable input, unsupported
construct or missing optional dependency (one line on stderr, no traceback, no output file),
130 interrupted, 141 stdout closed by the reader (``... | head``), as a shell reports SIGPIPE.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import UpdatableCoreMLError
from . import demo, export, inspect, make_updatable, plan, simulate, swift, validate
from .common import EXIT_USAGE, Parser

#: Subcommands in the order ``--help`` lists them. Each module registers its own parser and
#: keeps its heavy imports inside its functions, so building the parser stays fast.
COMMANDS = (inspect, validate, make_updatable, export, simulate, plan, swift, demo)

EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141


def build_parser() -> Parser:
    parser = Parser(
        prog="updatable-coreml",
        description="Export, check and rehearse updatable Core ML models (exit codes: "
        "0 ok, 1 invalid model, 2 unusable input).",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the program's version and exit",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=Parser, metavar="COMMAND"
    )
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return code
    except UpdatableCoreMLError as exc:
        print(f"updatable-coreml: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader stopped reading (``inspect M | head -5``): not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("updatable-coreml: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
