"""A motion classifier personalized on device: Keras Conv1D over accelerometer windows.

Four activities, 50 samples of (x, y, z) each, synthesized here (no download): every activity
is a periodic motion with its own frequency and axis mix. The server model (frozen Conv1D,
trainable Conv1D, global average pooling, trainable Dense softmax) is fitted in Keras, then
exported with ``export_keras``: the input is declared ``[3, 1, 50]`` (channels, 1, steps) and
the second Conv1D is an updatable Core ML convolution. A new user moves a little faster than
the training population and carries the phone turned; this script proves on Linux, with the reference runtime, that

* the exported file predicts like Keras (max abs diff <= 1e-4),
* an on-device-style update (Adam, mini-batches of 8, 10 epochs) trains the Conv1D and the
  head to the weights Keras reaches on the same batches (<= 1e-4 relative),
* and the user's held-out accuracy after the update.

    python examples/keras_sensor.py [output_dir]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from updatable_coreml.exporters.keras import export_keras
from updatable_coreml.runtime import Assumptions, load

STEPS, CHANNELS = 50, 3
ACTIVITIES = ["walk", "run", "stairs", "cycle"]
FREQUENCIES = np.array([1.0, 2.2, 1.5, 3.0])  # cycles per window, per activity
AXES = np.array([[1.0, 0.3, 0.2], [0.6, 1.0, 0.3], [0.3, 0.4, 1.0], [0.8, 0.1, 0.8]])
BATCH, EPOCHS = 8, 10


def windows(count: int, speed: float, seed: int, pocket: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` accelerometer windows (count, 50, 3) and their activity ids; ``speed``
    scales every frequency (a user who moves faster), ``pocket`` rolls the axes (a phone
    carried turned)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(ACTIVITIES), count)
    t = np.linspace(0, 1, STEPS)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, (count, 1, 1))
    frequency = (FREQUENCIES[labels] * speed)[:, None, None]
    axes = np.roll(AXES[labels], pocket, axis=1)[:, None, :]
    signal = np.sin(2 * np.pi * frequency * t + phase) * axes
    noise = rng.normal(0, 0.3, (count, STEPS, CHANNELS))
    return (signal + noise).astype(np.float32), labels


def over_width(x: np.ndarray) -> np.ndarray:
    """Keras (B, steps, channels) -> the exported input's (B, channels, 1, steps)."""
    return np.ascontiguousarray(x.transpose(0, 2, 1)[:, :, None, :])


def motion_model() -> keras.Model:
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((STEPS, CHANNELS), name="motion"),
            layers.Conv1D(16, 5, activation="relu", name="features"),
            layers.Conv1D(16, 3, padding="same", activation="relu", name="personal"),
            layers.GlobalAveragePooling1D(name="pool"),
            layers.Dense(len(ACTIVITIES), activation="softmax", name="activity"),
        ]
    )


def probabilities(runtime, x: np.ndarray) -> np.ndarray:
    rows = runtime.predict({"motion": over_width(x)})[
        runtime.description.predictedProbabilitiesName
    ]
    return np.array([[row[label] for label in ACTIVITIES] for row in rows])


def run(out_dir: Path) -> dict[str, float]:
    keras.utils.set_random_seed(0)
    model = motion_model()
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(0.01))
    x, y = windows(800, speed=1.0, seed=0)
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)

    model.get_layer("features").trainable = False
    optimizer = keras.optimizers.Adam(learning_rate=0.01)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer, run_eagerly=True)
    path = out_dir / "Motion.mlmodel"
    report = export_keras(
        model, path, class_labels=ACTIVITIES, batch_size=BATCH, epochs=EPOCHS, shuffle=False
    )
    print(report.summary())

    runtime = load(path)
    user_x, user_y = windows(64, speed=1.3, seed=1, pocket=1)
    held_out_x, held_out_y = windows(200, speed=1.3, seed=2, pocket=1)
    forward = float(
        np.abs(probabilities(runtime, held_out_x) - model.predict(held_out_x, verbose=0)).max()
    )
    before = float((probabilities(runtime, held_out_x).argmax(1) == held_out_y).mean())

    # The device's update task (Adam as Keras adds epsilon, see runtime.Assumptions) and
    # Keras on the same mini-batches.
    updated = runtime.update(
        {
            "motion": over_width(user_x),
            runtime.description.trainingInput[-1].name: [ACTIVITIES[i] for i in user_y],
        },
        assumptions=Assumptions(adam="keras"),
    ).model
    for _ in range(EPOCHS):
        for start in range(0, len(user_x), BATCH):
            model.train_on_batch(user_x[start : start + BATCH], user_y[start : start + BATCH])
    training = 0.0
    for name in ("personal", "activity"):
        layer = next(lyr for lyr in updated.spec.neuralNetworkClassifier.layers if lyr.name == name)
        params = getattr(layer, layer.WhichOneof("layer"))
        kernel, bias = model.get_layer(name).get_weights()
        want = kernel.transpose(2, 1, 0).ravel() if kernel.ndim == 3 else kernel.T.ravel()
        got = np.asarray(params.weights.floatValue)
        training = max(
            training,
            float(np.abs(got - want).max() / np.abs(want).max()),
            float(np.abs(np.asarray(params.bias.floatValue) - bias).max() / np.abs(bias).max()),
        )
    after = float((probabilities(updated, held_out_x).argmax(1) == held_out_y).mean())
    return {"forward": forward, "training": training, "before": before, "after": after}


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    out_dir.mkdir(parents=True, exist_ok=True)
    numbers = run(out_dir)
    print(
        f"forward max abs diff vs Keras {numbers['forward']:.2e}; weights after the update vs "
        f"Keras {numbers['training']:.2e} relative; the new user's held-out accuracy "
        f"{numbers['before']:.2f} before the update, {numbers['after']:.2f} after"
    )
    assert numbers["forward"] <= 1e-4 and numbers["training"] <= 1e-4, numbers


if __name__ == "__main__":
    main()
