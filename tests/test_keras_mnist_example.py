"""The coremltools docs' MNIST model (examples/keras_mnist_callback.py): exported through the
callback, valid, and both parities hold."""

from __future__ import annotations

import sys
from pathlib import Path

from updatable_coreml.validator import is_valid, validate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from keras_mnist_callback import export_and_check


def test_mnist_example_exports_validates_and_matches_keras(tmp_path):
    forward, training = export_and_check(tmp_path, count=128)
    assert is_valid(validate(tmp_path / "MNISTDigitClassifier.mlmodel"))
    assert forward <= 1e-4
    assert training <= 1e-4
