"""``updatable-coreml simulate MODEL --train DATA``: rehearse on-device training off-device
with the reference runtime (a loss table per epoch; a learning curve for a k-NN model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .common import EXIT_OK, deprecated_alias
from .deps import require

HEADER = f"{'epoch':>5} {'train loss':>11} {'val loss':>9} {'val acc':>8}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="train an updatable model off-device as MLUpdateTask would",
        description="Train an updatable model with the reference runtime as "
        "MLUpdateTask would on device, and print the loss (and "
        "accuracy) per epoch; for a k-NN model, accuracy against "
        "examples per class.",
    )
    p.add_argument("model", help="an updatable .mlmodel")
    p.add_argument(
        "--train",
        required=True,
        metavar="DATA",
        help="a folder with one subfolder of images per label, or an .npz with x and y",
    )
    p.add_argument("--val", metavar="DATA", help="validation data, same forms")
    p.add_argument(
        "--layout",
        choices=("nchw", "nhwc"),
        default="nchw",
        help="how an .npz's x is ordered: nchw (channel-first, what exported models take; "
        "the default) or nhwc (channel-last, as Keras/TensorFlow arrays are): converted, "
        "never guessed",
    )
    p.add_argument("--epochs", type=int, help="override the model's epochs (within what it allows)")
    p.add_argument(
        "--lr", type=float, help="override the model's learning rate (within what it allows)"
    )
    p.add_argument(
        "--batch-size", type=int, help="override the model's batch size (within what it allows)"
    )
    p.add_argument("--seed", type=int, help="override the model's shuffle seed")
    p.add_argument(
        "--no-shuffle",
        dest="shuffle",
        action="store_false",
        default=None,
        help="keep the examples in their order",
    )
    p.add_argument(
        "--assumptions",
        metavar="PRESET|all",
        help="how to emulate the formulas Core ML does not publish: a preset (espresso, the "
        "default; ml-compute; torch; keras) or 'all', which also trains every plausible "
        "combination and prints the spread of the results (see the runtime docs)",
    )
    p.add_argument("--plot", metavar="PNG", help="write training/validation loss per epoch")
    p.add_argument("-o", "--output", metavar="OUT.mlmodel", help="write the updated model")
    deprecated_alias(p, "--out", "-o/--output", dest="output", metavar="OUT.mlmodel")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def check_dependencies(args: argparse.Namespace) -> None:
    """Everything optional this run will need, before the model is even loaded."""
    if args.plot:
        require("matplotlib", "--plot")
    for flag, data in (("--train", args.train), ("--val", args.val)):
        if data and Path(data).is_dir():
            require("PIL", f"{flag} {data} (a folder of images)")


def run(args: argparse.Namespace) -> int:
    from ..runtime import load
    from ..runtime.knn import KNNModel
    from ..runtime.model import PipelineModel
    from ..runtime.simulate import simulate

    check_dependencies(args)
    model = load(args.model)
    last = model.models[-1] if isinstance(model, PipelineModel) else model
    if isinstance(last, KNNModel):
        return _simulate_knn(args, model)
    from .progress import training

    shown: list[bool] = []
    with training(args.quiet) as bar:

        def show(row) -> None:
            if not shown:  # the header only once training runs: argument errors come first
                bar.print(HEADER)
                shown.append(True)
            val_loss = "-" if row.val_loss is None else f"{row.val_loss:.4f}"
            val_acc = "-" if row.val_accuracy is None else f"{row.val_accuracy:.3f}"
            bar.print(f"{row.epoch:>5} {row.train_loss:>11.4f} {val_loss:>9} {val_acc:>8}")

        result = simulate(
            args.model,
            args.train,
            val=args.val,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=args.seed,
            shuffle=args.shuffle,
            plot=args.plot,
            out=args.output,
            progress=bar.on_event,
            on_epoch=show,
            assumptions=args.assumptions,
            layout=args.layout,
        )
    for line in result.report_lines():  # overrides Core ML would ignore; the unknowns' spread
        print(line)
    for label, path in (("loss plot", args.plot), ("updated model", args.output)):
        if path:
            print(f"{label}: {path}")
    return EXIT_OK


def _simulate_knn(args: argparse.Namespace, model) -> int:
    """k-NN learns by storing examples, so the useful view is accuracy against how many
    examples per class the user gave (a learning curve), not a loss per epoch."""
    import numpy as np

    from ..knn import format_learning_curve, knn_learning_curve, plot_learning_curve
    from ..runtime.simulate import load_dataset

    epoch_options = [
        flag
        for flag, value in (
            ("--epochs", args.epochs),
            ("--lr", args.lr),
            ("--batch-size", args.batch_size),
        )
        if value is not None
    ]
    if epoch_options:
        raise ConfigError(f"{', '.join(epoch_options)}: a k-NN model has no epochs or optimizer")
    if args.val is None:
        raise ConfigError("a k-NN learning curve needs held-out data: add --val DATA")
    train = load_dataset(args.train, model, args.layout)
    val = load_dataset(args.val, model, args.layout)
    (input_name, x), (_, y) = train.items()
    (_, x_val), (_, y_val) = val.items()
    counts = [
        n
        for n in (1, 2, 5, 10, 20, 50)
        if n <= max(np.unique(np.asarray(y), return_counts=True)[1])
    ]
    rows = knn_learning_curve(model, x, y, x_val, y_val, shots=counts, seed=args.seed or 0)
    print(format_learning_curve(rows))
    if args.plot:
        plot_learning_curve({"k-NN": rows}, args.plot)
        print(f"accuracy plot: {args.plot}")
    if args.output:
        model.update(train).model.save(args.output)
        print(f"updated model: {args.output}")
    return EXIT_OK
