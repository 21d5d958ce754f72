"""Train a small classifier in torch, export it as an updatable Core ML model, and check it.

The optimizer you trained with defines what trains on device: here only the head (``head.1``
and ``head.4``), with the same SGD learning rate and momentum. The reference runtime then
predicts with the exported file and runs an MLUpdateTask on a few new examples, as the app
would on the phone.

Run: ``python examples/torch_export.py [out.mlmodel]``
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from updatable_coreml.exporters.torch import export_torch
from updatable_coreml.runtime.model import load

LABELS = ["circle", "square", "triangle"]


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(16, 32), nn.Dropout(0.2), nn.ReLU(), nn.Linear(32, len(LABELS))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def main(path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier()
    x, y = torch.randn(64, 1, 16, 16), torch.randint(0, len(LABELS), (64,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(5):  # "pre-training" on the server
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()

    # Personalization on device trains the head only, with the same hyperparameters.
    model.features.requires_grad_(False)
    head_optimizer = torch.optim.SGD(model.head.parameters(), lr=0.05, momentum=0.9)
    report = export_torch(
        model,
        x[:1],
        path,
        loss=loss_fn,
        optimizer=head_optimizer,
        class_labels=LABELS,
        batch_size=8,
        allowed_batch_sizes=(4, 8, 16),
        epochs=5,
        seed=0,
    )
    print(report.summary())

    runtime = load(path)
    model.eval()
    out = runtime.predict({"x": x[:4].numpy()})
    print("runtime:", [str(label) for label in out["classLabel"]])
    print("torch:  ", [LABELS[i] for i in model(x[:4]).argmax(1).tolist()])

    new_x = np.random.default_rng(1).standard_normal((16, 1, 16, 16)).astype(np.float32)
    result = runtime.update({"x": new_x, "classLabel": np.array(LABELS)[np.arange(16) % 3]})
    print("on-device epoch losses:", [round(loss, 4) for loss in result.epoch_losses])


if __name__ == "__main__":
    main(
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "Classifier.mlmodel"
    )
