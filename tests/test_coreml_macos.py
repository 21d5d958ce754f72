"""On macOS, real Core ML is the referee: our runtime must predict what MLModel.predict does.

Skipped elsewhere (Core ML prediction only runs on Apple platforms). Run on a Mac with
``./dev test tests/test_coreml_macos.py``.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from models import mlp_regressor, squeezenet_like
from updatable_coreml import make_updatable
from updatable_coreml.runtime import load

pytestmark = [pytest.mark.macos,
              pytest.mark.skipif(sys.platform != "darwin", reason="Core ML runs only on macOS")]


@pytest.mark.parametrize("build, layers, loss", [
    (squeezenet_like, ["fc"], "cce"),
    (mlp_regressor, ["out"], "mse"),
])
def test_runtime_predicts_like_core_ml(build, layers, loss, tmp_path):
    import coremltools as ct

    path = tmp_path / "model.mlmodel"
    make_updatable(build(), path, layers=layers, loss=loss)
    ours, theirs = load(path), ct.models.MLModel(str(path))
    description = ours.description.input[0]
    shape = tuple(description.type.multiArrayType.shape)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.normal(0, 1, shape).astype(np.float32)
        expected = theirs.predict({description.name: x})
        got = ours.predict({description.name: x})
        for name, value in expected.items():
            if isinstance(value, dict):
                for label, probability in value.items():
                    assert abs(got[name][label] - probability) <= 1e-4
            elif isinstance(value, str):
                assert got[name] == value
            else:
                np.testing.assert_allclose(np.asarray(got[name]).reshape(-1),
                                           np.asarray(value).reshape(-1), atol=1e-4)
