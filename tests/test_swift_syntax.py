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

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import mlp_regressor, squeezenet_like
from updatable_coreml.errors import UpdatableCoreMLError
from updatable_coreml.surgery import make_updatable
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


@pytest.mark.parametrize("golden", sorted(p.name for p in GOLDEN.glob("*.swift")))
def test_golden_files_parse(parser, golden):
    assert_parses(parser, (GOLDEN / golden).read_text(), golden)


def _regressor_with_names(input_name: str, output_name: str, layer_name: str):
    """One updatable innerProduct regressor whose features and layer carry the given names."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(0)
    builder = NeuralNetworkBuilder(
        [(input_name, datatypes.Array(3))], [(output_name, datatypes.Array(2))], mode="regressor"
    )
    builder.add_inner_product(
        layer_name,
        rng.normal(0, 0.5, (2, 3)).astype(np.float32),
        np.zeros(2, np.float32),
        3,
        2,
        True,
        input_name,
        output_name,
    )
    return make_updatable(builder.spec, layers=[layer_name], loss="mse", batch_size=2, epochs=2)


FRESH = {
    "cce-sgd-conv": lambda: make_updatable(
        squeezenet_like(),
        layers=["fc"],
        loss="cce",
        lr=0.05,
        momentum=0.9,
        batch_size=4,
        epochs=3,
        allowed_epochs=[1, 3, 5],
        seed=7,
    ),
    "mse-adam-ranges": lambda: make_updatable(
        mlp_regressor(),
        layers=["hidden", "out"],
        loss="mse",
        optimizer="adam",
        lr=0.001,
        lr_range=(1e-5, 0.1),
        batch_size=4,
        allowed_batch_sizes=[1, 4, 16],
        epochs=2,
        shuffle=False,
    ),
    "keyword-names": lambda: _regressor_with_names("class", "default", "self"),
    "escapes-in-names": lambda: _regressor_with_names('in "put"\\1', "out\tput\n", "fc"),
}


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
        spec = _regressor_with_names(input_name, output_name, "fc")
    except UpdatableCoreMLError:
        return  # a typed refusal of the name is a clear answer, not a syntax problem
    assert_parses(
        parser,
        generate_swift(spec, class_name="T"),
        f"trainer for input {input_name!r}, output {output_name!r}",
    )


def test_typical_names_are_accepted():
    """Guard for the property above: ordinary names must not all be refused."""
    spec = _regressor_with_names("input.1", "y", "fc")
    assert "input.1" in generate_swift(spec, class_name="T")
