"""On-device personalization with a few examples: k-NN pipeline vs. retraining a network head.

The story (scikit-learn's bundled 8x8 digits, nothing downloaded):

1. The app ships a small Keras CNN trained on the digits 0-4 only.
2. The user teaches the digits 5-9, giving 1, 2, 5 or 10 examples of each.
3. Two updatable Core ML models learn them, both proven here with our reference runtime:
   * a k-NN pipeline: the CNN cut at its pooled features (frozen) + an updatable k-NN that
     ships with 10 examples of each known digit and appends the user's examples;
   * the CNN itself with an updatable classifier head: 10 outputs, five of them spare slots
     (``user0``..``user4``) for the new digits, retrained on device on the user's examples
     plus the same 10 shipped examples of each known digit (so it does not forget them).

Run: ``python examples/knn_personalization.py [--plot curve.png] [--out DIR]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from sklearn.datasets import load_digits

from updatable_coreml.knn import export_knn, few_shot_indices, plot_learning_curve
from updatable_coreml.runtime import load

KNOWN, NEW = list(range(5)), list(range(5, 10))
SHOTS = (1, 2, 5, 10)
SHIPPED_PER_CLASS = 10


def split_digits(seed: int = 0):
    """Images as (N, 8, 8, 1) in [0, 1]; a train half and a test half, stratified by chance."""
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    order = np.random.default_rng(seed).permutation(len(x))
    half = len(x) // 2
    return (x[order[:half]], data.target[order[:half]]), (
        x[order[half:]],
        data.target[order[half:]],
    )


def train_cnn(x: np.ndarray, y: np.ndarray):
    """The shipped network: knows digits 0-4; outputs 5-9 are spare slots for user classes."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="digit")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="features")(h)
    outputs = keras.layers.Dense(10, activation="softmax", name="classifier")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    return model


def head_label(digit: int) -> str:
    """The network's label for a digit: its own name if shipped, else a spare slot."""
    return str(digit) if digit in KNOWN else f"user{digit - NEW[0]}"


def per_class(y: np.ndarray, classes: list[int], count: int, seed: int) -> np.ndarray:
    """Indices of ``count`` examples of each of ``classes``."""
    candidates = np.flatnonzero(np.isin(y, classes))
    return candidates[few_shot_indices(y[candidates], count, seed)]


def accuracy(predicted, truth: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted)[mask] == truth[mask]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="save the accuracy curves as a PNG here")
    parser.add_argument("--out", help="folder for the .mlmodel files (default: a temp folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="knn_personalization_"))

    from updatable_coreml.exporters.keras import export_keras

    (x, y), (x_test, y_test) = split_digits()
    known = np.isin(y, KNOWN)
    cnn = train_cnn(x[known], y[known])
    shipped = per_class(y, KNOWN, SHIPPED_PER_CLASS, seed=1)
    channel_first = lambda images: images.transpose(0, 3, 1, 2)  # noqa: E731  Core ML is (C, H, W)

    knn_path = out / "digits_knn.mlmodel"
    report = export_knn(
        cnn,
        knn_path,
        feature_layer="features",
        k=3,
        labels="string",
        initial_examples=(channel_first(x[shipped]), y[shipped].astype(str)),
    )
    print(report.summary(), "\n")

    for layer in cnn.layers:
        layer.trainable = layer.name == "classifier"
    head_path = out / "digits_head.mlmodel"
    export_keras(
        cnn,
        head_path,
        class_labels=[str(d) for d in KNOWN],
        extra_class_slots=len(NEW),
        batch_size=8,
        epochs=30,
        seed=0,
    )

    knn, head = load(knn_path), load(head_path)
    test = {"digit": channel_first(x_test)}
    is_new = np.isin(y_test, NEW)
    truth_knn = y_test.astype(str)
    truth_head = np.asarray([head_label(int(d)) for d in y_test])
    print(
        f"as shipped: k-NN {accuracy(knn.predict(test)['classLabel'], truth_knn, ~is_new):.3f}, "
        f"network {accuracy(head.predict(test)['classLabel'], truth_head, ~is_new):.3f} "
        "on the known digits 0-4\n"
    )

    curves: dict[str, list] = {"k-NN pipeline": [], "network head": []}
    print("new examples/class   k-NN: new  all    network head: new  all")
    for shots in SHOTS:
        user = per_class(y, NEW, shots, seed=2)
        knn_after = knn.update(
            {"digit": channel_first(x[user]), "classLabel": y[user].astype(str)}
        ).model
        replay = np.concatenate([shipped, user])
        head_after = head.update(
            {
                "digit": channel_first(x[replay]),
                "classLabel": [head_label(int(d)) for d in y[replay]],
            }
        ).model
        knn_predicted = knn_after.predict(test)["classLabel"]
        head_predicted = head_after.predict(test)["classLabel"]
        everything = np.ones_like(is_new)
        knn_new, knn_all = (accuracy(knn_predicted, truth_knn, m) for m in (is_new, everything))
        head_new, head_all = (accuracy(head_predicted, truth_head, m) for m in (is_new, everything))
        curves["k-NN pipeline"].append({"shots": shots, "accuracy": knn_all})
        curves["network head"].append({"shots": shots, "accuracy": head_all})
        print(f"{shots:>18}   {knn_new:9.3f} {knn_all:5.3f}   {head_new:17.3f} {head_all:5.3f}")

    if args.plot:
        print(
            "\nplot:",
            plot_learning_curve(
                curves, args.plot, "Digits 5-9 taught on device (accuracy on all digits)"
            ),
        )
    print(f"models in {out}")


if __name__ == "__main__":
    main()
