"""Model files are untrusted input: mutated bytes and specs must give a clean error or a
result from load/inspect/validate, never a crash.

Normal suite: a few hundred examples. Long run (10,000 examples per property):
    ./dev fuzz     (FUZZ_EXAMPLES=10000 pytest tests/test_fuzz.py)
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import mlp_regressor, squeezenet_like
from updatable_coreml import inspect, make_updatable, validate
from updatable_coreml.errors import UpdatableCoreMLError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))


def _seeds() -> list[bytes]:
    classifier = make_updatable(squeezenet_like(), layers=["fc"], expand_classes=5, seed=1)
    regressor = make_updatable(mlp_regressor(), layers=["out"], loss="mse", optimizer="adam")
    return [classifier.SerializeToString(), regressor.SerializeToString()]


SEEDS = _seeds()


def _exercise(data: bytes) -> None:
    try:
        info = inspect(data)
        info.text()
        info.to_dict()
        for finding in validate(data):
            str(finding)
    except UpdatableCoreMLError:
        pass


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif action == "set" and data:
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_mutated_bytes_never_crash(data):
    _exercise(data)


@settings(max_examples=max(EXAMPLES // 3, 1), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=512))
def test_random_bytes_never_crash(data):
    _exercise(data)


@pytest.mark.parametrize("mutate", [
    lambda s: s.neuralNetworkClassifier.layers[0].ClearField("input"),
    lambda s: s.neuralNetworkClassifier.layers[-2].innerProduct.ClearField("weights"),
    lambda s: setattr(s.neuralNetworkClassifier.layers[0].convolution, "outputChannels", 2**62),
    lambda s: s.neuralNetworkClassifier.layers[0].convolution.kernelSize.extend([2**40]),
    lambda s: s.description.input[0].type.multiArrayType.shape.extend([2**40, -5]),
    lambda s: setattr(s.description.input[0].type.multiArrayType, "dataType", 12345),
    lambda s: s.neuralNetworkClassifier.updateParams.ClearField("optimizer"),
    lambda s: s.neuralNetworkClassifier.updateParams.lossLayers.add(),
    lambda s: s.neuralNetworkClassifier.layers[3].output.append("classLabelProbs"),
    lambda s: s.description.ClearField("trainingInput"),
    lambda s: setattr(s.neuralNetworkClassifier.layers[4].pooling, "type", 99),
    lambda s: s.neuralNetworkClassifier.ClearField("stringClassLabels"),
])
def test_mutated_specs_never_crash(mutate):
    spec = make_updatable(squeezenet_like(), layers=["fc"])
    mutate(spec)
    _exercise(spec.SerializeToString())
