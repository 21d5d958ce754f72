"""Model files are untrusted input: mutated bytes and specs must give a clean error or a
result from load/inspect/validate and from the runtime (``runtime.load`` + a prediction on
zeros of the declared input shapes), never a crash, a hang or unbounded memory.

Bounds, per example: ``TIME_LIMIT_S`` of wall time (SIGALRM raises ``Hang``, which no
library ``except Exception`` can swallow) and ``MEMORY_GROWTH_MB`` of peak RSS growth over
the whole run. The runtime's blob budget is lowered to ``FUZZ_BLOB_ELEMENTS`` so a model
that declares a big-but-allowed shape still runs quickly; the loader must refuse anything
larger before the test builds its zeros.

Normal suite: 300 examples per property (a few seconds each). Long run:
    ./dev fuzz     (FUZZ_EXAMPLES=10000 pytest tests/test_fuzz.py; prints the count)
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import mlp_regressor, squeezenet_like
from updatable_coreml import inspect, make_updatable, validate
from updatable_coreml._proto import Model_pb2
from updatable_coreml.errors import UpdatableCoreMLError
from updatable_coreml.runtime import limits, load

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
TIME_LIMIT_S = 10.0
MEMORY_GROWTH_MB = 1024
FUZZ_BLOB_ELEMENTS = 2**20
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


def _knn_pipeline() -> Model_pb2.Model:
    from updatable_coreml.knn import export_knn

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "knn.mlmodel"
        export_knn(mlp_regressor(), path, feature_layer="h_act", k=2)
        return Model_pb2.Model.FromString(path.read_bytes())


def _image_classifier() -> Model_pb2.Model:
    from bad_input_files import image_classifier

    return image_classifier()


def _seed_specs() -> list[Model_pb2.Model]:
    return [
        make_updatable(squeezenet_like(), layers=["fc"], expand_classes=5, seed=1),
        make_updatable(mlp_regressor(), layers=["out"], loss="mse", optimizer="adam"),
        _image_classifier(),
        _knn_pipeline(),
    ]


SEED_SPECS = _seed_specs()
SEEDS = [spec.SerializeToString() for spec in SEED_SPECS]
BASELINE_RSS_KB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.fixture(scope="module", autouse=True)
def small_blob_budget():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(limits, "MAX_BLOB_ELEMENTS", FUZZ_BLOB_ELEMENTS)
        yield


# -- the bounded exercise ------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by SIGALRM: an example ran longer than ``TIME_LIMIT_S``."""


