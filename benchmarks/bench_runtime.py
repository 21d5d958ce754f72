"""Reference runtime: one epoch of head training on a frozen conv backbone vs torch.

1000 examples of 3x64x64, mini-batch 32 (the last one wrapped around, as on device), SGD with
momentum. The backbone (3 convolutions, ReLU, max pooling, global average pooling) is frozen;
the head (dense -> ReLU -> dense -> softmax, cross-entropy) trains. Torch runs the backbone
under ``no_grad`` and trains the same head on the same batches. Both run in float32 with
their default threads; the time is the best of 3 epochs. Target: runtime <= 1.5x torch.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXAMPLES, SIZE, BATCH, CLASSES, REPEATS = 1000, 64, 32, 10, 3
BACKBONE = [(3, 16), (16, 32), (32, 64)]  # (in, out) channels of the 3x3 convolutions


def make_weights(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    weights = {}
    for i, (cin, cout) in enumerate(BACKBONE):
        weights[f"conv{i}_w"] = (rng.normal(size=(cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(
            np.float32
        )
        weights[f"conv{i}_b"] = np.zeros(cout, np.float32)
    weights["fc1_w"] = (rng.normal(size=(32, 64)) / 8).astype(np.float32)
    weights["fc1_b"] = np.zeros(32, np.float32)
    weights["fc2_w"] = (rng.normal(size=(CLASSES, 32)) / 6).astype(np.float32)
    weights["fc2_b"] = np.zeros(CLASSES, np.float32)
    return weights


def make_spec(w: dict):
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder, SgdParams

    b = NeuralNetworkBuilder(
        [("image", datatypes.Array(3, SIZE, SIZE))],
        [("probs", datatypes.Array(CLASSES))],
        mode="classifier",
    )
    blob = "image"
    for i, (cin, cout) in enumerate(BACKBONE):
        b.add_convolution(
            f"conv{i}",
            cin,
            cout,
            3,
            3,
            1,
            1,
            "same",
            1,
            w[f"conv{i}_w"].transpose(2, 3, 1, 0),
            w[f"conv{i}_b"],
            True,
            input_name=blob,
            output_name=f"c{i}",
        )
        b.add_activation(f"relu{i}", "RELU", f"c{i}", f"r{i}")
        last = i == len(BACKBONE) - 1
        b.add_pooling(
            f"pool{i}",
            2,
            2,
            2,
            2,
            "AVERAGE" if last else "MAX",
            "VALID",
            f"r{i}",
            f"p{i}",
            is_global=last,
        )
        blob = f"p{i}"
    b.add_flatten("flat", 0, blob, "features")
    b.add_inner_product("fc1", w["fc1_w"], w["fc1_b"], 64, 32, True, "features", "h")
    b.add_activation("relu_head", "RELU", "h", "hr")
    b.add_inner_product("fc2", w["fc2_w"], w["fc2_b"], 32, CLASSES, True, "hr", "logits")
    b.add_softmax("softmax", "logits", "probs")
    b.set_class_labels(
        list(range(CLASSES)), predicted_feature_name="label", prediction_blob="probs"
    )
    b.make_updatable(["fc1", "fc2"])
    b.set_categorical_cross_entropy_loss("loss", "probs")
    b.set_sgd_optimizer(SgdParams(lr=0.01, batch=BATCH, momentum=0.9))
    b.set_epochs(1)
    return b.spec


def time_runtime(spec, x, y) -> float:
    from updatable_coreml import runtime

    model = runtime.load(spec)
    start = time.perf_counter()
    model.update({"image": x, "label": y}, parameters={"shuffle": False})
    return time.perf_counter() - start


def time_torch(w: dict, x, y) -> float:
    import torch
    from torch import nn

    from updatable_coreml.runtime.update import mini_batches

    layers = []
    for i, (cin, cout) in enumerate(BACKBONE):
        conv = nn.Conv2d(cin, cout, 3, padding=1)
        conv.weight.data, conv.bias.data = (
            torch.tensor(w[f"conv{i}_w"]),
            torch.tensor(w[f"conv{i}_b"]),
        )
        last = i == len(BACKBONE) - 1
        layers += [conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1) if last else nn.MaxPool2d(2)]
    backbone = nn.Sequential(*layers, nn.Flatten()).requires_grad_(False).eval()
    head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, CLASSES))
    for layer, name in ((head[0], "fc1"), (head[2], "fc2")):
        layer.weight.data, layer.bias.data = (
            torch.tensor(w[f"{name}_w"]),
            torch.tensor(w[f"{name}_b"]),
        )
    optimizer = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    start = time.perf_counter()
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    for rows in mini_batches(np.arange(len(x)), BATCH, "wrap"):
        index = torch.from_numpy(rows)
        with torch.no_grad():
            features = backbone(images[index])
        optimizer.zero_grad()
        nn.functional.cross_entropy(head(features), labels[index]).backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    import torch

    rng = np.random.default_rng(1)
    x = rng.normal(size=(EXAMPLES, 3, SIZE, SIZE)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=EXAMPLES)
    weights = make_weights()
    spec = make_spec(weights)
    ours = min(time_runtime(spec, x, y) for _ in range(REPEATS))
    theirs = min(time_torch(weights, x, y) for _ in range(REPEATS))
    print(
        f"runtime: one epoch of head training, {EXAMPLES} x 3x{SIZE}x{SIZE}, batch {BATCH}, "
        f"frozen 3-conv backbone ({torch.get_num_threads()} torch threads)"
    )
    print(f"  reference runtime  {ours * 1000:8.1f} ms")
    print(f"  torch (no_grad)    {theirs * 1000:8.1f} ms")
    print(f"  ratio              {ours / theirs:8.2f}x  (target <= 1.5x)")


if __name__ == "__main__":
    main()
