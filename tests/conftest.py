"""Suite-wide hooks.

``UCML_RECORD_WRITES=FILE`` appends one JSON line per file our atomic writer produces
(test id, file name, sha256). Refactors compare two such records to prove that every test
model still exports to byte-identical files (``tools/compare_writes.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import types

_RECORD = os.environ.get("UCML_RECORD_WRITES")

if _RECORD:
    from updatable_coreml import spec_io

    def _replace(src, dst, *args, **kwargs):
        with open(src, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
        with open(_RECORD, "a") as out:
            out.write(
                json.dumps({"test": test, "name": os.path.basename(dst), "sha256": digest}) + "\n"
            )
        return os.replace(src, dst, *args, **kwargs)

    _proxy = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    _proxy.replace = _replace
    spec_io.os = _proxy  # only spec_io's own calls go through the recorder
