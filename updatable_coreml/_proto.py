"""Core ML protobuf classes without running ``coremltools/__init__``.

``import coremltools`` imports TensorFlow and torch (~4 s); the generated protobuf modules
alone load in a few hundredths of a second. We import ``coremltools.proto`` under a
temporary package stub and then remove the stub, so a later ``import coremltools`` still
runs the real package ``__init__`` and reuses these very modules (no double registration).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types


def _load_proto_package() -> types.ModuleType:
    if "coremltools.proto.Model_pb2" in sys.modules:
        return sys.modules["coremltools.proto"]
    if "coremltools" in sys.modules:
        return importlib.import_module("coremltools.proto")
    found = importlib.util.find_spec("coremltools")
    if found is None or found.origin is None:
        raise ImportError("coremltools is not installed: pip install 'coremltools>=8,<10'")
    stub = types.ModuleType("coremltools")
    stub.__path__ = [os.path.dirname(found.origin)]
    sys.modules["coremltools"] = stub
    try:
        package = importlib.import_module("coremltools.proto")
        for name in (
            "Model_pb2",
            "NeuralNetwork_pb2",
            "FeatureTypes_pb2",
            "Parameters_pb2",
            "NearestNeighbors_pb2",
            "DataStructures_pb2",
        ):
            importlib.import_module(f"coremltools.proto.{name}")
    finally:
        if sys.modules.get("coremltools") is stub:
            del sys.modules["coremltools"]
    return package


_package = _load_proto_package()
Model_pb2 = _package.Model_pb2
NeuralNetwork_pb2 = _package.NeuralNetwork_pb2
FeatureTypes_pb2 = _package.FeatureTypes_pb2
Parameters_pb2 = _package.Parameters_pb2
NearestNeighbors_pb2 = _package.NearestNeighbors_pb2
DataStructures_pb2 = _package.DataStructures_pb2
