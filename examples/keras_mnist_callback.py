"""The coremltools documentation's updatable MNIST model, exported by a Keras callback.

Conv32 - Conv64 - MaxPool - Dropout - Flatten - Dense128 - Dropout - Dense10 softmax; the two
Dense layers train on device with categorical cross-entropy and SGD (lr 0.01). The data is
scikit-learn's bundled 8x8 digits scaled up to 28x28 (no download). After ``fit`` the callback
has written ``MNISTDigitClassifier.mlmodel``; this script then proves it on Linux with the
reference runtime: predictions match Keras, and a few on-device-style update steps train the
two Dense layers exactly as Keras does.

    python examples/keras_mnist_callback.py [output_dir]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from sklearn.datasets import load_digits

from updatable_coreml.exporters.keras import UpdatableCoreMLExport
from updatable_coreml.runtime import load

LABELS = [str(d) for d in range(10)]


def digits_28x28(count: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Scikit-learn's 8x8 digits as 28x28x1 images in [0, 1] (each pixel -> 3x3, padded)."""
    digits = load_digits()
    images = np.kron(digits.images[:count] / 16.0, np.ones((3, 3)))
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None].astype(np.float32)
    return images, digits.target[:count]


def mnist_model() -> keras.Model:
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            layers.Conv2D(32, (3, 3), activation="relu", name="conv1"),
            layers.Conv2D(64, (3, 3), activation="relu", name="conv2"),
            layers.MaxPooling2D((2, 2), name="pool"),
            layers.Dropout(0.25, name="dropout1"),
            layers.Flatten(name="flatten"),
            layers.Dense(128, activation="relu", name="dense1"),
            layers.Dropout(0.5, name="dropout2"),
            layers.Dense(10, activation="softmax", name="digit"),
        ]
    )
    model.compile(
        loss="categorical_crossentropy",
        optimizer=keras.optimizers.SGD(learning_rate=0.01),
        metrics=["accuracy"],
    )
    return model


def export_and_check(out_dir: Path, count: int = 600) -> tuple[float, float]:
    """Train, export through the callback, and return (forward max abs diff, training max
    relative weight diff) between the runtime and Keras."""
    keras.utils.set_random_seed(0)
    x, y = digits_28x28(count)
    model = mnist_model()
    model.fit(x, keras.utils.to_categorical(y, 10), batch_size=32, epochs=2, verbose=0)

    # Freeze the convolutions and export at the end of a short fine-tuning fit.
    for name in ("conv1", "conv2"):
        model.get_layer(name).trainable = False
    model.compile(
        loss="categorical_crossentropy", optimizer=keras.optimizers.SGD(learning_rate=0.01)
    )
    path = out_dir / "MNISTDigitClassifier.mlmodel"
    callback = UpdatableCoreMLExport(
        path,
        class_labels=LABELS,
        seed=0,
        allowed_epochs=range(1, 51),
        description="Handwritten digit classifier (updatable)",
        author="updatable-coreml example",
        license="BSD-3-Clause",
    )
    model.fit(
        x,
        keras.utils.to_categorical(y, 10),
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[callback],
    )

    runtime = load(path)
    sample = x[:64]
    probs = runtime.predict({"image": sample.transpose(0, 3, 1, 2)})["digit"]
    ours = np.array([[row[label] for label in LABELS] for row in probs])
    forward = float(np.abs(ours - keras.ops.convert_to_numpy(model(sample))).max())
    print(f"\nforward parity on {len(sample)} digits: max abs diff {forward:.2e}")

    # Three mini-batches of 16 without shuffling: the runtime's update task vs train_on_batch.
    # The device has no dropout, so Keras takes these steps with its dropout rates at 0.
    batch = x[64:112]
    labels = y[64:112]
    for name in ("dropout1", "dropout2"):
        model.get_layer(name).rate = 0.0
    model.compile(
        loss="categorical_crossentropy", optimizer=keras.optimizers.SGD(learning_rate=0.01)
    )
    updated = runtime.update(
        {"image": batch.transpose(0, 3, 1, 2), "classLabel": np.array([str(v) for v in labels])},
        parameters={"epochs": 1, "shuffle": False},
    ).model
    for step in range(3):
        rows = slice(16 * step, 16 * step + 16)
        model.train_on_batch(batch[rows], keras.utils.to_categorical(labels[rows], 10))
    layers = {layer.name: layer for layer in updated.spec.neuralNetworkClassifier.layers}
    worst = 0.0
    for name in ("dense1", "digit"):
        kernel, bias = model.get_layer(name).get_weights()
        if name == "dense1":  # Core ML reads the flattened features in (C, H, W) order
            kernel = kernel.reshape(12, 12, 64, -1).transpose(2, 0, 1, 3).reshape(kernel.shape)
        ours_w = np.asarray(layers[name].innerProduct.weights.floatValue)
        ours_b = np.asarray(layers[name].innerProduct.bias.floatValue)
        for got, want in ((ours_w, kernel.T.ravel()), (ours_b, bias)):
            worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
    print(f"training parity after 3 update steps: max relative weight diff {worst:.2e}")
    return forward, worst


if __name__ == "__main__":
    forward_diff, training_diff = export_and_check(
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    )
    if forward_diff > 1e-4 or training_diff > 1e-4:
        sys.exit("parity check failed")
