"""Measure ``compress_frozen`` on real architectures (the numbers in docs/compression.md).

For each named case of ``tests/architectures.py`` (random weights and batch-norm statistics,
frozen backbone, 5-class trainable head scaled so its probabilities are far from one-hot):
export one fp32 network, store its frozen weights by each method, and run every file through
the reference runtime on seeded random inputs: file size, top-1 agreement with the fp32
file and the largest difference of a class probability. Prints a Markdown table.

    PYTHONPATH=.:tests .venv/bin/python tools/compression.py resnet18 MobileNetV2 [--examples 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(argv: list[str]) -> int:
    import architectures as arch
    from updatable_coreml.compression import METHODS, compress_frozen
    from updatable_coreml.runtime import load
    from updatable_coreml.sizes import format_size
    from updatable_coreml.spec_io import load_spec
    from updatable_coreml.validator import is_valid, validate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="case names of tests/architectures.py")
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--keep", metavar="DIR", help="keep the files written")
    args = parser.parse_args(argv)
    cases = {case.name: case for case in arch.KERAS_CASES + arch.TORCH_CASES}
    rows = [
        "| architecture | storage | file | frozen weights | top-1 agreement | "
        "largest probability change | valid |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in args.cases:
        case = cases[name]
        started = time.time()
        model, head = case.build()
        source = arch.Source(case.framework, model, head)
        rng = np.random.default_rng(1)
        shape = (args.examples, case.size, case.size, 3)
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        if case.framework == "torch":
            x = x.transpose(0, 3, 1, 2).copy()
        source.scale_head(x[: arch.EXAMPLES], np.random.default_rng(0))
        workdir = Path(args.keep or tempfile.mkdtemp())
        workdir.mkdir(parents=True, exist_ok=True)
        plain = workdir / f"{name}-fp32.mlmodel"
        source.export(x[: arch.EXAMPLES], plain, pipeline=False)
        inputs = source.channel_first(x)
        reference = arch._runtime_probabilities(load(plain), inputs)
        source_diff = float(np.abs(reference - source.probabilities(x)).max())
        spec = load_spec(plain)
        rows.append(
            f"| {name} ({case.framework}, {case.size}x{case.size}) | fp32 | "
            f"{format_size(plain.stat().st_size)} | | (source: {source_diff:.1e}) | | "
            f"{'yes' if is_valid(validate(spec)) else 'NO'} |"
        )
        for method in METHODS:
            small, result = compress_frozen(spec, method)
            path = workdir / f"{name}-{method}.mlmodel"
            path.write_bytes(small.SerializeToString())
            probabilities = arch._runtime_probabilities(load(path), inputs)
            agreement = float(np.mean(probabilities.argmax(1) == reference.argmax(1)))
            change = float(np.abs(probabilities - reference).max())
            before = sum(layer.bytes_before for layer in result.layers)
            after = sum(layer.bytes_after for layer in result.layers)
            rows.append(
                f"| | {method} | {format_size(path.stat().st_size)} | "
                f"{format_size(before)} -> {format_size(after)} ({len(result.layers)} layers) | "
                f"{agreement:.1%} | {change:.2e} | "
                f"{'yes' if is_valid(validate(small)) else 'NO'} |"
            )
        print(f"{name}: {time.time() - started:.0f} s", file=sys.stderr)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
