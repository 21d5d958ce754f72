"""A small digits classifier and simulated-user data sets for the plan tests (no Keras)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The installed console script (pyproject's [project.scripts]), running this checkout's code.
SCRIPT = Path(sys.executable).parent / "updatable-coreml"
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "updatable_coreml.cli"]


def cli_env() -> dict:
    """The environment for a CLI process: this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target


def digits_model(
    path: Path, seed: int = 0, epochs: int = 5, lr: float = 0.01, batch: int = 4
) -> Path:
    """x (64) -> PCA features (frozen) -> relu -> fc1 (updatable) -> relu -> fc2 (updatable)
    -> softmax; labels '0'..'9'; SGD."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder, SgdParams

    x, _ = digits()
    centered = x - x.mean(0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    proj = vt[:24].astype(np.float32) * 2.0
    rng = np.random.default_rng(seed)
    labels = [str(d) for d in range(10)]
    b = NeuralNetworkBuilder(
        [("x", datatypes.Array(64))], [("probs", datatypes.Array(10))], mode="classifier"
    )
    b.add_inner_product(
        "features", proj, -(proj @ x.mean(0)).astype(np.float32), 64, 24, True, "x", "f"
    )
    b.add_activation("relu0", "RELU", "f", "fr")
    b.add_inner_product(
        "fc1",
        rng.normal(0, 0.3, (16, 24)).astype(np.float32),
        np.zeros(16, np.float32),
        24,
        16,
        True,
        "fr",
        "h",
    )
    b.add_activation("relu1", "RELU", "h", "hr")
    b.add_inner_product(
        "fc2",
        rng.normal(0, 0.3, (10, 16)).astype(np.float32),
        np.zeros(10, np.float32),
        16,
        10,
        True,
        "hr",
        "logits",
    )
    b.add_softmax("softmax", "logits", "probs")
    b.set_class_labels(labels, predicted_feature_name="label", prediction_blob="probs")
    b.make_updatable(["fc1", "fc2"])
    b.set_categorical_cross_entropy_loss("loss", "probs")
    b.set_sgd_optimizer(SgdParams(lr=lr, batch=batch))
    b.set_epochs(epochs)
    b.spec.isUpdatable = True
    from updatable_coreml.spec_io import save_spec

    return save_spec(b.spec, path)


def users_npz(
    path: Path, users: int = 4, per_class: int = 6, classes=range(5), seed: int = 0
) -> Path:
    """Examples of ``classes`` dealt round robin to ``users`` (``per_class`` each), plus the
    other digits with user ``-`` kept out by the caller's shared set."""
    x, y = digits()
    rng = np.random.default_rng(seed)
    xs, ys, owners = [], [], []
    for c in classes:
        rows = rng.permutation(np.flatnonzero(y == c))[: users * per_class]
        for i, row in enumerate(rows):
            xs.append(x[row])
            ys.append(str(c))
            owners.append(f"u{i % users}")
    np.savez(path, x=np.stack(xs), y=np.asarray(ys), user=np.asarray(owners))
    return path


def shared_npz(path: Path, count: int = 120, seed: int = 1) -> Path:
    x, y = digits()
    rows = np.random.default_rng(seed).permutation(len(y))[:count]
    np.savez(path, x=x[rows], y=y[rows].astype(str))
    return path


def npz_to_csv(npz: Path, path: Path, users: bool = True) -> Path:
    """The same examples as a CSV: user (optional), label, then one column per feature."""
    import csv

    with np.load(npz) as data:
        x, y = data["x"], data["y"]
        owners = data["user"] if users else None
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        names = [f"f{i}" for i in range(x.shape[1])]
        writer.writerow((["user"] if users else []) + ["label"] + names)
        for i in range(len(y)):
            first = [str(owners[i])] if owners is not None else []
            writer.writerow(first + [str(y[i])] + [repr(float(v)) for v in x[i]])
    return path


def image_users(root: Path, users: int = 3, per_class: int = 4, seed: int = 0) -> dict:
    """8x8 RGB images of two colours dealt to ``users``, written three ways with the same
    examples in the same order: one folder per user (``users_dir``), a CSV of paths relative
    to it (``csv``), and a shared set as a CSV of paths and as an ``.npz`` of the pixels."""
    import csv

    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = ("blue", "red")

    def picture(label: str) -> np.ndarray:
        pixels = rng.integers(0, 80, (8, 8, 3))
        pixels[..., 2 if label == "blue" else 0] += rng.integers(120, 175)
        return pixels.astype(np.uint8)

    rows = []
    for u in range(users):
        for label in labels:
            (root / "users" / f"u{u}" / label).mkdir(parents=True)
            for i in range(per_class):
                name = f"users/u{u}/{label}/{i}.png"
                Image.fromarray(picture(label)).save(root / name)
                rows.append((f"u{u}", label, name))
    shared_rows, shared_x = [], []
    (root / "shared").mkdir()
    for i in range(6):
        label = labels[i % 2]
        pixels = picture(label)
        Image.fromarray(pixels).save(root / "shared" / f"{i}.png")
        shared_rows.append((label, f"shared/{i}.png"))
        shared_x.append(pixels)
    with (root / "users.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("user", "label", "image"), *rows])
    with (root / "shared.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("label", "image"), *shared_rows])
    np.savez(root / "shared.npz", x=np.stack(shared_x), y=np.asarray([r[0] for r in shared_rows]))
    return {
        "users_dir": root / "users",
        "csv": root / "users.csv",
        "shared_csv": root / "shared.csv",
        "shared_npz": root / "shared.npz",
    }


def image_model(path: Path) -> Path:
    """An 8x8 RGB image classifier (blue, red) with an updatable last layer (SGD)."""
    from coremltools.models.neural_network import SgdParams

    from models import image_classifier_builder
    from updatable_coreml.spec_io import save_spec

    b = image_classifier_builder(["blue", "red"], np.random.default_rng(3))
    b.set_sgd_optimizer(SgdParams(lr=0.1, batch=4))
    b.set_epochs(2)
    b.spec.isUpdatable = True
    return save_spec(b.spec, path)
