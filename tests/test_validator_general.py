"""Core ML's general model rules: cases ported from Apple's ``mlmodel/tests/NNValidatorTests.cpp``
and ``InterfaceTests.cpp`` (apple/coremltools, release 9.0; the rules hold from 3.0 on).

Apple's NN tests call the model-type validator directly (``validate<MLModelType_...>``),
without the generic interface checks; ``type_findings`` is our counterpart. Cases that pass
through ``Model::validate`` use ``validate``. Each test names the Apple test it rebuilds.
Apple's BAD verdict may come from a rule we do not port (weight sizes of an innerProduct
without weights); we require our verdict and name the rule we fire.
"""

from __future__ import annotations

import pytest

from updatable_coreml._proto import FeatureTypes_pb2, Model_pb2
from updatable_coreml.validator import CODES, is_valid, validate
from updatable_coreml.validator.general import type_findings
from updatable_coreml.validator.layers import LAYER_IO_COUNTS

F32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
EXACT = 1  # NeuralNetworkMultiArrayShapeMapping.EXACT_ARRAY_MAPPING


def _show(findings) -> str:
    return "\n".join(str(f) for f in findings) or "(no findings)"


def assert_good(findings) -> None:
    assert is_valid(findings), "Apple says GOOD, we say:\n" + _show(findings)


def assert_bad(findings, code: str) -> None:
    errors = {f.code for f in findings if f.severity == "error"}
    assert code in errors, f"Apple says BAD; expected {code}, we say:\n" + _show(findings)


def array(container, name: str, shape=(), dtype=None):
    feature = container.add()
    feature.name = name
    feature.type.multiArrayType.shape.extend(shape)
    if dtype is not None:
        feature.type.multiArrayType.dataType = dtype
    return feature


def layer(nn, name: str, inputs, outputs, kind: str):
    added = nn.layers.add()
    added.name = name
    added.input.extend(inputs)
    added.output.extend(outputs)
    getattr(added, kind).SetInParent()
    return added


def dense(nn, name: str, src: str, dst: str, weights: bool = True):
    added = layer(nn, name, [src], [dst], "innerProduct")
    if weights:
        added.innerProduct.inputChannels = added.innerProduct.outputChannels = 1
        added.innerProduct.weights.floatValue.append(1.0)
    return added


def chain(
    inputs=("A",),
    output: str = "D",
    layers=(("ip1", "A", "B"), ("ip2", "B", "C"), ("ip3", "C", "D")),
):
    spec = Model_pb2.Model()
    for name in inputs:
        array(spec.description.input, name, [1])
    array(spec.description.output, output)
    for name, src, dst in layers:
        dense(spec.neuralNetwork, name, src, dst, weights=False)
    return spec


def test_nn_validator_simple():
    """testNNValidatorSimple"""
    spec = Model_pb2.Model()
    array(spec.description.input, "input", [1])
    array(spec.description.output, "output", [1])
    dense(spec.neuralNetwork, "ip", "input", "output")
    assert_good(type_findings(spec))


def test_nn_validator_bad_input():
    """testNNValidatorBadInput: a MultiArray input without shape (rank-5 semantics)."""
    spec = Model_pb2.Model()
    array(spec.description.input, "input")
    array(spec.description.output, "output")
    dense(spec.neuralNetwork, "ip", "input", "output", weights=False)
    assert_bad(type_findings(spec), "MODEL_INTERFACE")


def test_nn_validator_bad_input2():
    """testNNValidatorBadInput2: a rank-2 input under rank-5 semantics."""
    spec = Model_pb2.Model()
    array(spec.description.input, "input", [1, 2])
    array(spec.description.output, "output")
    dense(spec.neuralNetwork, "ip", "input", "output", weights=False)
    assert_bad(type_findings(spec), "MODEL_INTERFACE")


def test_nn_validator_bad_output():
    """testNNValidatorBadOutput: the declared output is produced by no layer."""
    spec = Model_pb2.Model()
    array(spec.description.input, "input", [1])
    array(spec.description.output, "bad_name")
    dense(spec.neuralNetwork, "ip", "input", "output")
    assert_bad(type_findings(spec), "OUTPUT_NOT_PRODUCED")


def test_nn_validator_bad_output2():
    """testNNValidatorBadOutput2: an output without a type (MODEL_OUTPUT_TYPE_INVALID)."""
    spec = Model_pb2.Model()
    array(spec.description.input, "input", [1])
    spec.description.output.add().name = "output"
    dense(spec.neuralNetwork, "ip", "input", "output")
    assert_bad(type_findings(spec), "MODEL_INTERFACE")


