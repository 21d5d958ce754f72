"""Make an existing Core ML classifier updatable: the seed article's ``make_nn.py`` flow.

A SqueezeNet-style classifier (Fire module with a concat, ``conv10``, global pooling, ``fc``,
softmax) stands in for a model you already have as a NeuralNetwork ``.mlmodel``. One call makes
``fc`` updatable, grows the head from 3 to 10 classes (new rows start at zero, labelled
``user0``...``user6``) and writes the update parameters. Asking to train a layer in front of the
concat is refused with an error naming the concat. The reference runtime then predicts and
runs a few on-device updates so the new class is learned.

    python examples/make_updatable_existing.py [output_dir]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from updatable_coreml import inspect, make_updatable, validate
from updatable_coreml.errors import NotUpdatableError
from updatable_coreml.frameworks import quiet_import
from updatable_coreml.runtime import load
from updatable_coreml.spec_io import save_spec


def squeezenet_style_classifier(
    labels=("cat", "dog", "bird"),
    size: int = 16,
    seed: int = 0,
    probs: str = "labelProbs",
    label: str = "label",
):
    """Built with coremltools' NeuralNetworkBuilder, like many files in the wild."""
    quiet_import("coremltools")
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.normal(0, 0.3, shape).astype(np.float32)  # noqa: E731
    b = NeuralNetworkBuilder(
        [("image", datatypes.Array(3, size, size))], [(probs, None)], mode="classifier"
    )
    b.add_convolution(
        "conv1",
        3,
        8,
        3,
        3,
        1,
        1,
        "same",
        1,
        w(3, 3, 3, 8),
        w(8),
        True,
        input_name="image",
        output_name="c1",
    )
    b.add_activation("relu1", "RELU", "c1", "r1")
    b.add_pooling("pool1", 2, 2, 2, 2, "MAX", "VALID", "r1", "p1")
    b.add_convolution(
        "fire2/squeeze",
        8,
        4,
        1,
        1,
        1,
        1,
        "valid",
        1,
        w(1, 1, 8, 4),
        w(4),
        True,
        input_name="p1",
        output_name="s",
    )
    b.add_activation("fire2/relu", "RELU", "s", "sr")
    b.add_convolution(
        "fire2/expand1x1",
        4,
        8,
        1,
        1,
        1,
        1,
        "valid",
        1,
        w(1, 1, 4, 8),
        w(8),
        True,
        input_name="sr",
        output_name="e1",
    )
    b.add_convolution(
        "fire2/expand3x3",
        4,
        8,
        3,
        3,
        1,
        1,
        "same",
        1,
        w(3, 3, 4, 8),
        w(8),
        True,
        input_name="sr",
        output_name="e3",
    )
    b.add_elementwise("fire2/concat", ["e1", "e3"], "cat", mode="CONCAT")
    b.add_convolution(
        "conv10",
        16,
        16,
        1,
        1,
        1,
        1,
        "valid",
        1,
        w(1, 1, 16, 16),
        w(16),
        True,
        input_name="cat",
        output_name="c10",
    )
    b.add_activation("relu10", "RELU", "c10", "r10")
    b.add_pooling("pool10", 1, 1, 1, 1, "AVERAGE", "VALID", "r10", "p10", is_global=True)
    b.add_flatten("flatten", 0, "p10", "flat")
    n = len(labels)
    b.add_inner_product("fc", w(n, 16), w(n), 16, n, True, input_name="flat", output_name="logits")
    b.add_softmax("softmax", "logits", probs)
    b.set_class_labels(list(labels), predicted_feature_name=label)
    return b.spec


def main(out_dir: Path) -> None:
    original = out_dir / "SqueezeNet.mlmodel"
    save_spec(squeezenet_style_classifier(), original)
    updatable = out_dir / "UpdatableSqueezeNet.mlmodel"
    make_updatable(
        original,
        updatable,
        layers=["fc"],
        loss="cce",
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        batch_size=8,
        allowed_batch_sizes=[1, 2, 8, 16],
        epochs=10,
        allowed_epochs=[1, 10, 50],
        expand_classes=10,
        seed=0,
    )
    print(inspect(updatable).text())
    print("validator findings:", [str(f) for f in validate(updatable)] or "none")

    try:
        make_updatable(original, layers=["fire2/expand3x3"])
    except NotUpdatableError as exc:
        print(f"\nrefused as expected: {exc}")

    rng = np.random.default_rng(1)
    images = rng.normal(0, 1, (24, 3, 16, 16)).astype(np.float32)
    images[:12, 0] += 2.0  # the user's new class: a red-ish tint
    labels = np.array(["user0"] * 12 + ["cat"] * 12)
    model = load(updatable)
    before = np.mean(np.asarray(model.predict({"image": images[:12]})["label"]) == "user0")
    result = model.update({"image": images, "label": labels}, parameters={"epochs": 50})
    after = np.mean(np.asarray(result.model.predict({"image": images[:12]})["label"]) == "user0")
    print(
        f"\nnew class 'user0' recognized on its examples: before {before:.2f}, after {after:.2f} "
        f"(final loss {result.epoch_losses[-1]:.4f})"
    )
    result.model.save(out_dir / "Personalized.mlmodel")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
