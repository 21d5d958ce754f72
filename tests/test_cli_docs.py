"""The CLI as the docs show it: every ``updatable-coreml ...`` command line in README.md and
docs/*.md names a real subcommand and real, current (not deprecated) options."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from updatable_coreml.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _options() -> dict[str, dict[str, argparse.Action]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: {flag: action for action in command._actions for flag in action.option_strings}
        for name, command in sub.choices.items()
    }


def command_lines() -> list[tuple[str, str]]:
    """(page, command) for every command line in the pages' text and code blocks, with
    continuation lines joined."""
    found = []
    for page in PAGES:
        text = re.sub(r"\\\n\s*", " ", page.read_text(encoding="utf-8"))
        for match in re.finditer(
            r"updatable-coreml ((?:inspect|validate|make-updatable|export|"
            r"simulate|swift|demo)(?=[\s`])[^`\n#']*)",
            text,
        ):
            found.append((page.name, match.group(1).strip()))
    return found


def test_the_docs_show_commands():
    assert len(command_lines()) >= 15


@pytest.mark.parametrize("page, command", command_lines())
def test_documented_options_exist_and_are_current(page, command):
    options = _options()
    words = shlex.split(command.replace("...", ""))
    known = options[words[0]]
    for word in words[1:]:
        flag = word.split("=", 1)[0]
        if not flag.startswith("-") or flag in ("-", "--"):
            continue
        assert flag in known, f"{page}: {command!r} uses {flag}, which {words[0]} does not take"
        assert known[flag].help != argparse.SUPPRESS, f"{page}: {flag} is a deprecated spelling"


def test_example_shapes_are_one_example_without_the_batch_dimension():
    shapes = [
        m.group(1)
        for page in PAGES
        for m in re.finditer(r"--example-shape (\S+?)`?\s", page.read_text(encoding="utf-8"))
    ]
    assert shapes
    for shape in shapes:
        dims = shape.strip("`").split(",")
        assert not (len(dims) == 4 and dims[0] == "1"), (
            f"--example-shape {shape} has a batch dimension"
        )


def test_option_tables_have_no_escaped_pipes_in_code():
    """Inside a code span the table extension keeps a backslash literally (`cce\\|mse`);
    outside one, ``\\|`` is the right escape."""
    for page in PAGES:
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("|"):
                for span in re.findall(r"`[^`]*`", line):
                    assert "\\|" not in span, f"{page.name}: {span}"


def test_few_shot_advice_states_the_measurements():
    """The docs once called k-NN the better few-shot choice while the example and the demo
    measured the network head ahead at 1 and 10 shots: the advice must carry the numbers."""
    limits = (ROOT / "docs" / "limits.md").read_text(encoding="utf-8")
    pipelines = (ROOT / "docs" / "pipelines.md").read_text(encoding="utf-8")
    assert "often the better choice" not in limits
    assert "(pipelines.md) has the numbers" in limits and "knn_personalization.py" in pipelines
    for shots in ("| 1 |", "| 2 |", "| 5 |", "| 10 |"):
        assert shots in pipelines