def test_nn_validator_all_optional():
    """testNNValidatorAllOptional: every input optional."""
    spec = Model_pb2.Model()
    feature = array(spec.description.input, "A", [1])
    feature.type.isOptional = True
    array(spec.description.output, "B")
    dense(spec.neuralNetwork, "ip", "A", "B")
    assert_bad(type_findings(spec), "MODEL_INTERFACE")


def test_nn_validator_missing_input():
    """testNNValidatorMissingInput: the first layer reads 'A', the model input is 'E'."""
    assert_bad(
        type_findings(
            chain(inputs=("E",)),
        ),
        "BLOB_NOT_PRODUCED",
    )


def test_nn_validator_missing_output():
    """testNNValidatorMissingOutput: output 'E' is produced by no layer."""
    assert_bad(type_findings(chain(output="E")), "OUTPUT_NOT_PRODUCED")


def test_nn_validator_loop():
    """testNNValidatorLoop: the last layer writes the model input 'A' again."""
    spec = chain(output="B", layers=(("ip1", "A", "B"), ("ip2", "B", "C"), ("ip3", "C", "A")))
    assert_bad(type_findings(spec), "BLOB_PRODUCED_TWICE")


def test_nn_validator_bad_inputs():
    """testNNValidatorBadInputs: no input description at all."""
    spec = Model_pb2.Model()
    layer(spec.neuralNetwork, "ip", [], [], "innerProduct")
    assert_bad(type_findings(spec), "MODEL_INTERFACE")


def test_nn_missing_layer():
    """testNNMissingLayer: a network without layers."""
    spec = Model_pb2.Model()
    array(spec.description.input, "A", [1])
    array(spec.description.output, "B")
    spec.neuralNetwork.SetInParent()
    assert_bad(type_findings(spec), "NO_LAYERS")


def _classifier(probability_blob: str):
    spec = Model_pb2.Model()
    array(spec.description.input, "input", [1], F32)
    array(spec.description.output, "middle", [1], F32)
    label = spec.description.output.add()
    label.name = "features"
    label.type.stringType.SetInParent()
    probs = spec.description.output.add()
    probs.name = "probs"
    probs.type.dictionaryType.stringKeyType.SetInParent()
    spec.description.predictedFeatureName = "features"
    spec.description.predictedProbabilitiesName = "probs"
    nn = spec.neuralNetworkClassifier
    nn.stringClassLabels.vector.append("label1")
    nn.labelProbabilityLayerName = probability_blob
    dense(nn, "ip1", "input", "middle")
    dense(nn, "ip2", "middle", "output")
    return spec


def test_nn_compiler_validation_good_prob_blob():
    """testNNCompilerValidationGoodProbBlob"""
    assert_good(type_findings(_classifier("output")))


def test_nn_compiler_validation_bad_prob_blob():
    """testNNCompilerValidationBadProbBlob: labelProbabilityLayerName names no blob."""
    assert_bad(type_findings(_classifier("not_here")), "OUTPUT_NOT_PRODUCED")


def _softmax(shape, input_rank=None):
    spec = Model_pb2.Model()
    array(spec.description.input, "input", shape)
    array(spec.description.output, "probs")
    spec.neuralNetwork.arrayInputShapeMapping = EXACT
    added = layer(spec.neuralNetwork, "softmax", ["input"], ["probs"], "softmax")
    if input_rank is not None:
        added.inputTensor.add().rank = input_rank
    return spec


def test_valid_softmax():
    """testValidSoftmax: rank 3 under exact mapping."""
    assert_good(type_findings(_softmax([5, 5, 5], 3)))


def test_invalid_softmax():
    """testInvalidSoftmax: a rank-2 input (annotated)."""
    assert_bad(type_findings(_softmax([5, 5], 2)), "LAYER_RANK")


def test_invalid_softmax2():
    """testInvalidSoftmax2: a rank-2 input known from the description alone."""
    assert_bad(type_findings(_softmax([5, 5])), "LAYER_RANK")


def test_invalid_rank():
    """testInvalidRank: the annotation (2) contradicts the description (rank 3)."""
    assert_bad(type_findings(_softmax([5, 5, 5], 2)), "LAYER_RANK")


def test_invalid_copy():
    """testInvalidCopy: a copy of A onto A is allowed as a rewrite, but the declared output B
    is produced by nothing."""
    spec = Model_pb2.Model()
    array(spec.description.input, "A", [1])
    array(spec.description.output, "B")
    spec.neuralNetwork.arrayInputShapeMapping = EXACT
    layer(spec.neuralNetwork, "copy", ["A"], ["A"], "copy")
    assert_bad(type_findings(spec), "OUTPUT_NOT_PRODUCED")


