"""Train-side stand-in: a small torch CNN exported to ONNX (what many training repos ship).

Usage: python make_model.py OUT.onnx
"""

from __future__ import annotations

import io
import sys
import warnings

import torch
from torch import nn


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 16),
        nn.ReLU(),
        nn.Linear(16, 6),
    ).eval()  # 4 known classes + 2 spare output slots for the app


def main(out: str) -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            small_cnn(),
            (torch.zeros(1, 3, 32, 32),),
            buffer,
            dynamo=False,
            input_names=["image"],
            output_names=["scores"],
            dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}},
        )
    with open(out, "wb") as handle:
        handle.write(buffer.getvalue())


if __name__ == "__main__":
    main(sys.argv[1])
