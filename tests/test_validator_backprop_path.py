"""One model per layer type between an updatable layer and the loss, with Apple's verdict.

Apple's released backprop list (``isLayerSupportedForBackprop`` in
``mlmodel/src/Validation/NeuralNetwork/NeuralNetworkValidatorGraph.hpp``, identical in every
release tag 3.0 to 9.0 except that ``uniDirectionalLSTM`` joined in 5.0b1) is written out
here by hand, apart from ``coreml_rules``, so that a change to the rules table shows up as a
disagreement with Apple rather than passing silently.
"""

from __future__ import annotations

import pytest

from test_validator_apple import add_cce, add_sgd_setup, add_softmax, basic_updatable
from updatable_coreml import coreml_rules
from updatable_coreml._proto import Model_pb2, NeuralNetwork_pb2
from updatable_coreml.validator import validate

#: Apple, 9.0: case kConvolution, kInnerProduct, kUniDirectionalLSTM, kFlatten, kPooling,
#: kBatchnorm -> true; kActivation -> ReLU, sigmoid, tanh only; everything else false.
APPLE_BACKPROP = {
    "convolution",
    "innerProduct",
    "uniDirectionalLSTM",
    "flatten",
    "pooling",
    "batchnorm",
}
APPLE_ACTIVATIONS = {"ReLU", "sigmoid", "tanh"}


def _oneof(message, name: str) -> list[str]:
    return sorted(f.name for f in message.DESCRIPTOR.oneofs_by_name[name].fields)


LAYER_TYPES = _oneof(NeuralNetwork_pb2.NeuralNetworkLayer, "layer")
ACTIVATIONS = _oneof(NeuralNetwork_pb2.ActivationParams, "NonlinearityType")


def test_rules_table_is_apples_released_list():
    assert set(coreml_rules.BACKPROP_LAYER_TYPES) == APPLE_BACKPROP | {"activation"}
    assert set(coreml_rules.BACKPROP_ACTIVATIONS) == APPLE_ACTIVATIONS
    assert coreml_rules.BACKPROP_LAYER_TYPES["uniDirectionalLSTM"] == "5.0b1"


def _model_with(kind: str, activation: str | None = None):
    """A (updatable innerProduct) -> B -> [kind] -> mid -> softmax -> CCE."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    layer = nn.layers.add()
    layer.name = "mid"
    layer.input.append("B")
    layer.output.append("mid_out")
    getattr(layer, kind).SetInParent()
    if activation is not None:
        getattr(layer.activation, activation).SetInParent()
    add_softmax(nn, "softmax", "mid_out", "softmax_out")
    add_cce(spec, nn, "loss", "softmax_out", "label")
    add_sgd_setup(nn)
    return spec


def _blocked(spec) -> bool:
    return any(f.code == "BACKPROP_BLOCKED" and f.layer == "mid" for f in validate(spec))


@pytest.mark.parametrize("kind", [k for k in LAYER_TYPES if k != "activation"])
def test_layer_type_on_the_path(kind):
    assert _blocked(_model_with(kind)) is (kind not in APPLE_BACKPROP)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_on_the_path(activation):
    assert _blocked(_model_with("activation", activation)) is (activation not in APPLE_ACTIVATIONS)


def test_every_layer_type_is_covered():
    assert len(LAYER_TYPES) == 158 and len(ACTIVATIONS) == 13