def test_invalid_rank_inconsistency():
    """testInvalidRankInconsistency: B annotated rank 1 as an output, rank 2 as an input."""
    spec = Model_pb2.Model()
    array(spec.description.input, "A", [1])
    array(spec.description.output, "C")
    nn = spec.neuralNetwork
    nn.arrayInputShapeMapping = EXACT
    relu1 = layer(nn, "relu1", ["A"], ["B"], "activation")
    relu1.activation.ReLU.SetInParent()
    relu1.outputTensor.add().rank = 1
    relu2 = layer(nn, "relu2", ["B"], ["C"], "activation")
    relu2.activation.ReLU.SetInParent()
    relu2.inputTensor.add().rank = 2
    assert_bad(type_findings(spec), "LAYER_RANK")


def test_invalid_pooling_rank1():
    """testInvalidPoolingRank1: a rank-3 input to pooling (needs 4 or more)."""
    spec = Model_pb2.Model()
    array(spec.description.input, "A", [2, 1, 1])
    array(spec.description.output, "B")
    spec.neuralNetwork.arrayInputShapeMapping = EXACT
    pool = layer(spec.neuralNetwork, "pool_layer", ["A"], ["B"], "pooling")
    pool.inputTensor.add().rank = 3
    pool.pooling.globalPooling = True
    pool.pooling.valid.SetInParent()
    assert_bad(type_findings(spec), "LAYER_RANK")


def test_invalid_ios13_layer_old_rank():
    """testInvalidIOS13LayerOldRank: an iOS 13 layer (erf) under the rank-5 array mapping."""
    spec = Model_pb2.Model()
    array(spec.description.input, "A", [1, 2, 1, 1])
    array(spec.description.output, "B")
    layer(spec.neuralNetwork, "erf", ["A"], ["B"], "erf")
    assert_bad(type_findings(spec), "SHAPE_MAPPING")


def test_invalid_global_pooling3d_wrong_number_of_inputs():
    """testInvalidGlobalPooling3dWrongNumberOfInputs: two inputs to a one-input layer."""
    spec = Model_pb2.Model()
    for name in ("input", "input 2"):
        array(spec.description.input, name, [10, 11, 12, 13, 14])
    array(spec.description.output, "probs")
    spec.neuralNetwork.arrayInputShapeMapping = EXACT
    layer(spec.neuralNetwork, "gp", ["input", "input 2"], ["probs"], "globalPooling3d")
    assert_bad(type_findings(spec), "LAYER_IO_COUNT")


def test_single_input_concat_is_refused():
    """Core ML: '... has 1 inputs but expects at least 2' (validateConcatLayer), the torch
    DenseNet export of issue 14."""
    spec = chain(layers=(("ip1", "A", "B"),), output="C")
    layer(spec.neuralNetwork, "cat", ["B"], ["C"], "concat")
    findings = type_findings(spec)
    assert_bad(findings, "LAYER_IO_COUNT")
    assert "expects at least 2" in next(f.message for f in findings if f.code == "LAYER_IO_COUNT")


def test_blob_written_by_a_layer_and_the_input():
    """Core ML: "Layer 'input' produces an output named 'input' which is also an output
    produced by the layer '__input'" (issue 14, pipelines with a coremltools backbone)."""
    spec = chain(layers=(("input", "A", "A"),), output="A")
    assert_bad(type_findings(spec), "BLOB_PRODUCED_TWICE")


# -- InterfaceTests.cpp and the regressor/classifier interfaces -------------------------------


def _updatable_regressor(predicted: str):
    spec = Model_pb2.Model()
    spec.specificationVersion = 4
    array(spec.description.input, "A", [1], F32)
    array(spec.description.output, "B", [1], F32)
    if predicted:
        spec.description.predictedFeatureName = predicted
    dense(spec.neuralNetworkRegressor, "ip", "A", "B")
    return spec


def test_regressor_needs_predicted_feature_name():
    """validateRegressorInterface: 'Specification is missing regressor predictedFeatureName.'
    (issue 14: every regressor export lacked it)."""
    assert_bad(validate(_updatable_regressor("")), "REGRESSOR_PREDICTED_FEATURE")
    assert_bad(validate(_updatable_regressor("nope")), "REGRESSOR_PREDICTED_FEATURE")
    assert [f.code for f in validate(_updatable_regressor("B"))] == ["NOT_UPDATABLE"]


def test_spec_version_missing():
    """Model::validateGeneric: 'Model specification version field missing or corrupt.'"""
    spec = _updatable_regressor("B")
    spec.specificationVersion = 0
    assert_bad(validate(spec), "MODEL_INTERFACE")


@pytest.mark.parametrize("dims,good", [([1], True), ([-1], False)])
def test_negative_dimension(dims, good):
    """validateFeatureDescription: 'has an invalid shape. Element 0 has non-positive value'."""
    spec = _updatable_regressor("B")
    spec.description.input[0].type.multiArrayType.shape[:] = dims
    findings = validate(spec)
    assert ("MODEL_INTERFACE" not in {f.code for f in findings}) is good


