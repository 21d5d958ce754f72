"""``custom`` layers: refused naming the layer and its class, run through a registered Python
implementation (the runtime's hook for app code the file cannot hold)."""

from __future__ import annotations

import numpy as np
import pytest
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder

from updatable_coreml._proto import NeuralNetwork_pb2 as nn_pb
from updatable_coreml.errors import RuntimeLayerError
from updatable_coreml.runtime import load, register_custom_layer
from updatable_coreml.runtime.registry import CUSTOM_LAYERS

CLASS = "TestScaledSwish"


@pytest.fixture(autouse=True)
def no_registration_left():
    yield
    CUSTOM_LAYERS.pop(CLASS, None)


def model_with_custom_layer(outputs=("y",)):
    """x -> custom(TestScaledSwish, weights [scale], parameters beta, mode) -> y."""
    b = NeuralNetworkBuilder(
        [("x", datatypes.Array(3))],
        [(name, None) for name in outputs],
        disable_rank5_shape_mapping=True,
    )
    params = nn_pb.CustomLayerParams(className=CLASS, description="scale * swish(beta x)")
    params.weights.add().floatValue.extend([2.0, 0.5, -1.0])
    params.parameters["beta"].doubleValue = 1.5
    params.parameters["mode"].stringValue = "swish"
    params.parameters["flag"].boolValue = True
    b.add_custom("my_custom", ["x"], list(outputs), params)
    return b.spec


def test_an_unregistered_class_is_refused_naming_the_layer_and_the_class():
    model = load(model_with_custom_layer())
    with pytest.raises(
        RuntimeLayerError, match=r"'my_custom' \(custom\).*'TestScaledSwish'.*register_custom_layer"
    ):
        model.predict({"x": np.ones(3, dtype=np.float32)})


def test_a_registered_implementation_runs_with_weights_and_parameters():
    seen = {}

    @register_custom_layer(CLASS)
    def scaled_swish(inputs, weights, parameters):
        seen.update(parameters)
        (x,) = inputs
        (scale,) = weights
        beta = parameters["beta"]
        return [scale * x / (1 + np.exp(-beta * x))]

    model = load(model_with_custom_layer())
    x = np.asarray([[0.5, -2.0, 3.0], [1.0, 0.0, -0.25]], dtype=np.float32)
    got = model.predict({"x": x})["y"]
    want = np.asarray([2.0, 0.5, -1.0]) * x / (1 + np.exp(-1.5 * x))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert seen == {"beta": 1.5, "mode": "swish", "flag": True}


def test_a_class_registered_twice_is_a_bug():
    register_custom_layer(CLASS)(lambda inputs, weights, parameters: inputs)
    with pytest.raises(ValueError, match="registered twice"):
        register_custom_layer(CLASS)(lambda inputs, weights, parameters: inputs)


def test_a_failing_implementation_becomes_a_typed_error_naming_the_layer():
    @register_custom_layer(CLASS)
    def broken(inputs, weights, parameters):
        raise ZeroDivisionError("oops")

    model = load(model_with_custom_layer())
    with pytest.raises(RuntimeLayerError, match="'my_custom'.*failed: oops"):
        model.predict({"x": np.ones(3, dtype=np.float32)})


def test_an_implementation_must_return_one_array_per_output():
    register_custom_layer(CLASS)(lambda inputs, weights, parameters: [inputs[0], inputs[0]])
    model = load(model_with_custom_layer())
    with pytest.raises(
        RuntimeLayerError, match="'my_custom'.*returned 2 outputs for the layer's 1"
    ):
        model.predict({"x": np.ones(3, dtype=np.float32)})
