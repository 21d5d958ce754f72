"""Progress on long work, on a terminal only: the stage of an export (framework import and
conversion can take 20 s and print nothing), and mini-batches and epochs of a simulation.

Shown on stderr with rich (its own thread animates the spinner and the elapsed time while a
framework call blocks), and only when stderr is a terminal and ``--quiet`` was not given: a
pipeline's logs and the tests see nothing but the command's own output.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


def wanted(quiet: bool = False) -> bool:
    """Progress is for a person watching a terminal."""
    if quiet:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Stages:
    """A spinner naming the current stage of a blocking job (``None``: show nothing)."""

    def __init__(self, progress: Any = None) -> None:
        self._progress = progress
        self._task = progress.add_task("starting", total=None) if progress is not None else None

    def stage(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)


@contextlib.contextmanager
def stages(quiet: bool = False) -> Iterator[Stages]:
    if not wanted(quiet):
        yield Stages()
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    # The console keeps the real stderr: export silences framework noise by redirecting
    # sys.stderr while it runs, which must not swallow the spinner.
    console = Console(file=sys.stderr)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as progress:
        yield Stages(progress)


class Training:
    """A bar over epochs that moves at every mini-batch: ``on_event`` takes the runtime's
    progress events (training_begin, mini_batch_end, epoch_end); ``print`` writes a table row
    above the bar."""

    def __init__(self, progress: Any = None) -> None:
        self._progress = progress
        self._task: int | None = None

    def on_event(self, event: Any) -> None:
        if self._progress is None:
            return
        if event.kind == "training_begin":
            epochs = event.parameters.get("epochs")
            self._task = self._progress.add_task("training", total=epochs)
        elif self._task is None:
            return
        elif event.kind == "mini_batch_end":
            self._progress.update(
                self._task,
                description=f"epoch {event.epoch + 1}, mini-batch {event.mini_batch + 1}",
            )
        elif event.kind == "epoch_end":
            self._progress.advance(self._task)

    def print(self, line: str) -> None:
        """A row of the table: on stdout; through the bar's console when stdout is the same
        terminal (so the row lands above the bar instead of through it)."""
        if self._progress is not None and sys.stdout.isatty():
            self._progress.console.print(line, highlight=False, markup=False, soft_wrap=True)
        else:
            print(line, flush=True)


@contextlib.contextmanager
def training(quiet: bool = False) -> Iterator[Training]:
    if not wanted(quiet):
        yield Training()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as progress:
        yield Training(progress)
