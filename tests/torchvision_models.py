"""torchvision's model definitions, without torchvision's compiled ops.

torchvision 0.28 pairs with torch 2.13, but its PyPI wheel is a CUDA build: beside the CPU
torch wheel its ``_C`` extension does not load, and ``import torchvision`` then fails while
registering fake kernels for that extension's ops ("operator torchvision::nms does not
exist"). The classifiers in ``torchvision.models`` are pure Python and never call those ops,
so the two modules that register them are replaced by empty ones before the import. Weights
are always random: nothing is downloaded.
"""

from __future__ import annotations

import importlib
import sys
import types

#: The modules of torchvision that only register kernels for the compiled ops.
_REGISTRATIONS = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


def torchvision_models() -> types.ModuleType:
    """``torchvision.models``; raises ImportError when torchvision is not installed."""
    if importlib.util.find_spec("torchvision") is None:
        raise ImportError("torchvision is not installed (pip install '.[test]')")
    if "torchvision" not in sys.modules:
        for name in _REGISTRATIONS:
            sys.modules.setdefault(name, types.ModuleType(name))
    return importlib.import_module("torchvision.models")
