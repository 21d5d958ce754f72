"""`inspect` and `validate` wall time (whole process) on a ~100 MB model, against
`python -c "import coremltools"` on the same machine. Target: <= 0.15x."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from updatable_coreml import make_updatable
from updatable_coreml._proto import Model_pb2
from updatable_coreml.spec_io import save_spec


def _packed_floats(values: np.ndarray) -> bytes:
    """WeightParams bytes with ``floatValue`` (field 1) packed: fast to build at any size."""
    payload = values.astype("<f4").tobytes()
    length, varint = len(payload), bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x0a" + bytes(varint) + payload


def big_model(path: Path, width: int = 5000) -> None:
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    x = spec.description.input.add()
    x.name = "x"
    x.type.multiArrayType.shape.append(width)
    x.type.multiArrayType.dataType = x.type.multiArrayType.FLOAT32
    y = spec.description.output.add()
    y.name = "probs"
    y.type.multiArrayType.shape.append(10)
    nn = spec.neuralNetwork
    rng = np.random.default_rng(0)
    blobs = ["x", "h", "logits", "probs"]
    for i, (n_in, n_out) in enumerate([(width, width), (width, 10)]):
        layer = nn.layers.add()
        layer.name, layer.input[:], layer.output[:] = f"fc{i}", [blobs[i]], [blobs[i + 1]]
        ip = layer.innerProduct
        ip.inputChannels, ip.outputChannels, ip.hasBias = n_in, n_out, True
        ip.weights.MergeFromString(_packed_floats(rng.standard_normal(n_in * n_out, np.float32)))
        ip.bias.MergeFromString(_packed_floats(np.zeros(n_out, np.float32)))
    softmax = nn.layers.add()
    softmax.name, softmax.input[:], softmax.output[:] = "softmax", ["logits"], ["probs"]
    softmax.softmax.SetInParent()
    save_spec(make_updatable(spec, layers=["fc1"], seed=0), path)


def wall(cmd: list[str], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Big.mlmodel"
        big_model(path)
        size_mb = path.stat().st_size / 1e6
        baseline = wall([sys.executable, "-c", "import coremltools"])
        cli = [sys.executable, "-m", "updatable_coreml.cli"]
        for verb in ("inspect", "validate"):
            seconds = wall(cli + [verb, str(path)])
            print(
                f"{verb:<9} {size_mb:.0f} MB: {seconds:.3f} s   import coremltools: {baseline:.3f} s   "
                f"ratio {seconds / baseline:.3f}x (target <= 0.15x)"
            )


if __name__ == "__main__":
    main()