@contextlib.contextmanager
def _bounded(seconds: float = TIME_LIMIT_S):
    def alarm(signum, frame):
        raise Hang(f"an example ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - BASELINE_RSS_KB) / 1024
    assert grown < MEMORY_GROWTH_MB, f"peak memory grew by {grown:.0f} MB"


def _zeros(description) -> dict:
    """One example of zeros for every input, in its declared shape (the runtime must have
    refused shapes beyond its budget at load)."""
    features = {}
    for feature in description.input:
        kind = feature.type.WhichOneof("Type")
        if kind == "multiArrayType":
            array = feature.type.multiArrayType
            shape = list(array.shape) or (
                list(array.enumeratedShapes.shapes[0].shape)
                if array.enumeratedShapes.shapes
                else [1]
            )
            assert min(shape, default=0) >= 0 and math.prod(shape) <= limits.MAX_BLOB_ELEMENTS, (
                f"runtime.load accepted input {feature.name!r} of shape {shape}"
            )
            features[feature.name] = np.zeros(shape, np.float32)
        elif kind == "imageType":
            image = feature.type.imageType
            assert 3 * image.height * image.width <= limits.MAX_BLOB_ELEMENTS, (
                f"runtime.load accepted a {image.width}x{image.height} image input"
            )
            gray = image.colorSpace in (10, 40)  # GRAYSCALE, GRAYSCALE_FLOAT16
            features[feature.name] = np.zeros(
                (image.height, image.width) + (() if gray else (3,)), np.uint8
            )
        elif kind in ("int64Type", "doubleType"):
            features[feature.name] = 0
        elif kind == "stringType":
            features[feature.name] = ""
    return features


def _exercise(data: bytes) -> None:
    with _bounded():
        try:
            info = inspect(data)
            info.text()
            info.to_dict()
            for finding in validate(data):
                str(finding)
        except UpdatableCoreMLError:
            pass
        try:
            model = load(data)
            model.predict(_zeros(model.description))
        except UpdatableCoreMLError:
            pass


# -- byte-level mutations --------------------------------------------------------------------------


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
            del data[at : at + draw(st.integers(1, 64))]
        elif action == "set" and data:
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_bytes_never_crash(data):
    _exercise(data)


@settings(FUZZ, max_examples=max(EXAMPLES // 3, 1))
@given(st.binary(max_size=512))
def test_random_bytes_never_crash(data):
    _exercise(data)


# -- field-level mutations of the spec ----------------------------------------------------------

INTS = [0, 1, 2, 3, 7, 64, 2**16, 2**31 - 1, 2**40, 2**62, -1, -5, -(2**31)]
FLOATS = [0.0, -1.0, 0.5, 1e30, -1e30, float("nan"), float("inf"), float("-inf")]
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
FLOAT_TYPES = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)


def _is_map(field) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _candidates(message, found: list) -> list:
    """Every (message, field) of ``message`` and the messages inside it; a repeated scalar
    field (e.g. thousands of weights) is one candidate."""
    for field in message.DESCRIPTOR.fields:
        if _is_map(field):
            continue
        found.append((message, field))
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.is_repeated:
            for item in getattr(message, field.name):
                _candidates(item, found)
        elif message.HasField(field.name):
            _candidates(getattr(message, field.name), found)
    return found


def _blob_names(spec) -> list[str]:
    names = {f.name for f in (*spec.description.input, *spec.description.output)}
    for message, field in _candidates(spec, []):
        if field.name in ("input", "output") and field.type == FieldDescriptor.TYPE_STRING:
            names.update(getattr(message, field.name))
    return sorted(names) + ["", "nope"]


def _scalar(draw, field, names: list[str]):
    if field.type in INT_RANGES:
        low, high = INT_RANGES[field.type]
        return draw(
            st.sampled_from([v for v in INTS if low <= v <= high] + [draw(st.integers(-3, 40))])
        )
    if field.type in FLOAT_TYPES:
        return draw(st.sampled_from(FLOATS))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return draw(st.booleans())
    if field.type == FieldDescriptor.TYPE_STRING:
        return draw(st.sampled_from(names))
    return draw(st.binary(max_size=16))  # bytes


def _mutate(draw, spec) -> None:
    message, field = draw(st.sampled_from(_candidates(spec, [])))
    names = _blob_names(spec)
    repeated = field.is_repeated
    container = getattr(message, field.name)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        action = draw(st.sampled_from(["clear", "drop", "duplicate"] if repeated else ["clear"]))
        if action == "clear" or not repeated or not len(container):
            message.ClearField(field.name)
        elif action == "drop":
            del container[draw(st.integers(0, len(container) - 1))]
        else:
            container.add().CopyFrom(container[draw(st.integers(0, len(container) - 1))])
        return
    value = _scalar(draw, field, names)
    if not repeated:
        setattr(message, field.name, value)
        return
    action = draw(st.sampled_from(["clear", "append", "drop", "set"]))
    if action == "clear" or (action in ("drop", "set") and not len(container)):
        message.ClearField(field.name)
    elif action == "append":
        container.append(value)
    elif action == "drop":
        del container[draw(st.integers(0, len(container) - 1))]
    else:
        container[draw(st.integers(0, len(container) - 1))] = value


@st.composite
def mutated_spec(draw) -> bytes:
    spec = Model_pb2.Model()
    spec.CopyFrom(draw(st.sampled_from(SEED_SPECS)))
    for _ in range(draw(st.integers(1, 4))):
        try:
            _mutate(draw, spec)
        except (ValueError, TypeError, OverflowError):
            pass  # a value the field cannot hold (protobuf refuses it)
    return spec.SerializeToString()


@FUZZ
@given(mutated_spec())
def test_mutated_spec_fields_never_crash(data):
    _exercise(data)


# -- hand-picked mutations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate",
    [
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
        lambda s: s.neuralNetworkClassifier.layers[
            0
        ].convolution.valid.paddingAmounts.borderAmounts.add(
            startEdgeSize=2**40, endEdgeSize=2**40
        ),
        lambda s: (
            setattr(s.neuralNetworkClassifier.layers[0].convolution, "isDeconvolution", True)
            or s.neuralNetworkClassifier.layers[0].convolution.stride.extend([2**30, 2**30])
        ),
        lambda s: s.description.input[0].type.multiArrayType.shape.__setitem__(2, 2**19),
    ],
)
def test_mutated_specs_never_crash(mutate):
    spec = make_updatable(squeezenet_like(), layers=["fc"])
    mutate(spec)
    _exercise(spec.SerializeToString())


def test_the_bounds_can_fail():
    """The guards are real: a model the runtime accepts but that exceeds the budget is caught
    by the zeros check, and a slow call trips the alarm."""
    spec = make_updatable(mlp_regressor(), layers=["out"], loss="mse")
    spec.description.input[0].type.multiArrayType.shape[:] = [2**21]
    with pytest.raises(UpdatableCoreMLError, match="refuses blobs"):
        load(spec)
    with pytest.raises(AssertionError, match="accepted input"):
        _zeros(spec.description)
    with pytest.raises(Hang):
        with _bounded(0.05):
            time.sleep(1)


def test_count_is_reported(capsys):
    with capsys.disabled():
        print(
            f"\nfuzz: {EXAMPLES} examples per property (mutated bytes, mutated spec fields), "
            f"{max(EXAMPLES // 3, 1)} random byte strings"
        )
