"""``updatable-coreml export SOURCE -o OUT.mlmodel``: one export as a clean pipeline step.

SOURCE is a Keras file (``.keras``, loaded with ``safe_mode=True``; legacy ``.h5``), an
``.onnx`` model, a torch ``.pt2`` program, or ``module:factory`` / ``file.py:factory`` (with
``--weights`` and ``--example-shape``). Settings come from ``--config export.toml`` (the same
names as the flags, ``batch-size`` or ``batch_size``), overridden by flags; anything unset is
what the source says (Keras's compiled loss, optimizer and trainable flags; torch's
``requires_grad``), except that ONNX needs ``--loss``.

Exit codes: 0 exported and valid; 1 exported but the validator reports errors (``--strict``:
or warnings); 2 unusable input or unsupported construct (one line on stderr, no output file).
Quiet unless ``--verbose``; the output is byte-identical for the same source and settings.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import platform
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..frameworks import quiet_environment
from .common import EXIT_INVALID, EXIT_OK, deprecated_alias
from .deps import require
from .export_config import CHOICES, SETTINGS, load_config
from .export_sources import export_source, source_kind
from .progress import stages

#: source kind -> the framework module its frontend imports
FRAMEWORK = {"keras": "keras", "onnx": "onnx", "torch": "torch"}

DESCRIPTION = (
    "Export a Keras (.keras, .h5), ONNX (.onnx) or torch (.pt2, module:factory) model "
    "to an updatable .mlmodel. Settings come from --config, overridden by flags; "
    "anything unset is what the source says. Exit codes: 0 exported and valid, 1 "
    "exported but invalid, 2 unusable input (nothing written)."
)


def register(sub: argparse._SubParsersAction) -> None:
    """Register ``export`` (every option defaults to None: unset means config, then source)."""
    p = sub.add_parser(
        "export",
        help="export a Keras/ONNX/torch model to an updatable .mlmodel",
        description=DESCRIPTION,
    )
    p.add_argument("source", nargs="?", help=".keras, .h5, .onnx, .pt2, or module:factory")
    p.add_argument("-o", "--output", help="the .mlmodel to write")
    p.add_argument("--config", metavar="TOML", help="settings file; flags override it")
    p.add_argument("--report", metavar="JSON", help="write what was exported, findings, versions")
    p.add_argument("--weights", metavar="STATE_DICT", help="torch state dict for module:factory")
    p.add_argument("--example-shape", metavar="C,H,W", help="one example's input shape (torch)")
    p.add_argument(
        "--example-dtype",
        choices=CHOICES["example_dtype"],
        help="dtype of that example (torch): int64 for token ids read by an embedding "
        "(default: float32)",
    )
    p.add_argument(
        "--trainable",
        nargs="+",
        metavar="NAME",
        help="layers that train: names, or 'all' (default: what the source says)",
    )
    p.add_argument(
        "--loss",
        choices=CHOICES["loss"],
        help="cce or mse (default: the Keras model's compiled loss; required for ONNX and torch)",
    )
    p.add_argument(
        "--optimizer",
        choices=CHOICES["optimizer"],
        help="on-device optimizer (default: the Keras model's compiled one, else sgd)",
    )
    p.add_argument("--lr", type=float, help="learning rate (without --optimizer: of sgd)")
    p.add_argument("--momentum", type=float, help="SGD momentum")
    p.add_argument("--beta1", type=float, help="Adam beta1")
    p.add_argument("--beta2", type=float, help="Adam beta2")
    p.add_argument("--eps", type=float, help="Adam epsilon")
    p.add_argument("--lr-range", metavar="MIN,MAX", help="learning rates the app may set")
    p.add_argument("--batch-size", type=int, help="examples per gradient step on device")
    p.add_argument("--allowed-batch-sizes", metavar="N,N,...", help="batch sizes the app may set")
    p.add_argument("--epochs", type=int, help="epochs per update task")
    p.add_argument("--allowed-epochs", metavar="N,N,...", help="epoch counts the app may set")
    p.add_argument(
        "--shuffle",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="shuffle the examples at every epoch",
    )
    p.add_argument("--seed", type=int, help="shuffle seed stored in the model")
    p.add_argument(
        "--class-labels",
        metavar="FILE|a,b,c",
        help="class labels: a file with one per line, or a,b,c",
    )
    p.add_argument(
        "--extra-class-slots",
        type=int,
        metavar="N",
        help="placeholder labels user0... for classes the app learns later",
    )
    p.add_argument("--image-input", metavar="SPEC", help="name:rgb:scale=1/255:bias=-1,-1,-1")
    p.add_argument("--author", help="the model's author (metadata)")
    p.add_argument("--license", help="the model's licence (metadata)")
    p.add_argument("--description", help="the model's description (metadata)")
    p.add_argument(
        "--model-version",
        dest="model_version",
        metavar="VERSION",
        help="the model's version string (metadata)",
    )
    deprecated_alias(p, "--version", "--model-version", dest="model_version", metavar="VERSION")
    p.add_argument(
        "--allow-unsupported",
        action="store_true",
        default=None,
        help="turn refusals of options Core ML cannot carry into report warnings",
    )
    p.add_argument(
        "--trust-source",
        action="store_true",
        help="SOURCE is a file you made: allow loaders that can run code stored in it "
        "(a .pt2, read by torch.export.load); flag only, never from --config",
    )
    p.add_argument(
        "--pipeline",
        action="store_true",
        default=None,
        help="write the frozen backbone and the updatable head as a two-model pipeline",
    )
    p.add_argument(
        "--backbone",
        choices=CHOICES["backbone"],
        help="with --pipeline (Keras, torch): convert the backbone with our frontend, "
        "with coremltools, or with coremltools only when ours refuses it (auto)",
    )
    add_compression_options(p)
    p.add_argument(
        "--strict", action="store_true", default=None, help="validator warnings fail (exit 1)"
    )
    p.add_argument("--verbose", action="store_true", default=None, help="print the export summary")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=None,
        help="no progress display (it shows only on a terminal)",
    )
    p.set_defaults(run=run)


def add_compression_options(p: argparse.ArgumentParser) -> None:
    """``--compress-frozen``, ``--val``, ``--val-layout`` (export and make-updatable)."""
    p.add_argument(
        "--compress-frozen",
        choices=CHOICES["compress_frozen"],
        help="store the weights of frozen layers quantized (lossy; updatable layers stay "
        "fp32): int8 (4x smaller), lut8 (4x), lut4 (8x); the report gives the sizes and "
        "the change in predictions",
    )
    p.add_argument(
        "--val",
        metavar="DATA",
        help="with --compress-frozen: validation data (an .npz with x and y, or a folder "
        "of images per label) to report accuracy before and after (default: the largest "
        "output change on random examples)",
    )
    p.add_argument(
        "--val-layout",
        choices=CHOICES["val_layout"],
        help="how --val's .npz x is ordered: nchw (channel-first, the default) or nhwc",
    )


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """Config file values overridden by the flags given, each coerced and checked."""
    merged = load_config(args.config) if args.config else {}
    merged.update(
        {key: getattr(args, key) for key in SETTINGS if getattr(args, key, None) is not None}
    )
    settings = {key: SETTINGS[key](value, key) for key, value in merged.items()}
    for key, allowed in CHOICES.items():
        if key in settings and settings[key] not in allowed:
            raise ConfigError(f"{key}: {settings[key]!r} is not one of {', '.join(allowed)}")
    for key in ("source", "output"):
        if not settings.get(key):
            raise ConfigError(
                f"no {key}: give {'SOURCE' if key == 'source' else '-o OUT.mlmodel'} "
                f"or set {key} in the config file"
            )
    from ..spec_io import check_output_path

    for key in ("output", "report"):  # refuse before loading anything; never overwrite the source
        if settings.get(key):
            check_output_path(settings[key], not_same_as=settings["source"])
    check_compression(
        settings.get("compress_frozen"), settings.get("val"), settings.get("val_layout")
    )
    settings["trust_source"] = bool(getattr(args, "trust_source", False))
    return settings


def check_compression(method: Any, val: Any, layout: Any) -> Any:
    """The compression options checked before any model is loaded (``ExportOptions``' rules,
    and ``--val`` exists); returns the ``ExportOptions`` holding them."""
    from ..options import ExportOptions

    options = ExportOptions(compress_frozen=method, val=val, val_layout=layout or "nchw")
    if val is not None and not Path(val).exists():
        raise ConfigError(f"--val {val}: no such file or folder")
    return options


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    verbose = bool(settings.get("verbose"))
    kind = source_kind(settings["source"])
    with stages(bool(settings.get("quiet"))) as progress:
        with quiet(not verbose):
            progress.stage(f"importing {FRAMEWORK[kind]}")
            require(FRAMEWORK[kind], f"a {kind} source ({settings['source']})")
            progress.stage(f"exporting {settings['source']}")
            report = export_source(kind, settings)
        from ..validator import validate

        progress.stage(f"validating {report.path}")
        findings = validate(report.path)
    failing = [
        f
        for f in findings
        if f.severity == "error" or (settings.get("strict") and f.severity == "warning")
    ]
    if settings.get("report"):
        write_report(settings["report"], kind, settings, report, findings, not failing)
    if verbose:
        print(report.summary())
    for finding in failing:
        print(f"updatable-coreml: {finding}", file=sys.stderr)
    return EXIT_INVALID if failing else EXIT_OK


@contextlib.contextmanager
def quiet(enabled: bool) -> Iterator[None]:
    """Silence framework noise (TensorFlow's C++ log, Python warnings, library prints)."""
    if not enabled:
        yield
        return
    quiet_environment()
    sink = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        yield


# -- the report ------------------------------------------------------------------------------


def versions(kind: str) -> dict[str, str]:
    """Exporter and source-framework versions, for reproducing an export."""
    import numpy

    from .. import __version__

    found = {
        "updatable_coreml": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }
    modules = {"onnx": ("onnx",), "torch": ("torch",), "keras": ("keras", "tensorflow")}[kind]
    for name in modules:
        with contextlib.suppress(ImportError):
            found[name] = __import__(name).__version__
    return found


def _sha256(path: str) -> str | None:
    if not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def update_parameters(model_path: str) -> dict | None:
    """The written model's update parameters, structured (schema.py): the updatable stage's,
    read back from the file, so the report states what the device will read."""
    from ..inspection import inspect

    info = inspect(model_path)
    while info.submodels:
        info = info.submodels[-1]
    return info.training


def write_report(
    path: str, kind: str, settings: dict[str, Any], report: Any, findings: list, valid: bool
) -> None:
    from ..schema import REPORT_SCHEMA, SCHEMA_VERSION
    from ..spec_io import atomic_write_bytes

    export = {k: v for k, v in report.to_dict().items() if k != "training"}
    export["update_parameters"] = update_parameters(report.path)
    export["summary"] = report.summary().splitlines()  # the terminal's text (--verbose)
    document = {
        "schema": REPORT_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "valid": valid,
        "output": {"path": report.path, "sha256": report.sha256, "size_bytes": report.size_bytes},
        "source": {"path": settings["source"], "kind": kind, "sha256": _sha256(settings["source"])},
        "export": export,
        "findings": [finding.to_dict() for finding in findings],
        "settings": {k: v for k, v in settings.items() if k not in ("report", "verbose", "quiet")},
        "versions": versions(kind),
    }
    atomic_write_bytes((json.dumps(document, indent=2, sort_keys=True) + "\n").encode(), path)
