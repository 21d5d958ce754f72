"""``python -m updatable_coreml.cli``: the same program as the ``updatable-coreml`` script."""

import sys

from .main import main

sys.exit(main())
