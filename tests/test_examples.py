"""Every example in examples/ runs as a user would run it (smoke test: exit 0, files written).

The examples assert their own numbers (parity, accuracy); the Makefile pipeline example is
run by tests/test_export_cli.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CASES = {
    "keras_mnist_callback.py": lambda out: [str(out)],
    "keras_sensor.py": lambda out: [str(out)],
    "torch_export.py": lambda out: [str(out / "Classifier.mlmodel")],
    "torch_squeezenet_resnet.py": lambda out: [str(out)],
    "knn_personalization.py": lambda out: ["--plot", str(out / "curve.png"), "--out", str(out)],
    "make_updatable_existing.py": lambda out: [str(out)],
    "simulate_personalization.py": lambda out: [str(out)],
    "plan_digits.py": lambda out: [str(out), "--quick"],
    "plan_wine.py": lambda out: [str(out), "--quick"],
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs(script, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *CASES[script](out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert any(p.suffix == ".mlmodel" for p in out.rglob("*")), sorted(out.rglob("*"))