def test_image_needs_a_size_and_color_space():
    """validateFeatureDescription: image width/height positive, a valid color space."""
    spec = _updatable_regressor("B")
    image = spec.description.input.add()
    image.name = "img"
    image.type.imageType.colorSpace = image.type.imageType.RGB
    assert_bad(validate(spec), "MODEL_INTERFACE")
    image.type.imageType.width = image.type.imageType.height = 8
    assert "MODEL_INTERFACE" not in {f.code for f in validate(spec)}


def test_every_layer_type_has_counts():
    """The table covers every layer type of NeuralNetwork.proto."""
    from updatable_coreml._proto import NeuralNetwork_pb2

    layer_types = {
        f.name
        for f in NeuralNetwork_pb2.NeuralNetworkLayer.DESCRIPTOR.oneofs_by_name["layer"].fields
    }
    assert layer_types == set(LAYER_IO_COUNTS)


def test_codes_used_here_exist():
    for code in (
        "MODEL_INTERFACE",
        "CLASSIFIER_INTERFACE",
        "REGRESSOR_PREDICTED_FEATURE",
        "SHAPE_MAPPING",
        "NO_LAYERS",
        "LAYER_IO_COUNT",
        "LAYER_RANK",
        "BLOB_NOT_PRODUCED",
        "BLOB_PRODUCED_TWICE",
        "OUTPUT_NOT_PRODUCED",
    ):
        assert CODES[code][0] == "error"


# -- layer parameters (layer_params.py) -------------------------------------------------------


def _one_layer(kind: str, shape=(1,)):
    spec = Model_pb2.Model()
    array(spec.description.input, "input", list(shape))
    array(spec.description.output, "probs")
    return spec, layer(spec.neuralNetwork, "l", ["input"], ["probs"], kind)


def test_invalid_pooling():
    """testInvalidPooling: a pooling layer without a padding type."""
    spec, _ = _one_layer("pooling", (100,))
    assert_bad(type_findings(spec), "LAYER_PARAMS")


def test_invalid_convolution_no_padding():
    """testInvalidConvolutionNoPadding"""
    spec, conv = _one_layer("convolution", (3, 100, 100))
    conv.convolution.outputChannels, conv.convolution.kernelChannels = 5, 3
    assert_bad(type_findings(spec), "LAYER_PARAMS")


@pytest.mark.parametrize("compute_mean_var", [False, True])
def test_batchnorm_mean_and_variance(compute_mean_var):
    """testInvalidBatchnorm (no mean/variance: BAD) and testValidComputeMeanVarBatchnorm
    (computed mean/variance: GOOD)."""
    spec, norm = _one_layer("batchnorm")
    norm.batchnorm.channels = 5
    norm.batchnorm.computeMeanVar = compute_mean_var
    norm.batchnorm.beta.floatValue.extend([1.0] * 5)
    norm.batchnorm.gamma.floatValue.extend([1.0] * 5)
    findings = type_findings(spec)
    if compute_mean_var:
        assert_good(findings)
    else:
        assert_bad(findings, "LAYER_PARAMS")


def test_inner_product_weight_size():
    """validateInnerProductWeightsBias: 'has incorrect weight matrix size'."""
    spec = Model_pb2.Model()
    array(spec.description.input, "input", [1])
    array(spec.description.output, "output", [1])
    ip = dense(spec.neuralNetwork, "ip", "input", "output")
    ip.innerProduct.outputChannels = 2
    assert_bad(type_findings(spec), "LAYER_PARAMS")


def test_lstm_weights_must_be_present():
    """validateUniDirectionalLSTMLayer: 3 activations, then every weight matrix of h*x (or
    h*h) values ('has empty input gate weight matrix')."""
    spec, lstm = _one_layer("uniDirectionalLSTM", (1, 1, 1, 1, 1))
    lstm.output.extend(["h", "c"])
    body = lstm.uniDirectionalLSTM
    body.inputVectorSize = body.outputVectorSize = 1
    assert_bad(type_findings(spec), "LAYER_PARAMS")
    for kind in ("sigmoid", "tanh", "tanh"):
        getattr(body.activations.add(), kind).SetInParent()
    assert "has no inputGateWeightMatrix" in str(type_findings(spec))
    for gate in ("inputGate", "forgetGate", "blockInput", "outputGate"):
        for matrix in ("WeightMatrix", "RecursionMatrix"):
            getattr(body.weightParams, gate + matrix).floatValue.append(0.5)
    assert "LAYER_PARAMS" not in {f.code for f in type_findings(spec)}
