"""Outputs survive SIGKILL at any moment: the destination is the previous complete file or
the new complete file, never a partial one."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from updatable_coreml._proto import Model_pb2
from updatable_coreml.spec_io import save_spec

RUNS = 24


def _model(width: int) -> Model_pb2.Model:
    """A 16 MB plain network: big enough that the write takes a measurable time."""
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    spec.description.input.add(name="x").type.multiArrayType.shape.append(width)
    spec.description.output.add(name="probs").type.multiArrayType.shape.append(10)
    nn = spec.neuralNetwork
    for name, src, dst, n_in, n_out in (("fc0", "x", "h", width, width), ("fc1", "h", "logits", width, 10)):
        layer = nn.layers.add(name=name, input=[src], output=[dst])
        ip = layer.innerProduct
        ip.inputChannels, ip.outputChannels, ip.hasBias = n_in, n_out, True
        ip.weights.floatValue.extend(np.full(n_in * n_out, 0.5, np.float32))
        ip.bias.floatValue.extend(np.zeros(n_out, np.float32))
    nn.layers.add(name="softmax", input=["logits"], output=["probs"]).softmax.SetInParent()
    return spec


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_make_updatable_killed_at_random_moments(tmp_path):
    source = tmp_path / "in.mlmodel"
    save_spec(_model(2000), source)
    dest = tmp_path / "out" / "Updatable.mlmodel"
    dest.parent.mkdir()
    cmd = [sys.executable, "-m", "updatable_coreml.cli", "make-updatable", str(source), "-o",
           str(dest), "--layers", "fc1", "-q"]
    clean = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    assert os.listdir(dest.parent) == ["Updatable.mlmodel"]
    complete = _sha(dest)

    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, timeout=120)
    duration = time.perf_counter() - start
    previous = b"previous complete file"
    rng = random.Random(1234)
    outcomes = {"previous": 0, "new": 0}
    for _ in range(RUNS):
        dest.write_bytes(previous)
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, duration))
        process.send_signal(signal.SIGKILL)
        process.wait()
        data = dest.read_bytes()
        if data == previous:
            outcomes["previous"] += 1
        else:
            assert _sha(dest) == complete, "destination holds a partial or different file"
            outcomes["new"] += 1
    assert sum(outcomes.values()) == RUNS
