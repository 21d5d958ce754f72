"""``updatable-coreml plan MODEL --data DATA [--users COLUMN | --users-dir DIR] -o plan/``:
choose the on-device training setup from data. Argument parsing only (like every subcommand's
module in ``cli/``); the work is ``updatable_coreml.plan.plan``, which imports nothing heavy
until it runs."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from .common import EXIT_OK


def _numbers(kind: type, flag: str):
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag}: expected a comma list of {kind.__name__}s, got {text!r}"
            ) from None
        return values

    return parse


def _words(text: str) -> list:
    return [v.strip() for v in text.split(",") if v.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="choose the on-device training setup from data (simulated users)",
        description="Split labelled data into simulated users, train every candidate setup "
        "(network head grid, updatable k-NN, the model's own defaults) for every user with the "
        "reference runtime, and write a table, plots and a recommendation; --write saves the "
        "model with the chosen defaults and allowed ranges.",
    )
    p.add_argument("model", help="an updatable NeuralNetwork classifier .mlmodel")
    p.add_argument(
        "--data",
        metavar="DATA",
        help="an .npz with x, y and a user column, or a CSV with a user column, a label "
        "column and feature columns or a column of image paths (relative to the CSV)",
    )
    p.add_argument(
        "--users",
        default="user",
        metavar="COLUMN",
        help="the user column of the .npz or CSV (default: user)",
    )
    p.add_argument(
        "--label",
        default="label",
        metavar="COLUMN",
        help="the label column of a CSV (default: label; an .npz's labels are its y)",
    )
    p.add_argument(
        "--image-column",
        default="image",
        metavar="COLUMN",
        help="a CSV's column of image paths, for a model with an image input (default: image)",
    )
    p.add_argument(
        "--features",
        type=_words,
        metavar="COL,COL,...",
        help="a CSV's feature columns, in the model's input order (default: every column "
        "but the user and label columns)",
    )
    p.add_argument(
        "--users-dir",
        metavar="DIR",
        help="one folder per user, each with one subfolder of images per label",
    )
    p.add_argument(
        "--shared",
        metavar="DATA",
        help="an .npz (x, y) or CSV (same columns, no user column) nobody teaches, to measure "
        "forgetting (default: --shared-fraction of the data)",
    )
    p.add_argument(
        "--shared-fraction",
        type=float,
        default=0.2,
        help="share of the data kept as the shared set when --shared is not given (default 0.2)",
    )
    p.add_argument("-o", "--output", default="plan", metavar="DIR", help="folder for the results")
    p.add_argument(
        "--shots",
        type=_numbers(int, "--shots"),
        default=[1, 2, 5],
        metavar="N,N,...",
        help="examples per class a user gives (default 1,2,5)",
    )
    p.add_argument(
        "--lr",
        type=_numbers(float, "--lr"),
        metavar="X,X,...",
        help="learning rates to try (default 0.003,0.01,0.03,0.1)",
    )
    p.add_argument(
        "--epochs",
        type=_numbers(int, "--epochs"),
        metavar="N,N,...",
        help="epochs to try (default 5,10,20)",
    )
    p.add_argument(
        "--batch-size",
        type=_numbers(int, "--batch-size"),
        metavar="N,N,...",
        help="mini-batch sizes to try (default 4,8)",
    )
    p.add_argument(
        "--trainable",
        type=_words,
        metavar="all,last",
        help="which updatable layers train: all of them, only the last (default both)",
    )
    p.add_argument(
        "--k",
        type=_numbers(int, "--k"),
        metavar="N,N,...",
        help="k-NN neighbour counts to try (default 1,3,5; empty: no k-NN)",
    )
    p.add_argument(
        "--weighting",
        type=_words,
        metavar="uniform,inverse_distance",
        help="k-NN vote weightings to try",
    )
    p.add_argument(
        "--replay",
        type=_numbers(int, "--replay"),
        metavar="N,N,...",
        help="stored examples of the known classes mixed into every update, to try against "
        "forgetting (taken out of the shared set; default 0: none)",
    )
    p.add_argument(
        "--search",
        choices=("grid", "optuna"),
        default="grid",
        help="grid: every combination of the lists above (default); optuna: --trials "
        "candidates chosen by Optuna's TPE sampler within their bounds (learning rate "
        "log-uniform between the smallest and largest --lr), seeded by --seed",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=30,
        metavar="N",
        help="candidates Optuna tries with --search optuna (default 30)",
    )
    p.add_argument(
        "--assumptions",
        default="default",
        metavar="PRESET",
        help="the runtime's Core ML assumptions preset (default: the runtime's default, "
        "espresso); 'all' also plans under every other preset and says whether the "
        "recommendation changes",
    )
    p.add_argument(
        "--max-forgetting",
        type=float,
        metavar="X",
        help="exclude candidates that lose more than X accuracy on the classes users did not teach",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the shared split and of every user's draws (default 0)",
    )
    p.add_argument("-j", "--jobs", type=int, default=-1, help="parallel jobs (default all cores)")
    p.add_argument("--backend", help="a joblib backend (loky, threading, dask, ray...)")
    p.add_argument(
        "--no-plots",
        dest="plots",
        action="store_false",
        help="skip the plot (no matplotlib needed)",
    )
    p.add_argument(
        "--write",
        metavar="MODEL_OUT",
        help="write the model with the recommended defaults and allowed ranges (validated)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show joblib's progress on stderr")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..plan import Grid, plan

    if args.data is None and args.users_dir is None:
        raise ConfigError(
            "plan needs --data DATA.npz or DATA.csv (with --users COLUMN) or --users-dir DIR"
        )
    if args.data is not None and args.users_dir is not None:
        raise ConfigError("give --data or --users-dir, not both")
    grid = Grid(
        **{
            name: tuple(value)
            for name, value in (
                ("lrs", args.lr),
                ("epochs", args.epochs),
                ("batches", args.batch_size),
                ("trainable", args.trainable),
                ("ks", args.k),
                ("weightings", args.weighting),
                ("replays", args.replay),
            )
            if value is not None
        }
    )
    result = plan(
        args.model,
        args.data,
        users=args.users,
        label=args.label,
        image_column=args.image_column,
        features=args.features,
        users_dir=args.users_dir,
        output=args.output,
        shots=args.shots,
        grid=grid,
        shared=args.shared,
        shared_fraction=args.shared_fraction,
        seed=args.seed,
        assumptions=args.assumptions,
        n_jobs=args.jobs,
        backend=args.backend,
        plots=args.plots,
        write=args.write,
        max_forgetting=args.max_forgetting,
        verbose=10 if args.verbose else 0,
        search=args.search,
        trials=args.trials,
    )
    print(result.summary())
    return EXIT_OK
