"""The exporter and the callback on Keras's torch backend (a subprocess: the backend is chosen
when keras is first imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import json, sys
    import keras
    import numpy as np
    from keras_helpers import max_abs_diff, randomize
    from updatable_coreml.exporters.keras import UpdatableCoreMLExport
    from updatable_coreml.spec_io import load_spec, neural_network

    L = keras.layers
    model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(4, 3, padding="same", activation="relu"),
                              L.BatchNormalization(), L.MaxPooling2D(2), L.Flatten(),
                              L.Dense(3, activation="softmax", name="head")])
    randomize(model)
    for layer in model.layers[:-1]:
        layer.trainable = False
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(0.01))
    x = np.random.default_rng(0).normal(size=(12, 6, 6, 2)).astype(np.float32)
    y = np.arange(12) % 3
    path = sys.argv[1]
    model.fit(x, y, batch_size=4, epochs=2, verbose=0,
              callbacks=[UpdatableCoreMLExport(path, class_labels=["a", "b", "c"], epochs="fit")])
    params = neural_network(load_spec(path)).updateParams
    print(json.dumps({"backend": keras.backend.backend(), "diff": max_abs_diff(model, path, x[:4]),
                      "batch": params.optimizer.adamOptimizer.miniBatchSize.defaultValue,
                      "epochs": params.epochs.defaultValue}))
""")


def test_export_on_torch_backend(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(TESTS)}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "m.mlmodel")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {**result, "backend": "torch", "batch": 4, "epochs": 2}
    assert result["diff"] <= 1e-4
