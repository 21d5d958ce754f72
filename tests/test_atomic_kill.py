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
    for feature, size in (
        (spec.description.input.add(name="x"), width),
        (spec.description.output.add(name="probs"), 10),
    ):
        feature.type.multiArrayType.shape.append(size)
        feature.type.multiArrayType.dataType = (
            feature.type.multiArrayType.FLOAT32
        )  # Core ML needs one
    nn = spec.neuralNetwork
    for name, src, dst, n_in, n_out in (
        ("fc0", "x", "h", width, width),
        ("fc1", "h", "logits", width, 10),
    ):
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
    cmd = [
        sys.executable,
        "-m",
        "updatable_coreml.cli",
        "make-updatable",
        str(source),
        "-o",
        str(dest),
        "--trainable",
        "fc1",
        "-q",
    ]
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


# -- export and simulate --out: a fork server aims the kills -------------------------------------
#
# Starting Python, torch and the exporter costs ~3 s per run, so 20+ runs per command would
# not fit the test budget. A fork server imports everything once (torch with one thread, so
# forking is safe) and warms up with one clean run; each kill run is a forked child that runs
# ``cli.main(argv)`` from its start. The server, not the test, sends SIGKILL: the child is its
# own unreaped child, so the pid cannot belong to another process. Half the runs are killed at
# a uniformly random moment of the whole run, half at a random moment of the write window
# (from the temp file's creation to the exit; the child reports that moment on a pipe).

FORK_SERVER = r"""
import json, os, signal, sys, tempfile, time
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
for name in json.loads(sys.argv[2]):
    __import__(name)
if "torch" in sys.modules:
    sys.modules["torch"].set_num_threads(1)
from updatable_coreml import cli
argv = json.loads(sys.argv[1])


def child(notify):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    mkstemp = tempfile.mkstemp

    def reporting_mkstemp(*args, **kwargs):
        os.write(notify, b"W")
        return mkstemp(*args, **kwargs)

    tempfile.mkstemp = reporting_mkstemp
    try:
        code = cli.main(argv)
    except BaseException:
        code = 99
    os._exit(code)


def run(mode, delay):
    read, write = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        child(write)
    os.close(write)
    wrote_at = None
    if mode in ("write", "clean"):
        if os.read(read, 1):
            wrote_at = time.perf_counter()
    deadline = (wrote_at or start) + delay
    killed = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if mode != "clean" and time.perf_counter() >= deadline:
            os.kill(pid, signal.SIGKILL)  # our own unreaped child
            os.waitpid(pid, 0)
            killed, status = True, -9
            break
        time.sleep(0.0005)
    end = time.perf_counter()
    os.close(read)
    code = os.waitstatus_to_exitcode(status) if status != -9 else -9
    return {"killed": killed, "code": code, "total": end - start,
            "write": None if wrote_at is None else end - wrote_at}


def warm_up():
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        code = cli.main(argv)
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
    return code


# A first run in this process loads everything lazily imported (and writes the output); the
# forked children start from that warm state.
print(json.dumps({"ready": True, "code": warm_up()}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    print(json.dumps(run(request["mode"], request["delay"])), flush=True)
"""


class ForkServer:
    def __init__(self, argv: list, preload: list) -> None:
        import json

        self.json = json
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                FORK_SERVER,
                json.dumps([str(a) for a in argv]),
                json.dumps(preload),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = json.loads(self.process.stdout.readline())
        assert hello["ready"] and hello["code"] == 0, hello

    def run(self, mode: str, delay: float = 0.0) -> dict:
        self.process.stdin.write(self.json.dumps({"mode": mode, "delay": delay}) + "\n")
        self.process.stdin.flush()
        return self.json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def _kill_runs(argv: list, preload: list, dest, runs: int, seed: int) -> dict:
    """Kill ``runs`` forked runs of the CLI; the destination must always hold the previous
    file or the complete new one. Returns the outcome counts."""
    server = ForkServer(argv, preload)
    try:
        clean = server.run("clean")
        assert clean["code"] == 0 and not clean["killed"], clean
        assert os.listdir(dest.parent) == [dest.name], "a clean run left temp files"
        complete = _sha(dest)
        warm = server.run("clean")  # timings of a warmed-up run (the first one loads lazily)
        assert warm["code"] == 0 and _sha(dest) == complete, "the output is not deterministic"
        previous = b"previous complete file"
        rng = random.Random(seed)
        outcomes = {
            "previous": 0,
            "new": 0,
            "killed_in_write": 0,
            "run_s": round(warm["total"], 3),
            "write_s": round(warm["write"], 4),
        }
        for index in range(runs):
            dest.write_bytes(previous)
            if index % 2:
                result = server.run("anywhere", rng.uniform(0, warm["total"]))
            else:
                result = server.run("write", rng.uniform(0, warm["write"]))
                outcomes["killed_in_write"] += result["killed"]
            assert result["killed"] or result["code"] == 0, result
            if dest.read_bytes() == previous:
                outcomes["previous"] += 1
            else:
                assert _sha(dest) == complete, "destination holds a partial or different file"
                outcomes["new"] += 1
            for leftover in set(os.listdir(dest.parent)) - {dest.name}:  # SIGKILL leaves temps
                assert leftover.startswith(f".{dest.name}.") and leftover.endswith(".tmp"), leftover
                (dest.parent / leftover).unlink()
        return outcomes
    finally:
        server.close()


@pytest.mark.slow
def test_export_killed_at_random_moments(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "net.py").write_text(
        "import torch\nfrom torch import nn\n\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),\n"
        "                         nn.Linear(1024, 10))\n"
    )
    dest = tmp_path / "out" / "Exported.mlmodel"
    dest.parent.mkdir()
    argv = [
        "export",
        f"{tmp_path / 'net.py'}:build",
        "--example-shape",
        "256",
        "--loss",
        "cce",
        "--trainable",
        "4",
        "--seed",
        "0",
        "-o",
        dest,
    ]
    outcomes = _kill_runs(
        argv,
        ["torch", "updatable_coreml.exporters.torch", "updatable_coreml.validator"],
        dest,
        RUNS,
        seed=2024,
    )
    assert outcomes["previous"] and outcomes["killed_in_write"] >= 3, (
        outcomes
    )  # kills hit the write


@pytest.mark.slow
def test_simulate_out_killed_at_random_moments(tmp_path):
    from updatable_coreml import make_updatable

    model = tmp_path / "Wide.mlmodel"
    make_updatable(_model(1000), model, layers=["fc0", "fc1"], batch_size=8, seed=0)
    data = tmp_path / "train.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(16, 1000)).astype(np.float32), y=rng.integers(0, 10, 16))
    dest = tmp_path / "out" / "Updated.mlmodel"
    dest.parent.mkdir()
    argv = ["simulate", model, "--train", data, "--epochs", "1", "-o", dest]
    outcomes = _kill_runs(argv, ["updatable_coreml.runtime.simulate"], dest, RUNS, seed=7)
    assert outcomes["previous"] and outcomes["killed_in_write"] >= 3, (
        outcomes
    )  # kills hit the write
