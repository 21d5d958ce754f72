"""``updatable-coreml make-updatable MODEL -o OUT --trainable ...``: an existing NeuralNetwork
``.mlmodel`` made updatable by surgery (no source framework needed)."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..options import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS
from .common import EXIT_OK, deprecated_alias, flag, float_pair, int_list
from .export import add_compression_options, check_compression


def add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--loss",
        choices=("cce", "mse"),
        default="cce",
        help="cce: categorical cross-entropy on a softmax (classifiers); mse: mean "
        "squared error (default: %(default)s)",
    )
    p.add_argument(
        "--loss-input",
        metavar="BLOB",
        help="blob the loss reads (default: the softmax "
        "output for cce, the single model output for mse)",
    )
    p.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default="sgd",
        help="on-device optimizer (default: %(default)s)",
    )
    p.add_argument("--lr", type=float, help="learning rate (default 0.01 sgd, 0.001 adam)")
    p.add_argument("--momentum", type=float, help="SGD momentum")
    p.add_argument("--beta1", type=float, help="Adam beta1")
    p.add_argument("--beta2", type=float, help="Adam beta2")
    p.add_argument("--eps", type=float, help="Adam epsilon")
    p.add_argument(
        "--lr-range",
        type=flag(float_pair, "--lr-range"),
        metavar="MIN,MAX",
        help="learning rates the app may set",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="examples per gradient step on device (default: %(default)s)",
    )
    p.add_argument(
        "--allowed-batch-sizes",
        type=flag(int_list, "--allowed-batch-sizes"),
        metavar="N,N,...",
        help="batch sizes the app may set (default: the batch size)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_EPOCHS,
        help="epochs per update task (default: %(default)s)",
    )
    p.add_argument(
        "--allowed-epochs",
        type=flag(int_list, "--allowed-epochs"),
        metavar="N,N,...",
        help="epoch counts the app may set",
    )
    p.add_argument(
        "--shuffle",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="shuffle the examples at every epoch (default: yes)",
    )
    p.add_argument("--seed", type=int, help="shuffle seed stored in the model (default: none)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-updatable",
        help="make an existing NeuralNetwork .mlmodel updatable",
        description="Mark layers of an existing NeuralNetwork .mlmodel updatable, "
        "add the loss, optimizer and training inputs, and write a "
        "copy (the input is never modified).",
    )
    p.add_argument("model", help="a NeuralNetwork .mlmodel (not an ML Program)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT.mlmodel",
        help="the updatable model to write (never the input)",
    )
    p.add_argument(
        "--trainable",
        nargs="+",
        metavar="NAME",  # required, checked in run()
        help="required: layers that train on device (convolution or innerProduct)",
    )
    deprecated_alias(p, "--layers", "--trainable", dest="trainable", nargs="+", metavar="NAME")
    add_training_options(p)
    p.add_argument(
        "--extra-class-slots",
        type=int,
        metavar="N",
        help="add N spare classes for labels the app learns later (placeholder "
        "labels user0, user1, ...)",
    )
    deprecated_alias(
        p,
        "--expand-classes",
        "--extra-class-slots",
        dest="expand_classes",
        type=int,
        metavar="N",
        note=" (spare slots, not the total)",
    )
    p.add_argument("--reinit", action="store_true", help="re-initialize the chosen layers (seeded)")
    add_compression_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the result's summary")
    p.set_defaults(run=run, expand_classes=None)


def total_classes(model: str, spare: int) -> int:
    """``--extra-class-slots N`` as the total class count the surgery takes."""
    from ..spec_io import load_spec

    if spare < 1:
        raise ConfigError(f"--extra-class-slots {spare}: give 1 or more spare classes")
    spec = load_spec(model)
    if spec.WhichOneof("Type") != "neuralNetworkClassifier":
        raise ConfigError(
            "--extra-class-slots needs a neural network classifier (a model with class labels)"
        )
    nn = spec.neuralNetworkClassifier
    labels = nn.WhichOneof("ClassLabels")
    return (len(getattr(nn, labels).vector) if labels else 0) + spare


def run(args: argparse.Namespace) -> int:
    from ..inspection import inspect
    from ..surgery import make_updatable, save_updatable

    if not args.trainable:  # not argparse's required=: the deprecated --layers also fills it
        raise ConfigError(
            "choose the layers to train: --trainable NAME ... (see inspect for the layer names)"
        )
    expand = args.expand_classes
    if args.extra_class_slots is not None:
        if expand is not None:
            raise ConfigError("give --extra-class-slots only (--expand-classes is its old form)")
        expand = total_classes(args.model, args.extra_class_slots)
    changes: list[str] = []
    compression = check_compression(args.compress_frozen, args.val, args.val_layout)
    spec = make_updatable(
        args.model,
        None if compression.compress_frozen else args.output,
        layers=args.trainable,
        loss=args.loss,
        loss_input=args.loss_input,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        beta1=args.beta1,
        beta2=args.beta2,
        eps=args.eps,
        lr_range=args.lr_range,
        batch_size=args.batch_size,
        allowed_batch_sizes=args.allowed_batch_sizes,
        epochs=args.epochs,
        allowed_epochs=args.allowed_epochs,
        shuffle=args.shuffle,
        seed=args.seed,
        expand_classes=expand,
        reinit=args.reinit,
        changes=changes,
    )
    if compression.compress_frozen:
        from ..compression import compress_and_measure
        from ..options import DEFAULT_COMPRESSION_EXAMPLES

        spec, result = compress_and_measure(
            spec,
            compression.compress_frozen,
            val=compression.val,
            layout=compression.val_layout,
            examples=DEFAULT_COMPRESSION_EXAMPLES,
        )
        save_updatable(spec, args.output, args.model)
        if not args.quiet:
            print("\n".join(result.summary_lines()))
    if not args.quiet:
        for change in changes:
            print(f"changed: {change}")
        print(inspect(args.output).text())
    return EXIT_OK
