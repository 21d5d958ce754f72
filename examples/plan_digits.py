"""Decide the on-device training setup before shipping: ``plan`` on the demo's digits.

The demo's Keras CNN learns digits 0-6 and ships three spare slots (``user0``-``user2``).
Twenty simulated users each teach it digits 7, 8 and 9 (every 7, 8 and 9 of scikit-learn's
digits, dealt round robin) with 1, 2 or 5 examples per digit; the demo's held-out 0-6 are the
shared set that measures forgetting. ``plan`` trains every candidate setup for every user with
the reference runtime and writes the table, the plot and the model with the recommended
defaults, which it re-simulates to check the numbers.

    python examples/plan_digits.py [output_dir] [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from updatable_coreml.demo import KNOWN, LABELS, NEW, build_cnn, digit_label, load_data
from updatable_coreml.exporters.keras import export_keras
from updatable_coreml.frameworks import quiet_import
from updatable_coreml.plan import Grid, plan
from updatable_coreml.validator import is_valid, validate

USERS = 20


def export_demo_cnn(path: Path, seed: int) -> Path:
    """The demo's CNN and export settings: convolutions frozen, the dense head trains with
    SGD (lr 0.01, momentum 0.9), 20 epochs, batch 8."""
    keras = quiet_import("keras")
    base, _, _ = load_data(seed, shots=0, replay=0)
    cnn = build_cnn(seed)
    targets = np.array([LABELS.index(label) for label in base.labels])
    cnn.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    cnn.fit(base.x.transpose(0, 2, 3, 1), targets, batch_size=32, epochs=15, verbose=0)
    for name in ("conv1", "conv2"):
        cnn.get_layer(name).trainable = False
    cnn.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy"
    )
    export_keras(
        cnn,
        path,
        class_labels=LABELS,
        epochs=20,
        allowed_epochs=range(1, 101),
        batch_size=8,
        allowed_batch_sizes=[1, 4, 8, 16, 32],
        seed=seed,
    )
    return path


def write_users(folder: Path, seed: int) -> tuple[Path, Path]:
    """users.npz: every 7, 8, 9 dealt to 20 users; shared.npz: the demo's held-out 0-6."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    owners = np.full(len(x), "", dtype=object)
    rng = np.random.default_rng(seed)
    for digit in NEW:
        rows = rng.permutation(np.flatnonzero(digits.target == digit))
        owners[rows] = [f"user{i % USERS:02d}" for i in range(len(rows))]
    mine = owners != ""
    labels = np.array([digit_label(int(d)) for d in digits.target])
    np.savez(folder / "users.npz", x=x[mine], y=labels[mine], user=owners[mine].astype(str))
    _, _, holdout = load_data(seed, shots=0, replay=0)
    known = np.isin(holdout.digits, KNOWN)
    np.savez(folder / "shared.npz", x=holdout.x[known], y=holdout.labels[known])
    return folder / "users.npz", folder / "shared.npz"


def main(out_dir: Path, quick: bool = False, seed: int = 0) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model = export_demo_cnn(out_dir / "DigitsClassifier.mlmodel", seed)
    users, shared = write_users(out_dir, seed)
    grid = (
        Grid(
            lrs=(0.03, 0.1),
            epochs=(10,),
            batches=(4,),
            trainable=("last",),
            ks=(1, 3),
            weightings=("uniform",),
        )
        if quick
        else Grid(
            lrs=(0.01, 0.03, 0.1),
            epochs=(5, 20),
            batches=(4, 8),
            ks=(1, 3, 5),
            replays=(0, 21),  # 3 stored examples of each known digit against forgetting
        )
    )
    result = plan(
        model,
        users,
        shared=shared,
        output=out_dir / "plan",
        shots=(1, 2, 5),
        grid=grid,
        seed=seed,
        write=out_dir / "DigitsPlanned.mlmodel",
    )
    print(result.summary())
    choice = result.recommendation
    # Done-when of the plan issue: the recommendation beats the export's defaults on the
    # users' held-out accuracy, and the written model is valid and re-simulates exactly.
    assert choice["score"] > choice["shipped_score"], choice
    assert is_valid(validate(out_dir / "DigitsPlanned.mlmodel"))
    assert result.verification is not None and result.verification["max_difference"] == 0.0


if __name__ == "__main__":
    flags = [a for a in sys.argv[1:] if a.startswith("--")]
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    if paths:
        main(Path(paths[0]), quick="--quick" in flags)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp), quick="--quick" in flags)
