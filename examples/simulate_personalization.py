"""The app's personalization loop, rehearsed on Linux with the CLI and real image folders.

A Keras CNN with a grayscale *image* input (``Rescaling(1/255)`` becomes Core ML's image scale)
is trained on digits 0-6 and exported with three spare slots. The user's photos are written
the way the seed app collects them, one folder per label (``user0`` holds the user's 7s, ...),
and ``updatable-coreml simulate`` trains on them as MLUpdateTask would, printing the per-epoch
table and writing the loss plot and the personalized model. Finally ``updatable-coreml swift``
writes the app-side trainer for this model.

    python examples/simulate_personalization.py [output_dir]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from updatable_coreml.demo import LABELS, Split, load_data
from updatable_coreml.exporters.keras import export_keras
from updatable_coreml.frameworks import quiet_import

CLI = [sys.executable, "-m", "updatable_coreml.cli"]


def to_pixels(split: Split) -> np.ndarray:
    """8x8 grayscale images with values 0-255, as a phone camera pipeline would hand them."""
    return np.round(split.x[:, 0] * 255).astype(np.uint8)


def write_folders(split: Split, root: Path) -> None:
    for i, (pixels, label) in enumerate(zip(to_pixels(split), split.labels)):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")


def train_cnn(base: Split, seed: int):
    keras = quiet_import("keras")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1 / 255, name="scale"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="features"),
            keras.layers.Dense(len(LABELS), activation="softmax", name="classifier"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    targets = np.array([LABELS.index(label) for label in base.labels])
    model.fit(
        to_pixels(base)[..., None].astype(np.float32), targets, epochs=10, batch_size=32, verbose=0
    )
    model.get_layer("conv").trainable = False
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy"
    )
    return model


def main(out_dir: Path, seed: int = 0) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    base, user, holdout = load_data(seed, shots=5, replay=2)
    model_path = out_dir / "Digits.mlmodel"
    report = export_keras(
        train_cnn(base, seed),
        model_path,
        class_labels=LABELS,
        image_input="grayscale",
        batch_size=8,
        epochs=15,
        allowed_epochs=range(1, 51),
        seed=seed,
    )
    print(report.summary())
    write_folders(user, out_dir / "train")
    write_folders(holdout, out_dir / "val")
    for command in (
        [
            "simulate",
            model_path,
            "--train",
            out_dir / "train",
            "--val",
            out_dir / "val",
            "--plot",
            out_dir / "loss.png",
            "-o",
            out_dir / "Personalized.mlmodel",
        ],
        ["swift", model_path, "-o", out_dir / "DigitsTrainer.swift"],
    ):
        print(f"\n$ updatable-coreml {' '.join(str(c) for c in command)}")
        subprocess.run(CLI + [str(c) for c in command], check=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
