"""Core ML's example order: our libc++ ``std::shuffle`` + ``minstd_rand`` emulation, bit for bit.

``tests/golden/libcxx_shuffle.json`` was printed by ``tools/shuffle_golden/shuffle_golden.cpp``
compiled against libc++ (the command is at the top of that file). The golden comparison always
runs; where clang++ with libc++ is installed the program is also compiled and run here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from updatable_coreml.runtime.batch_order import (
    MinstdRand,
    coreml_orders,
    libcxx_shuffle,
    numpy_orders,
    seed_seq_generate,
    uniform_int,
)

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "libcxx_shuffle.json"
PROGRAM = ROOT / "tools" / "shuffle_golden" / "shuffle_golden.cpp"
EPOCHS = 3


def engine_for(seed) -> MinstdRand:
    return MinstdRand() if seed is None else MinstdRand.from_seed_seq(seed)


def check_against(golden: dict) -> None:
    for case in golden["seeded_state"]:
        assert engine_for(case["seed"])() == case["next"], case
    for case in golden["orders"]:
        got = [order.tolist() for order in coreml_orders(case["n"], EPOCHS, True, case["seed"])]
        assert got == case["epochs"], (case["seed"], case["n"])
    for case in golden["uniform"]:
        engine = engine_for(case["seed"])
        got = [uniform_int(engine, case["low"], case["high"]) for _ in case["draws"]]
        assert got == case["draws"], (case["seed"], case["low"], case["high"])


def test_orders_match_the_libcxx_golden_data():
    golden = json.loads(GOLDEN.read_text())
    assert len(golden["orders"]) >= 100 and len(golden["uniform"]) >= 20
    check_against(golden)


def test_golden_data_covers_what_matters():
    """Seeds beyond 32 bits, negative seeds, no seed, sizes 0..1000, shuffles that change."""
    golden = json.loads(GOLDEN.read_text())
    seeds = {case["seed"] for case in golden["orders"]}
    assert {None, 0, -1, 4294967301} <= seeds
    sizes = {case["n"] for case in golden["orders"]}
    assert {0, 1, 2, 1000} <= sizes
    big = next(c for c in golden["orders"] if c["n"] == 1000 and c["seed"] is None)
    assert big["epochs"][0] != big["epochs"][1] != list(range(1000))


def test_seed_is_read_as_32_bits():
    """The provider narrows the seed to an int: 2**32 + 5 seeds like 5, -1 like 2**32 - 1."""
    assert engine_for(2**32 + 5).state == engine_for(5).state
    assert engine_for(-1).state == engine_for(2**32 - 1).state
    assert engine_for(0).state != 1


def test_seed_seq_matches_the_standard_example():
    """[rand.util.seedseq]: generate is deterministic in the seeds; 4 words from one seed."""
    words = seed_seq_generate([42], 4)
    assert len(words) == 4 and all(0 <= w < 2**32 for w in words)
    assert words != seed_seq_generate([43], 4)
    assert seed_seq_generate([], 0) == []


def test_unshuffled_and_numpy_orders():
    assert [o.tolist() for o in coreml_orders(4, 2, False, 3)] == [[0, 1, 2, 3]] * 2
    rng = np.random.default_rng(9)
    assert [o.tolist() for o in numpy_orders(6, 2, True, 9)] == [
        rng.permutation(6).tolist() for _ in range(2)
    ]
    assert [o.tolist() for o in numpy_orders(3, 1, False, None)] == [[0, 1, 2]]


def test_shuffle_keeps_every_index_once():
    values = list(range(257))
    libcxx_shuffle(values, MinstdRand())
    assert sorted(values) == list(range(257)) and values != list(range(257))


def _libcxx_compiler() -> str:
    """clang++ able to build and link against libc++, or a skip saying what is missing."""
    compiler = shutil.which("clang++")
    if compiler is None:
        pytest.skip(
            "clang++ is not installed (Debian: apt-get install clang libc++-dev "
            "libc++abi-dev); the golden data is still checked"
        )
    probe = subprocess.run(
        [compiler, "-std=c++17", "-stdlib=libc++", "-x", "c++", "-", "-o", "/dev/null"],
        input="#include <random>\nint main() {}\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        pytest.skip(
            "clang++ cannot build against libc++ (install libc++-dev libc++abi-dev): "
            + (probe.stderr.strip().splitlines() or ["no output"])[0]
        )
    return compiler


def test_live_libcxx_program_agrees(tmp_path):
    """Compile the golden program against this machine's libc++ and compare its output with
    the checked-in golden data and with the Python emulation."""
    compiler = _libcxx_compiler()
    binary = tmp_path / "shuffle_golden"
    subprocess.run(
        [compiler, "-std=c++17", "-stdlib=libc++", "-O1", str(PROGRAM), "-o", str(binary)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, "minstd_rand differs from the engine Core ML names"
    live = json.loads(run.stdout)
    golden = json.loads(GOLDEN.read_text())
    for key in ("seeded_state", "orders", "uniform"):
        assert live[key] == golden[key], key
    check_against(live)
