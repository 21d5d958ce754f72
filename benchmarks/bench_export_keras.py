"""Keras export time: MobileNetV2 and ResNet50 (weights=None, include_top=False,
pooling="avg", frozen) + a trainable Dense(10) head, from a built model to a saved file.

``export_keras`` against coremltools' ``ct.convert(model, convert_to="neuralnetwork")`` +
save of the same model (which is not even updatable), and against the serialization floor:
filling, serializing and writing one protobuf that holds the same number of fp32 weights.
Each measurement runs in its own process, so peak memory is its own; "cold" is the first
export in the process (imports done, model built), "warm" the best of the next runs.
Targets (issue 4): warm <= 0.2x coremltools, <= 5x the floor, peak memory no worse.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZE = 224
BACKBONES = ("MobileNetV2", "ResNet50")


def build(backbone: str):
    import keras

    base = getattr(keras.applications, backbone)(
        weights=None, include_top=False, pooling="avg", input_shape=(SIZE, SIZE, 3)
    )
    base.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    model = keras.Model(
        inputs, keras.layers.Dense(10, activation="softmax", name="head")(base(inputs))
    )
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(0.01))
    return model


def _ours(model, path: Path) -> None:
    from updatable_coreml.exporters.keras import export_keras

    export_keras(model, path, class_labels=list(range(10)), seed=0)


def _coremltools(model, path: Path) -> None:
    import coremltools as ct

    ct.convert(model, convert_to="neuralnetwork").save(str(path))


def _all_weights(model):
    """The floor starts from the weights already in one NumPy array (not timed)."""
    import numpy as np

    return np.concatenate([np.asarray(w, np.float32).ravel() for w in model.get_weights()])


def _floor(weights, path: Path) -> None:
    from updatable_coreml._proto import NeuralNetwork_pb2

    data = weights.tobytes()
    params = NeuralNetwork_pb2.WeightParams()
    length, header = len(data), bytearray(b"\x0a")
    while length > 0x7F:
        header.append(length & 0x7F | 0x80)
        length >>= 7
    header.append(length)
    params.MergeFromString(bytes(header) + data)
    with open(path, "wb") as handle:
        handle.write(params.SerializeToString())
        handle.flush()
        os.fsync(handle.fileno())


#: which -> (prepare the subject from the built model, untimed; export it; warm repeats)
RUNNERS = {
    "ours": (lambda m: m, _ours, 3),
    "coremltools": (lambda m: m, _coremltools, 1),
    "floor": (_all_weights, _floor, 3),
}


def child(backbone: str, which: str) -> None:
    import logging

    logging.disable(logging.WARNING)
    prepare, run, repeats = RUNNERS[which]
    model = prepare(build(backbone))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.mlmodel"
        start = time.perf_counter()
        run(model, path)
        cold = time.perf_counter() - start
        warm = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(model, path)
            warm.append(time.perf_counter() - start)
        size = path.stat().st_size
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"cold": cold, "warm": min(warm), "peak_mb": peak_mb, "bytes": size}))


def measure(backbone: str, which: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, backbone, which], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    for backbone in BACKBONES:
        ours, theirs, floor = (measure(backbone, w) for w in ("ours", "coremltools", "floor"))
        print(f"{backbone} + Dense(10) head ({SIZE}x{SIZE}), built model to saved file:")
        for name, r in (
            ("export_keras", ours),
            ("ct.convert+save", theirs),
            ("weights floor", floor),
        ):
            print(
                f"  {name:<16} cold {r['cold']:.3f} s  warm {r['warm']:.3f} s  "
                f"peak RSS {r['peak_mb']:.0f} MB  file {r['bytes'] / 1e6:.1f} MB"
            )
        print(
            f"  ratio vs coremltools: warm {ours['warm'] / theirs['warm']:.3f}x, cold "
            f"{ours['cold'] / theirs['cold']:.3f}x (target <= 0.2x)"
        )
        print(
            f"  ratio vs serialization floor: warm {ours['warm'] / floor['warm']:.2f}x (target <= 5x)"
        )
        print(
            f"  peak memory vs coremltools: {ours['peak_mb'] / theirs['peak_mb']:.2f}x (target <= 1x)",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(*sys.argv[1:])
    else:
        main()
