"""Every Swift file we generate must at least parse, checked here on Linux.

Core ML does not exist off Apple platforms, so ``swiftc -typecheck`` runs only on the macOS CI
job (tests/test_coreml_macos.py). A broken template or a bad escape should not have to travel
that far: tree-sitter's Swift grammar (the ``tree-sitter-swift`` wheel, pinned in
constraints/dev.txt) parses the golden files and freshly generated trainers, and any ERROR or
MISSING node fails the test with its line and the offending text.

A parse is a syntax check only: it does not resolve names or types.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swift_models import FRESH, regressor_with_names
from updatable_coreml.errors import UpdatableCoreMLError
from updatable_coreml.swift import generate_swift

tree_sitter = pytest.importorskip("tree_sitter")
tree_sitter_swift = pytest.importorskip("tree_sitter_swift")

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def parser():
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language()))


def syntax_errors(parser, source: str) -> list[str]:
    """Each ERROR or MISSING node of ``source`` as 'line N: <type> near <text>' (empty if clean)."""
    data = source.encode()
    tree = parser.parse(data)
    problems: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            text = data[node.start_byte : node.end_byte].decode(errors="replace")[:60]
            kind = f"missing {node.type}" if node.is_missing else "syntax error"
            problems.append(f"line {node.start_point[0] + 1}: {kind} near {text!r}")
        elif node.has_error:
            stack.extend(node.children)
    return sorted(problems)


def assert_parses(parser, source: str, what: str) -> None:
    problems = syntax_errors(parser, source)
    assert not problems, f"{what} is not valid Swift:\n" + "\n".join(problems[:10])


def test_the_parser_finds_errors(parser):
    """The check can fail: a missing brace and a stray token are both reported."""
    assert syntax_errors(parser, "final class A {\n  func f() -> Int { return 1 }\n")
    assert syntax_errors(parser, "let x = (1, \n")
    assert not syntax_errors(parser, "final class A {\n  func f() -> Int { return 1 }\n}\n")


# The golden trainers and the Swift programs the macOS tests compile (tests/macos/).
SWIFT_FILES = sorted(str(p.relative_to(GOLDEN.parent)) for p in GOLDEN.parent.rglob("*.swift"))


def test_the_committed_swift_files_are_found():
    assert len(SWIFT_FILES) >= 4, SWIFT_FILES


@pytest.mark.parametrize("name", SWIFT_FILES)
def test_committed_swift_files_parse(parser, name):
    assert_parses(parser, (GOLDEN.parent / name).read_text(), name)


@pytest.mark.parametrize("case", sorted(FRESH))
def test_freshly_generated_trainers_parse(parser, case):
    assert_parses(parser, generate_swift(FRESH[case](), class_name="FreshTrainer"), case)


# Names a model file may carry. Control characters other than tab/newline/return are left out:
# Core ML's tooling never writes them, and what Core ML does with them is unknown.
_NAME = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x00")
    | st.sampled_from('\n\t\r"\\'),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(input_name=_NAME, output_name=_NAME)
def test_any_feature_names_give_valid_swift(parser, input_name, output_name):
    """Feature names reach string literals, identifiers and doc comments: all must stay valid."""
    if input_name == output_name:
        output_name += "_out"
    try:
        spec = regressor_with_names(input_name, output_name, "fc")
    except UpdatableCoreMLError:
        return  # a typed refusal of the name is a clear answer, not a syntax problem
    assert_parses(
        parser,
        generate_swift(spec, class_name="T"),
        f"trainer for input {input_name!r}, output {output_name!r}",
    )


def test_typical_names_are_accepted():
    """Guard for the property above: ordinary names must not all be refused."""
    spec = regressor_with_names("input.1", "y", "fc")
    assert "input.1" in generate_swift(spec, class_name="T")
