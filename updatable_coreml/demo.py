"""The main job, end to end on bundled data (no downloads): ``updatable-coreml demo``.

1. Train a small Keras CNN on scikit-learn's ``load_digits`` (8x8 images) for digits 0-6,
   with 10 output slots: the 3 spare ones are labelled ``user0``-``user2``.
2. Export it as an updatable ``.mlmodel`` through the ``fit`` callback (convolutions frozen,
   the dense head trains on device) and validate it.
3. Simulate on-device personalization with our reference runtime: the "user" teaches digits
   7, 8, 9 (as ``user0``-``user2``) with a handful of examples each, plus a few examples of
   the digits the model knows (a small replay buffer the app keeps, so old digits are not
   forgotten). Accuracy on held-out digits before and after, a per-epoch table, a loss plot.
4. The same personalization with a k-NN pipeline (the CNN's features + updatable k-NN).

Every number printed comes from running the exported files through the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .frameworks import quiet_import
from .sizes import format_size

KNOWN = list(range(7))
NEW = [7, 8, 9]
LABELS = [str(d) for d in KNOWN] + [f"user{i}" for i in range(len(NEW))]


def digit_label(digit: int) -> str:
    return str(digit) if digit in KNOWN else f"user{NEW.index(digit)}"


@dataclass
class Split:
    x: np.ndarray  # (N, 1, 8, 8) channel-first, as the Core ML input takes it
    digits: np.ndarray  # (N,) 0-9

    @property
    def labels(self) -> np.ndarray:
        return np.array([digit_label(int(d)) for d in self.digits])

    def where(self, mask: np.ndarray) -> Split:
        return Split(self.x[mask], self.digits[mask])


def load_data(seed: int, shots: int, replay: int) -> tuple[Split, Split, Split]:
    """Base training set (digits 0-6), the user's few examples, and a held-out set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    held = np.zeros(len(y), bool)
    held[order[: len(y) * 3 // 10]] = True
    pool = Split(x[~held], y[~held])
    holdout = Split(x[held], y[held])
    base = pool.where(np.isin(pool.digits, KNOWN))
    user_idx = []
    for digit in NEW + KNOWN:
        candidates = np.flatnonzero(pool.digits == digit)
        user_idx += list(rng.choice(candidates, shots if digit in NEW else replay, replace=False))
    return base, pool.where(np.isin(np.arange(len(pool.digits)), user_idx)), holdout


def build_cnn(seed: int):
    keras = quiet_import("keras")

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":  # same numbers on every run of the demo
        quiet_import("tensorflow").config.experimental.enable_op_determinism()
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="features")(x)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def accuracy(model, split: Split, mask: np.ndarray | None = None) -> float:
    split = split if mask is None else split.where(mask)
    predicted = model.predict({model.description.input[0].name: split.x})["classLabel"]
    return float(np.mean(np.asarray(predicted) == split.labels))


def _report_accuracy(name: str, model, holdout: Split) -> dict:
    known = np.isin(holdout.digits, KNOWN)
    row = {
        "model": name,
        "known 0-6": accuracy(model, holdout, known),
        "new 7-9": accuracy(model, holdout, ~known),
        "all": accuracy(model, holdout),
    }
    print(f"  {name:<36} {row['known 0-6']:>9.3f} {row['new 7-9']:>9.3f} {row['all']:>7.3f}")
    return row


def run(
    out_dir: Path,
    *,
    seed: int = 0,
    shots: int = 5,
    replay: int = 2,
    epochs: int = 20,
    base_epochs: int = 15,
) -> dict:
    """Run the whole demo, writing its files into ``out_dir``; returns the measured numbers."""
    keras = quiet_import("keras")

    from .exporters.keras import UpdatableCoreMLExport
    from .knn import export_knn
    from .runtime import load
    from .runtime.simulate import simulate
    from .validator import validate

    out_dir.mkdir(parents=True, exist_ok=True)
    base, user, holdout = load_data(seed, shots, replay)
    to_keras = lambda split: split.x.transpose(0, 2, 3, 1)  # noqa: E731  (Keras is channels-last)
    print(
        f"data: {len(base.digits)} training images of digits 0-6, {len(holdout.digits)} held out; "
        f"the user teaches 7, 8, 9 with {shots} examples each (+{replay} replay per known digit)"
    )

    print("\n1. train the Keras CNN on digits 0-6 (10 output slots, 3 spare)")
    cnn = build_cnn(seed)
    targets = np.array([LABELS.index(label) for label in base.labels])
    cnn.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    cnn.fit(to_keras(base), targets, batch_size=32, epochs=base_epochs, verbose=0)

    print(
        "2. freeze the convolutions, fine-tune the head one epoch with SGD, export through the "
        "fit callback"
    )
    for name in ("conv1", "conv2"):
        cnn.get_layer(name).trainable = False
    cnn.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy"
    )
    model_path = out_dir / "DigitsClassifier.mlmodel"
    export = UpdatableCoreMLExport(
        model_path,
        class_labels=LABELS,
        epochs=epochs,
        allowed_epochs=range(1, 101),
        batch_size=8,
        allowed_batch_sizes=[1, 4, 8, 16, 32],
        seed=seed,
        verbose=False,
        description="Digits 0-6 with 3 user slots (updatable-coreml demo)",
    )
    cnn.fit(to_keras(base), targets, batch_size=32, epochs=1, verbose=0, callbacks=[export])
    findings = validate(model_path)
    errors = [f for f in findings if f.severity == "error"]
    print(
        f"   wrote {model_path} ({format_size(model_path.stat().st_size)}); validator: "
        f"{'valid' if not errors else 'INVALID'}, {len(findings)} finding(s)"
    )
    print("   " + export.report.summary().replace("\n", "\n   "))

    print("\n3. on-device personalization, simulated by the reference runtime")
    np.savez(out_dir / "user_examples.npz", x=user.x, y=user.labels)
    np.savez(out_dir / "holdout.npz", x=holdout.x, y=holdout.labels)
    print(f"   {'epoch':>5} {'train loss':>11} {'val loss':>9} {'val acc':>8}")
    result = simulate(
        model_path,
        out_dir / "user_examples.npz",
        val=out_dir / "holdout.npz",
        plot=out_dir / "loss.png",
        out=out_dir / "Personalized.mlmodel",
        on_epoch=lambda row: print(
            f"   {row.epoch:>5} {row.train_loss:>11.4f} {row.val_loss:>9.4f} "
            f"{row.val_accuracy:>8.3f}"
        ),
    )
    print(
        f"   loss curve: {out_dir / 'loss.png'}; updated model: {out_dir / 'Personalized.mlmodel'}"
    )

    print("\n4. the same personalization with a k-NN pipeline (CNN features -> updatable k-NN)")
    knn_path = out_dir / "DigitsKNN.mlmodel"
    export_knn(cnn, knn_path, feature_layer="features", k=3, labels="string")
    knn = load(knn_path)
    base_pick = np.random.default_rng(seed).choice(len(base.digits), 10 * len(KNOWN), replace=False)
    seeded = knn.update(
        {
            knn.description.trainingInput[0].name: base.x[base_pick],
            "classLabel": base.labels[base_pick],
        }
    ).model
    knn_after = seeded.update(
        {knn.description.trainingInput[0].name: user.x, "classLabel": user.labels}
    ).model

    print(
        f"\naccuracy on {len(holdout.digits)} held-out digits"
        f"{'':<10}{'known 0-6':>9} {'new 7-9':>9} {'all':>7}"
    )
    rows = [
        _report_accuracy("network head, as shipped", load(model_path), holdout),
        _report_accuracy("network head, after personalization", result.model, holdout),
        _report_accuracy(f"k-NN, {len(base_pick)} base examples", seeded, holdout),
        _report_accuracy("k-NN, after personalization", knn_after, holdout),
    ]
    return {
        "accuracy": rows,
        "epochs": [row.__dict__ for row in result.rows],
        "files": sorted(p.name for p in out_dir.iterdir()),
    }
