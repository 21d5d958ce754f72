"""``updatable-coreml`` command line: a clean pipeline step.

Exit codes: 0 success/valid, 1 model invalid (validate, export), 2 unusable input or
unsupported construct (one line on stderr, no traceback, no output file).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Optional, Sequence

from . import __version__
from .errors import ConfigError, UpdatableCoreMLError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def int_list(value, key: str = "value") -> list[int]:
    """Integers from ``'1,2,8'`` (a flag) or a list (a config file)."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        return [int(v) for v in items if str(v).strip()]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected integers (a list or 'N,N,...'), got {value!r}") from None


def float_pair(value, key: str = "value") -> tuple[float, float]:
    """``MIN,MAX`` from a flag or a two-item list."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        low, high = (float(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected MIN,MAX, got {value!r}") from None
    return low, high


def _flag(parse, key: str):
    """An argparse ``type=`` that reports a bad value as one usage line."""
    def convert(text: str):
        try:
            return parse(text, key)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loss", choices=("cce", "mse"), default="cce")
    p.add_argument("--loss-input", metavar="BLOB", help="blob the loss reads (default: the softmax "
                   "output for cce, the single model output for mse)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--lr", type=float, help="learning rate (default 0.01 sgd, 0.001 adam)")
    p.add_argument("--momentum", type=float)
    p.add_argument("--beta1", type=float)
    p.add_argument("--beta2", type=float)
    p.add_argument("--eps", type=float)
    p.add_argument("--lr-range", type=_flag(float_pair, "--lr-range"), metavar="MIN,MAX")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--allowed-batch-sizes", type=_flag(int_list, "--allowed-batch-sizes"), metavar="N,N,...")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--allowed-epochs", type=_flag(int_list, "--allowed-epochs"), metavar="N,N,...")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int)


def _cmd_inspect(args) -> int:
    from .inspection import inspect
    info = inspect(args.model)
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.text())
    return EXIT_OK


def _cmd_validate(args) -> int:
    from .validator import validate
    worst = EXIT_OK
    report = {}
    for path in args.models:
        findings = validate(path)
        errors = [f for f in findings if f.severity == "error" or (args.strict and f.severity == "warning")]
        worst = max(worst, EXIT_INVALID if errors else EXIT_OK)
        report[path] = {"valid": not errors, "findings": [f.to_dict() for f in findings]}
        if not args.json:
            print(f"{path}: {'invalid' if errors else 'valid'}")
            for finding in findings:
                print(f"  {finding}")
    if args.json:
        print(json.dumps(report, indent=2))
    return worst


def _cmd_make_updatable(args) -> int:
    from .inspection import inspect
    from .surgery import make_updatable
    make_updatable(args.model, args.output, layers=args.layers, loss=args.loss,
                   loss_input=args.loss_input, optimizer=args.optimizer, lr=args.lr,
                   momentum=args.momentum, beta1=args.beta1, beta2=args.beta2, eps=args.eps,
                   lr_range=args.lr_range, batch_size=args.batch_size,
                   allowed_batch_sizes=args.allowed_batch_sizes, epochs=args.epochs,
                   allowed_epochs=args.allowed_epochs, shuffle=args.shuffle, seed=args.seed,
                   expand_classes=args.expand_classes, reinit=args.reinit)
    if not args.quiet:
        print(inspect(args.output).text())
    return EXIT_OK


def _cmd_simulate(args) -> int:
    from .runtime import load
    from .runtime.knn import KNNModel
    from .runtime.model import PipelineModel
    from .runtime.simulate import simulate

    model = load(args.model)
    last = model.models[-1] if isinstance(model, PipelineModel) else model
    if isinstance(last, KNNModel):
        return _simulate_knn(args, model)
    print(f"{'epoch':>5} {'train loss':>11} {'val loss':>9} {'val acc':>8}")

    def show(row) -> None:
        val_loss = "-" if row.val_loss is None else f"{row.val_loss:.4f}"
        val_acc = "-" if row.val_accuracy is None else f"{row.val_accuracy:.3f}"
        print(f"{row.epoch:>5} {row.train_loss:>11.4f} {val_loss:>9} {val_acc:>8}", flush=True)

    simulate(args.model, args.train, val=args.val, epochs=args.epochs, lr=args.lr,
             batch_size=args.batch_size, seed=args.seed, shuffle=args.shuffle, plot=args.plot,
             out=args.out, on_epoch=show)
    for label, path in (("loss plot", args.plot), ("updated model", args.out)):
        if path:
            print(f"{label}: {path}")
    return EXIT_OK


def _simulate_knn(args, model) -> int:
    """k-NN learns by storing examples, so the useful view is accuracy against how many
    examples per class the user gave (a learning curve), not a loss per epoch."""
    import numpy as np

    from .knn import format_learning_curve, knn_learning_curve, plot_learning_curve
    from .runtime.simulate import load_dataset

    epoch_options = [flag for flag, value in (("--epochs", args.epochs), ("--lr", args.lr),
                                              ("--batch-size", args.batch_size)) if value is not None]
    if epoch_options:
        raise ConfigError(f"{', '.join(epoch_options)}: a k-NN model has no epochs or optimizer")
    if args.val is None:
        raise ConfigError("a k-NN learning curve needs held-out data: add --val DATA")
    train, val = load_dataset(args.train, model), load_dataset(args.val, model)
    (input_name, x), (_, y) = train.items()
    (_, x_val), (_, y_val) = val.items()
    counts = [n for n in (1, 2, 5, 10, 20, 50) if n <= max(np.unique(np.asarray(y), return_counts=True)[1])]
    rows = knn_learning_curve(model, x, y, x_val, y_val, shots=counts, seed=args.seed or 0)
    print(format_learning_curve(rows))
    if args.plot:
        plot_learning_curve({"k-NN": rows}, args.plot)
        print(f"accuracy plot: {args.plot}")
    if args.out:
        model.update(train).model.save(args.out)
        print(f"updated model: {args.out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="updatable-coreml", description="Export, check and rehearse updatable Core ML models (exit codes: 0 ok, 1 invalid model, 2 unusable input).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("inspect", help="show inputs, outputs, layers and update parameters")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cmd_inspect)

    p = sub.add_parser("validate", help="check models with Core ML's updatable rules")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--json", action="store_true")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.set_defaults(run=_cmd_validate)

    p = sub.add_parser("make-updatable", help="make an existing NeuralNetwork .mlmodel updatable")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--layers", nargs="+", required=True, metavar="NAME")
    _add_training_options(p)
    p.add_argument("--expand-classes", type=int, metavar="N",
                   help="grow the classifier to N classes with placeholder labels user0, user1, ...")
    p.add_argument("--reinit", action="store_true", help="re-initialize the chosen layers (seeded)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=_cmd_make_updatable)

    p = sub.add_parser("simulate", help="train an updatable model off-device as MLUpdateTask would")
    p.add_argument("model")
    p.add_argument("--train", required=True, metavar="DATA",
                   help="a folder with one subfolder of images per label, or an .npz with x and y")
    p.add_argument("--val", metavar="DATA", help="validation data, same forms")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--no-shuffle", dest="shuffle", action="store_false", default=None)
    p.add_argument("--plot", metavar="PNG", help="write training/validation loss per epoch")
    p.add_argument("-o", "--out", metavar="MLMODEL", help="write the updated model")
    p.set_defaults(run=_cmd_simulate)

    for module, function in EXTRA_COMMANDS:
        getattr(importlib.import_module(f".{module}", __package__), function)(sub)
    return parser


#: Subcommands defined in other modules, as (module, function registering it). Each module
#: keeps its heavy imports inside its functions, so building the parser stays fast.
EXTRA_COMMANDS = [("swift", "add_cli_command"), ("export_cli", "add_export_command"),
                  ("demo", "add_cli_command"), ("plan.command", "add_cli_command")]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UpdatableCoreMLError as exc:
        print(f"updatable-coreml: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("updatable-coreml: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
