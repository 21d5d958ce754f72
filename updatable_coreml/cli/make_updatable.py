"""``updatable-coreml make-updatable MODEL -o OUT --layers ...``: an existing NeuralNetwork
``.mlmodel`` made updatable by surgery (no source framework needed)."""

from __future__ import annotations

import argparse

from .common import EXIT_OK, flag, float_pair, int_list


def add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loss", choices=("cce", "mse"), default="cce")
    p.add_argument("--loss-input", metavar="BLOB", help="blob the loss reads (default: the softmax "
                   "output for cce, the single model output for mse)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--lr", type=float, help="learning rate (default 0.01 sgd, 0.001 adam)")
    p.add_argument("--momentum", type=float)
    p.add_argument("--beta1", type=float)
    p.add_argument("--beta2", type=float)
    p.add_argument("--eps", type=float)
    p.add_argument("--lr-range", type=flag(float_pair, "--lr-range"), metavar="MIN,MAX")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--allowed-batch-sizes", type=flag(int_list, "--allowed-batch-sizes"), metavar="N,N,...")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--allowed-epochs", type=flag(int_list, "--allowed-epochs"), metavar="N,N,...")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-updatable", help="make an existing NeuralNetwork .mlmodel updatable")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--layers", nargs="+", required=True, metavar="NAME")
    add_training_options(p)
    p.add_argument("--expand-classes", type=int, metavar="N",
                   help="grow the classifier to N classes with placeholder labels user0, user1, ...")
    p.add_argument("--reinit", action="store_true", help="re-initialize the chosen layers (seeded)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..inspection import inspect
    from ..surgery import make_updatable

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
