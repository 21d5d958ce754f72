"""ResNet-18 head export (frozen backbone, trainable ``fc``), from a built module to a saved
file: ``export_torch`` against ``ct.convert(torch.jit.trace(...), convert_to="neuralnetwork")``
+ save of the same module (not updatable, and without the softmax a loss needs).

Each side runs in its own process (so peak memory is its own): "cold" is the first export in
a fresh process, imports included; "warm" the best of 3 more. The serialization floor is
writing the fp32 weights' bytes to a file and fsyncing it (our saves are atomic and durable).
Targets: warm <= 0.2x coremltools, <= 5x the floor, peak memory no worse.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

SIZE = 224


def _ours(model, example, path: Path) -> None:
    import torch
    from torch import nn

    from updatable_coreml.exporters.torch import export_torch

    optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.01, momentum=0.9)
    export_torch(
        model,
        example,
        path,
        loss=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        class_labels=list(range(10)),
        seed=0,
    )


def _coremltools(model, example, path: Path) -> None:
    import coremltools as ct
    import torch

    traced = torch.jit.trace(model, example)
    mlmodel = ct.convert(
        traced,
        convert_to="neuralnetwork",
        inputs=[ct.TensorType(name="x", shape=tuple(example.shape))],
    )
    mlmodel.save(str(path))


def _floor(model, example, path: Path) -> None:
    """Write the fp32 weights and fsync: what any durable save of this model costs."""
    with open(path, "wb") as handle:
        for tensor in model.state_dict().values():
            handle.write(tensor.detach().float().numpy().tobytes())
        handle.flush()
        os.fsync(handle.fileno())


def child(which: str) -> None:
    import torch
    from torch_squeezenet_resnet import frozen_backbone_resnet

    model, _ = frozen_backbone_resnet()
    example = torch.randn(1, 3, SIZE, SIZE)
    run = {"ours": _ours, "coremltools": _coremltools, "floor": _floor}[which]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.mlmodel"
        start = time.perf_counter()
        run(model, example, path)
        cold = time.perf_counter() - start
        warm = []
        for _ in range(3):
            start = time.perf_counter()
            run(model, example, path)
            warm.append(time.perf_counter() - start)
        size = path.stat().st_size
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"cold": cold, "warm": min(warm), "peak_mb": peak_mb, "bytes": size}))


def measure(which: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, which], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ours, theirs, floor = (measure(w) for w in ("ours", "coremltools", "floor"))
    print(f"ResNet-18 head ({SIZE}x{SIZE}), export to a saved file:")
    for name, r in (("export_torch", ours), ("ct.convert+save", theirs), ("weights floor", floor)):
        print(
            f"  {name:<16} cold {r['cold']:.3f} s  warm {r['warm']:.3f} s  "
            f"peak RSS {r['peak_mb']:.0f} MB  file {r['bytes'] / 1e6:.1f} MB"
        )
    print(
        f"  ratio vs coremltools: warm {ours['warm'] / theirs['warm']:.3f}x, cold "
        f"{ours['cold'] / theirs['cold']:.3f}x (target <= 0.2x)"
    )
    print(
        f"  ratio vs serialization floor: warm {ours['warm'] / floor['warm']:.2f}x (target <= 5x)"
    )
    print(
        f"  peak memory vs coremltools: {ours['peak_mb'] / theirs['peak_mb']:.2f}x (target <= 1x)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(sys.argv[1])
    else:
        main()
