"""Issue 14's architecture lists through our own frontends as one network: export, validate,
forward parity and update parity (tests/architectures.py does the measuring).

A case still refused is an xfail when it fails at the recorded stage for the recorded reason;
once a converter makes it pass (or it fails differently), the suite fails until
KNOWN_FAILURES is updated and docs/architectures.md regenerated
(``python tools/architectures.py --write``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("keras")

import architectures

HARNESS = Path(architectures.__file__)

#: Representative cases run on every test run; the rest is marked slow.
FAST = ("keras:MobileNetV2", "torch:squeezenet1_1")

#: Cases that do not pass yet: the first failing stage and what it says.
KNOWN_FAILURES: dict[str, tuple[str, str]] = {}


def _param(key: str):
    return pytest.param(key, marks=[] if key in FAST else [pytest.mark.slow], id=key)


@pytest.fixture(scope="module")
def measured(request) -> dict:
    """Every selected case, measured in one child process: real models take gigabytes, which
    would otherwise stay in pytest's peak memory (and disturb tests that watch it)."""
    keys = [
        item.callspec.params["key"]
        for item in request.session.items
        if getattr(item, "callspec", None) and item.originalname == PARITY_TEST
    ]
    done = subprocess.run(
        [sys.executable, str(HARNESS), "--no-fallback", *keys],
        capture_output=True,
        text=True,
        cwd=HARNESS.parent,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=3600,
    )
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            fields = json.loads(line)
            key = fields.pop("key")
            results[key] = architectures.Result(**fields)
    assert done.returncode == 0 and set(results) == set(keys), done.stderr[-3000:]
    return results


PARITY_TEST = "test_architecture_exports_as_one_network_with_parity"


@pytest.mark.parametrize("key", [_param(key) for key in architectures.CASES])
def test_architecture_exports_as_one_network_with_parity(key, measured):
    result = measured[key]
    if key in KNOWN_FAILURES:
        stage, words = KNOWN_FAILURES[key]
        if result.failed == stage and words in result.reason:
            pytest.xfail(f"known failure at {stage}: {result.reason}")
        if not result.failed:
            pytest.fail(
                f"{key} now passes: remove it from KNOWN_FAILURES and regenerate "
                "docs/architectures.md (python tools/architectures.py --write)"
            )
        pytest.fail(
            f"{key} fails differently from the recorded {stage!r} ({words!r}): "
            f"at {result.failed}: {result.reason}"
        )
    assert not result.failed, f"fails at {result.failed}: {result.reason}"
    assert result.mode == "single network"
    assert result.forward <= architectures.TOLERANCE
    assert result.update <= architectures.TOLERANCE


def test_known_failures_and_fast_cases_name_real_cases():
    assert set(KNOWN_FAILURES) <= set(architectures.CASES)
    assert set(FAST) <= set(architectures.CASES) - set(KNOWN_FAILURES)


def test_torchvision_models_load_without_compiled_ops():
    import torch

    from torchvision_models import torchvision_models

    models = torchvision_models()
    model = models.resnet18(num_classes=3).eval()
    with torch.no_grad():
        assert tuple(model(torch.zeros(1, 3, 32, 32)).shape) == (1, 3)
    assert torch.__version__.startswith("2.13"), "torchvision must not replace torch"
