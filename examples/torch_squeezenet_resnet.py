"""SqueezeNet 1.1 and ResNet-18, written by hand, exported as updatable Core ML models.

* SqueezeNet: the Fire modules end in a channel concat, which Core ML cannot backpropagate
  through. Training the final ``classifier.1`` conv (``conv10``) works; asking to train a
  layer before a concat is refused with an error naming the concat.
* ResNet-18: freeze the backbone, train ``fc``. The frozen batch norms fold into their
  convolutions; the residual adds stay frozen, so nothing blocks backprop.

Run: ``python examples/torch_squeezenet_resnet.py [out_dir]`` (small inputs, random weights).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from torch import nn


class Fire(nn.Module):
    """Squeeze 1x1, then expand 1x1 and 3x3 side by side, joined along channels."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [
                self.expand1x1_activation(self.expand1x1(x)),
                self.expand3x3_activation(self.expand3x3(x)),
            ],
            1,
        )


class SqueezeNet11(nn.Module):
    """SqueezeNet 1.1 (Iandola et al.): module paths as in the reference layout."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(64, 16, 64, 64),
            Fire(128, 16, 64, 64),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(128, 32, 128, 128),
            Fire(256, 32, 128, 128),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            Fire(512, 64, 256, 256),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Conv2d(512, num_classes, 1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and a residual add (1x1 conv when the shape changes)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """ResNet-18 (He et al.) with the reference module paths (``layer4.1.conv2``, ``fc``)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            nn.Sequential(
                BasicBlock(widths[max(i - 1, 0)], width, 1 if i == 0 else 2),
                BasicBlock(width, width),
            )
            for i, width in enumerate(widths)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial statistics, as a trained model would have."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(channels, generator=generator) * 0.1)
    return model


def frozen_backbone_resnet(
    num_classes: int = 10, seed: int = 0
) -> tuple[ResNet18, torch.optim.Optimizer]:
    """ResNet-18 whose only trainable layer is ``fc``, with the optimizer that trains it."""
    torch.manual_seed(seed)
    model = randomize_batchnorm(ResNet18(num_classes), seed).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.fc.requires_grad_(True)
    return model, torch.optim.SGD(model.fc.parameters(), lr=0.01, momentum=0.9)


def main(out_dir: Path) -> None:
    from updatable_coreml.errors import NotUpdatableError
    from updatable_coreml.exporters.torch import export_torch

    labels = [f"class{i}" for i in range(10)]
    squeezenet = SqueezeNet11(num_classes=10).eval()
    report = export_torch(
        squeezenet,
        torch.randn(1, 3, 64, 64),
        out_dir / "squeezenet11.mlmodel",
        loss=nn.CrossEntropyLoss(),
        trainable=["classifier.1"],
        optimizer=torch.optim.SGD(squeezenet.classifier.parameters(), lr=0.01),
        class_labels=labels,
    )
    print(report.summary())
    try:
        export_torch(
            squeezenet,
            torch.randn(1, 3, 64, 64),
            out_dir / "refused.mlmodel",
            loss=nn.CrossEntropyLoss(),
            trainable=["features.12.expand3x3", "classifier.1"],
        )
    except NotUpdatableError as exc:
        print(f"refused as expected: {exc}")

    resnet, optimizer = frozen_backbone_resnet()
    report = export_torch(
        resnet,
        torch.randn(1, 3, 64, 64),
        out_dir / "resnet18_head.mlmodel",
        loss=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        class_labels=labels,
    )
    print(report.summary())


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
