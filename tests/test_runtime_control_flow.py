"""branch and loop (with loopBreak/loopContinue) run nested networks on the enclosing blobs,
as NeuralNetwork.proto describes (a torch GRU converted by coremltools runs as such a loop:
test_runtime_ct_convert.py)."""

from __future__ import annotations

import numpy as np
import pytest

from updatable_coreml import runtime
from updatable_coreml._proto import Model_pb2
from updatable_coreml.errors import RuntimeLayerError


def spec_with(build) -> Model_pb2.Model:
    spec = Model_pb2.Model(specificationVersion=4)
    spec.description.input.add(name="x").type.multiArrayType.shape.append(1)
    spec.description.output.add(name="y").type.multiArrayType.shape.append(1)
    nn = spec.neuralNetwork
    nn.arrayInputShapeMapping = 1  # EXACT_ARRAY_MAPPING
    build(nn)
    return spec


def constant(network, name: str, value: float) -> None:
    layer = network.layers.add(name=name, output=[name]).loadConstantND
    layer.shape.append(1)
    layer.data.floatValue.append(value)


def add_scalar(network, name: str, source: str, target: str, alpha: float) -> None:
    network.layers.add(name=name, input=[source], output=[target]).add.alpha = alpha


def branch_spec(with_else: bool = True):
    """y = x + 10 if x > 0 else x - 10."""

    def build(nn):
        nn.layers.add(name="positive", input=["x"], output=["cond"]).greaterThan.alpha = 0.0
        branch = nn.layers.add(name="if", input=["cond"]).branch
        add_scalar(branch.ifBranch, "plus", "x", "y", 10.0)
        if with_else:
            add_scalar(branch.elseBranch, "minus", "x", "y", -10.0)

    return spec_with(build)


def test_branch_takes_the_if_or_the_else_network():
    model = runtime.load(branch_spec())
    assert model.predict({"x": np.array([2.0])})["y"].tolist() == [12.0]
    assert model.predict({"x": np.array([-2.0])})["y"].tolist() == [-12.0]
    with pytest.raises(RuntimeLayerError, match="differs between the examples"):
        model.predict({"x": np.array([[2.0], [-2.0]])})
    assert model.predict({"x": np.array([[2.0], [3.0]])})["y"].tolist() == [[12.0], [13.0]]


def test_branch_without_else_leaves_the_output_unmade():
    model = runtime.load(branch_spec(with_else=False))
    with pytest.raises(RuntimeLayerError, match="'y' is not produced"):
        model.predict({"x": np.array([-2.0])})


def loop_spec(kind: str):
    """y starts at x; the body adds 1. ``for``: 5 times; ``while``: while y < 7; ``both``: while
    y < 100 at most 3 times; ``break``: break when y > 3; ``continue``: count steps but add only
    while the counter is below 2 (continue skips the add)."""

    def build(nn):
        nn.layers.add(name="start", input=["x"], output=["y"]).copy.SetInParent()
        loop = nn.layers.add(name="loop").loop
        body = loop.bodyNetwork
        if kind == "for":
            loop.maxLoopIterations = 5
        if kind in ("while", "both"):
            loop.conditionVar = "go"
            constant(loop.conditionNetwork, "limit", 7.0 if kind == "while" else 100.0)
            loop.conditionNetwork.layers.add(
                name="lt", input=["y", "limit"], output=["go"]
            ).lessThan.SetInParent()
            if kind == "both":
                loop.maxLoopIterations = 3
        if kind == "break":
            loop.maxLoopIterations = 50
            add_scalar(body, "step", "y", "y1", 1.0)
            body.layers.add(name="keep", input=["y1"], output=["y"]).copy.SetInParent()
            body.layers.add(name="big", input=["y"], output=["stop"]).greaterThan.alpha = 3.0
            branch = body.layers.add(name="check", input=["stop"]).branch
            branch.ifBranch.layers.add(name="out").loopBreak.SetInParent()
            return
        if kind == "continue":
            loop.maxLoopIterations = 6
            nn.layers.add(name="zero", input=["x"], output=["n"]).multiply.alpha = 0.0
            nn.layers.insert(1, nn.layers.pop())  # before the loop: n = 0
            add_scalar(body, "count", "n", "n1", 1.0)
            body.layers.add(name="keep_n", input=["n1"], output=["n"]).copy.SetInParent()
            body.layers.add(name="late", input=["n"], output=["skip"]).greaterThan.alpha = 2.0
            branch = body.layers.add(name="check", input=["skip"]).branch
            branch.ifBranch.layers.add(name="next").loopContinue.SetInParent()
        add_scalar(body, "step", "y", "y1", 1.0)
        body.layers.add(name="keep", input=["y1"], output=["y"]).copy.SetInParent()

    return spec_with(build)


@pytest.mark.parametrize(
    "kind,want", [("for", 5.0), ("while", 7.0), ("both", 3.0), ("break", 4.0), ("continue", 2.0)]
)
def test_loops(kind, want):
    model = runtime.load(loop_spec(kind))
    assert model.predict({"x": np.array([0.0])})["y"].tolist() == [want]
