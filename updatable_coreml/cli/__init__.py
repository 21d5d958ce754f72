"""The ``updatable-coreml`` command line: one module per subcommand, built on the library.

The library modules hold no argparse; each module here turns flags into library calls and
library errors into exit codes (0 ok or valid, 1 model invalid, 2 unusable input, one line
on stderr). ``python -m updatable_coreml.cli`` runs the same program as the console script.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
