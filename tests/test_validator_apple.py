"""Conformance suite: Apple's updatable-model validator cases, rebuilt in Python.

Each test rebuilds the spec of one test function in apple/coremltools ``mlmodel/tests``
(``UpdatableModelValidatorTests.cpp``, ``ParameterTests.cpp``, ``KNNValidatorTests.cpp``)
and checks that our verdict equals Apple's ``Model::validate`` verdict at every step the
C++ test checks. For Apple's BAD verdicts we also require the finding code of the rule
that Apple's validator actually fires first (``UpdatableNeuralNetworkValidator.cpp``,
``ParameterValidator.cpp``, ``PipelineValidator.cpp``,
``KNearestNeighborsClassifierValidator.cpp``), and, where the C++ test was written for a
different rule than the one that fires, the rule it was written for too.

Two mappings are deliberate, not deviations:

* Apple's validator answers "is this a valid model?"; ours answers "is this a valid
  *updatable* model?". Where Apple says GOOD for a model that is not marked updatable, we
  require exactly one error, ``NOT_UPDATABLE``, and nothing else (``good_not_updatable``).
* ``KNNValidatorTests.cpp`` validates plain k-NN classifiers. Apple's k-NN rules do not
  depend on ``isUpdatable`` (``Model::validate`` only adds the model-type and spec-version
  checks for updatable models), so we run those cases on the same specs marked updatable.

The builders below are ours; they reproduce the specs the C++ helpers build (same names,
shapes, types and parameter values), including a quirk or two the C++ tests rely on.
"""

from __future__ import annotations

import pytest

from updatable_coreml._proto import FeatureTypes_pb2, Model_pb2, NeuralNetwork_pb2
from updatable_coreml.validator import CODES, is_valid, validate

F32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
F64 = FeatureTypes_pb2.ArrayFeatureType.DOUBLE
I32 = FeatureTypes_pb2.ArrayFeatureType.INT32
SGD = "sgdOptimizer"
ADAM = "adamOptimizer"


# -- verdict helpers -------------------------------------------------------------------------


def _show(findings) -> str:
    return "\n".join(str(f) for f in findings) or "(no findings)"


def good(spec) -> list:
    """Apple: ML_ASSERT_GOOD. Ours: no error (warnings are fine)."""
    findings = validate(spec)
    assert is_valid(findings), "Apple says GOOD, we say:\n" + _show(findings)
    return findings


def bad(spec, *codes: str) -> list:
    """Apple: ML_ASSERT_BAD. Ours: at least one error, including every code in ``codes``."""
    findings = validate(spec)
    assert not is_valid(findings), "Apple says BAD, we find no error:\n" + _show(findings)
    errors = {f.code for f in findings if f.severity == "error"}
    missing = [c for c in codes if c not in errors]
    assert not missing, f"expected error code(s) {missing}; we found:\n" + _show(findings)
    return findings


def good_not_updatable(spec) -> list:
    """Apple says GOOD for a model not marked updatable: we must report NOT_UPDATABLE only."""
    findings = validate(spec)
    errors = [f.code for f in findings if f.severity == "error"]
    assert errors == ["NOT_UPDATABLE"], "expected only NOT_UPDATABLE, we found:\n" + _show(findings)
    return findings


def finding(findings, code: str):
    return next(f for f in findings if f.code == code)


# -- spec builders ---------------------------------------------------------------------------


def add_array(container, name: str, dims: int = 1, dtype=F32, shape=None):
    """Append a MultiArray feature; ``dims`` ones unless an explicit ``shape`` is given."""
    feature = container.add()
    feature.name = name
    array = feature.type.multiArrayType
    array.dataType = dtype
    array.shape.extend([1] * dims if shape is None else shape)
    return feature


def add_string(container, name: str):
    feature = container.add()
    feature.name = name
    feature.type.stringType.SetInParent()
    return feature


def _fill_weights(params, quantized: bool, count: int = 1, values=None) -> None:
    if quantized:
        params.rawValue = bytes([1] * count)
        params.quantization.numberOfBits = 8
        params.quantization.linearQuantization.scale.append(1.0)
        params.quantization.linearQuantization.bias.append(0.0)
    else:
        params.floatValue.extend(values if values is not None else [1.0] * count)


def add_dense(
    nn,
    name: str,
    src: str,
    dst: str,
    *,
    updatable: bool = False,
    bias: bool = True,
    q_weights: bool = False,
    q_bias: bool = False,
    mark_params: bool = True,
):
    """A 1x1 innerProduct layer like the C++ helpers add (weights/bias 1.0)."""
    layer = nn.layers.add()
    layer.name = name
    layer.input.append(src)
    layer.output.append(dst)
    ip = layer.innerProduct
    ip.inputChannels = 1
    ip.outputChannels = 1
    _fill_weights(ip.weights, q_weights)
    ip.hasBias = bias
    if bias:
        _fill_weights(ip.bias, q_bias)
    if updatable:
        layer.isUpdatable = True
        if mark_params:
            ip.weights.isUpdatable = True
            if bias:
                ip.bias.isUpdatable = True
    return layer


def add_softmax(nn, name: str, src: str, dst: str):
    layer = nn.layers.add()
    layer.name = name
    layer.input.append(src)
    layer.output.append(dst)
    layer.softmax.SetInParent()
    return layer


def copy_inputs_to_training(spec) -> None:
    for feature in spec.description.input:
        spec.description.trainingInput.add().CopyFrom(feature)


def clear_training(spec) -> None:
    del spec.description.trainingInput[:]


def network(
    spec,
    updatable: bool,
    src=("A", 3),
    dst=("B", 1),
    depth: int = 1,
    q_weights: bool = False,
    q_bias: bool = False,
):
    """A plain NeuralNetwork: ``depth`` chained 1x1 innerProducts from ``src`` to ``dst``.

    Updatable: the model and every layer (weights and bias) are marked, and the model inputs
    are copied into the training inputs.
    """
    add_array(spec.description.input, src[0], src[1])
    add_array(spec.description.output, dst[0], dst[1])
    spec.specificationVersion = 4
    nn = spec.neuralNetwork
    for i in range(depth):
        add_dense(
            nn,
            "inner_layer" if depth == 1 else f"inner_layer{i}",
            src[0] if i == 0 else f"output{i - 1}",
            dst[0] if i == depth - 1 else f"output{i}",
            updatable=updatable,
            q_weights=q_weights,
            q_bias=q_bias,
        )
    if updatable:
        spec.isUpdatable = True
        copy_inputs_to_training(spec)
    return nn


def basic_updatable(spec):
    """The C++ 'basic updatable network': A (rank 3) -> inner_layer (updatable) -> B."""
    return network(spec, True)


def add_cce(spec, nn, name: str, src: str, target: str, training_input: bool = True):
    loss = nn.updateParams.lossLayers.add()
    loss.name = name
    loss.categoricalCrossEntropyLossLayer.input = src
    loss.categoricalCrossEntropyLossLayer.target = target
    if training_input:
        add_array(spec.description.trainingInput, target, 1, I32)
    return loss


def add_mse(spec, nn, name: str, src: str, target: str):
    loss = nn.updateParams.lossLayers.add()
    loss.name = name
    loss.meanSquaredErrorLossLayer.input = src
    loss.meanSquaredErrorLossLayer.target = target
    entry = spec.description.trainingInput.add()
    entry.CopyFrom(spec.description.output[0])
    entry.name = target
    return loss


def set_double(param, default: float, lo: float, hi: float) -> None:
    param.defaultValue = default
    param.range.minValue = lo
    param.range.maxValue = hi


def set_int(param, default: int, lo: int = 0, hi: int = 0, values=None) -> None:
    param.defaultValue = default
    if values:
        param.set.values.extend(sorted(values))
    else:
        param.range.minValue = lo
        param.range.maxValue = hi


def optimizer(nn, kind: str):
    return getattr(nn.updateParams.optimizer, kind)


def add_lr(nn, kind: str, default=0.7, lo=0.0, hi=1.0) -> None:
    set_double(optimizer(nn, kind).learningRate, default, lo, hi)


def add_batch(nn, kind: str, default=10, lo=5, hi=100, values=None) -> None:
    set_int(optimizer(nn, kind).miniBatchSize, default, lo, hi, values)


def add_adam_param(nn, field: str, default=0.7, lo=0.0, hi=1.0) -> None:
    set_double(getattr(optimizer(nn, ADAM), field), default, lo, hi)


def add_momentum(nn, default, lo, hi) -> None:
    set_double(optimizer(nn, SGD).momentum, default, lo, hi)


def add_epochs(nn, default=100, lo=1, hi=100, values=None) -> None:
    set_int(nn.updateParams.epochs, default, lo, hi, values)


def add_shuffle_seed(nn, default=2019, lo=0, hi=2019) -> None:
    nn.updateParams.shuffle.defaultValue = True
    set_int(nn.updateParams.seed, default, lo, hi)


def add_sgd_setup(nn, shuffle: bool = True) -> None:
    """The C++ tests' usual update parameters: SGD lr 0.7 in [0,1], batch 10 in [5,100],
    epochs 100 in [1,100], and (usually) shuffle with seed 2019 in [0,2019]."""
    add_lr(nn, SGD)
    add_batch(nn, SGD)
    add_epochs(nn)
    if shuffle:
        add_shuffle_seed(nn)


def cce_softmax_model(spec):
    """Basic updatable network + softmax(B) + CCE on it with target 'label_target'."""
    nn = basic_updatable(spec)
    add_softmax(nn, "softmax", "B", "softmax_out")
    add_cce(spec, nn, "cross_entropy_loss_layer", "softmax_out", "label_target")
    return nn


def mse_model(spec):
    nn = basic_updatable(spec)
    add_mse(spec, nn, "mean_squared_error_loss_layer", "B", "label_target")
    return nn


def finish_with_softmax_cce(spec, src: str):
    """softmax(src) -> CCE (target 'target') with the usual SGD setup, on a plain network."""
    nn = spec.neuralNetwork
    add_softmax(nn, "softmax", src, "softmax_out")
    add_cce(spec, nn, "cross_entropy_loss_layer", "softmax_out", "target")
    add_sgd_setup(nn)
    return nn


def knn_model(spec, updatable: bool, src=("D", 3), out: str = "E"):
    """A 1-example k-NN classifier (k = 3 from the set {3}, kd-tree leaf 30, label 'zero')."""
    add_array(spec.description.input, src[0], src[1])
    add_string(spec.description.output, out)
    spec.description.predictedFeatureName = out
    spec.specificationVersion = 4
    knn = spec.kNearestNeighborsClassifier
    set_int(knn.numberOfNeighbors, 3, values=[3])
    index = knn.nearestNeighborsIndex
    index.singleKdTreeIndex.leafSize = 30
    index.squaredEuclideanDistance.SetInParent()
    index.numberOfDimensions = src[1]
    index.floatSamples.add().vector.extend(float(i) for i in range(src[1]))
    knn.uniformWeighting.SetInParent()
    knn.stringClassLabels.vector.append("zero")
    if updatable:
        spec.isUpdatable = True
    return knn


def pipeline(spec, updatable: bool, src, out_name: str = None, out=None):
    """An empty pipeline with input ``src`` and a String output ``out_name`` (or array ``out``)."""
    add_array(spec.description.input, src[0], src[1])
    if out is not None:
        add_array(spec.description.output, out[0], out[1])
    else:
        add_string(spec.description.output, out_name)
    spec.specificationVersion = 4
    if updatable:
        spec.isUpdatable = True
    spec.pipeline.SetInParent()
    return spec.pipeline


A, B, C, D = ("A", 3), ("B", 1), ("C", 1), ("D", 3)


def pipeline_of_four(updatable_pipeline: bool, updatable_knn: bool):
    """Pipeline A -> NN -> B -> NN -> C -> NN -> D -> k-NN -> E, as the C++ pipeline tests."""
    spec = Model_pb2.Model()
    chain = pipeline(spec, updatable_pipeline, A, "E")
    models = [chain.models.add() for _ in range(4)]
    network(models[0], False, A, B)
    network(models[1], False, B, C)
    network(models[2], False, C, D)
    knn_model(models[3], updatable_knn, D, "E")
    return spec, models


def training_family(
    spec, target: str = "target", cce_training_input: bool = True, classifier_outputs: bool = False
):
    """Base of the C++ training-input tests: InTensor -> 1024 updatable innerProducts ->
    OutTensor -> softmax -> CCE, SGD + epochs + shuffle/seed. With ``classifier_outputs`` the
    plain network also declares a String 'predictedFeatures' and a dictionary 'probs' output
    named as predicted feature/probabilities (it is still not a classifier)."""
    nn = network(spec, True, ("InTensor", 3), ("OutTensor", 1), depth=1024)
    add_softmax(nn, "softmax", "OutTensor", "softmax_out")
    if classifier_outputs:
        add_string(spec.description.output, "predictedFeatures")
        probs = spec.description.output.add()
        probs.name = "probs"
        probs.type.dictionaryType.stringKeyType.SetInParent()
        spec.description.predictedFeatureName = "predictedFeatures"
        spec.description.predictedProbabilitiesName = "probs"
    add_cce(
        spec,
        nn,
        "cross_entropy_loss_layer",
        "softmax_out",
        target,
        training_input=cce_training_input,
    )
    add_sgd_setup(nn)
    return nn


def reset_outputs_to_out_tensor(spec) -> None:
    """'Remove predictedFeatureName from the outputs': only OutTensor remains."""
    del spec.description.output[:]
    add_array(spec.description.output, "OutTensor", 1)


def add_int_target(spec, name: str = "target") -> None:
    add_array(spec.description.trainingInput, name, 1, I32)


def add_made_up_input(spec, name: str = "madeUpInput"):
    return add_array(spec.description.trainingInput, name, 3)


def classifier(spec, updatable: bool = True, labels=("1", "2", "3", "4")):
    """NeuralNetworkClassifier: InTensor (Double, shape [3]) -> inner_product (3x4, bias) ->
    softmax -> scoreVector; String labels; updatable: CCE 'cross_entropy_loss' on scoreVector
    with target 'target', SGD lr 0.7, batch 32 from {16,32,64,128}, epochs 100 in [1,100],
    shuffle/seed; training inputs = model inputs + the predicted label."""
    add_array(spec.description.input, "InTensor", shape=[3], dtype=F64)
    add_string(spec.description.output, "predictedClass")
    probs = spec.description.output.add()
    probs.name = "classProbabilities"
    probs.type.dictionaryType.stringKeyType.SetInParent()
    spec.description.predictedFeatureName = "predictedClass"
    spec.description.predictedProbabilitiesName = "classProbabilities"
    spec.specificationVersion = 4
    nn = spec.neuralNetworkClassifier
    nn.stringClassLabels.vector.extend(labels)
    layer = nn.layers.add()
    layer.name = "inner_product"
    layer.input.append("InTensor")
    layer.output.append("intermediateOutput")
    ip = layer.innerProduct
    ip.inputChannels = 3
    ip.outputChannels = len(labels)
    ip.weights.floatValue.extend((i % 7) / 7.0 for i in range(3 * len(labels)))
    ip.hasBias = True
    ip.bias.floatValue.extend((i % 5) / 5.0 for i in range(len(labels)))
    add_softmax(nn, "softmax", "intermediateOutput", "scoreVector")
    if updatable:
        spec.isUpdatable = True
        layer.isUpdatable = True
        ip.weights.isUpdatable = True
        ip.bias.isUpdatable = True
        add_cce(spec, nn, "cross_entropy_loss", "scoreVector", "target")
        add_lr(nn, SGD)
        add_batch(nn, SGD, 32, values=[16, 32, 64, 128])
        add_epochs(nn)
        add_shuffle_seed(nn)
        clear_training(spec)
        copy_inputs_to_training(spec)
        spec.description.trainingInput.add().CopyFrom(spec.description.output[0])
    return nn


def int_minimal_model(layer_kind: str = "innerProduct"):
    """The first C++ cases: an INT32 input of shape [1] ('input'), an INT32 output 'probs'
    without shape, updatable, spec version 4, no update parameters."""
    spec = Model_pb2.Model()
    add_array(spec.description.input, "input", 1, I32)
    add_array(spec.description.output, "probs", dtype=I32, shape=[])
    spec.isUpdatable = True
    spec.specificationVersion = 4
    return spec


# -- UpdatableModelValidatorTests.cpp: layers and weights -----------------------------------


def test_invalid_updatable_model_wrong_type():
    """testInvalidUpdatableModelWrongType: an updatable identity model."""
    spec = Model_pb2.Model()
    add_array(spec.description.input, "input", 1, I32)
    add_array(spec.description.output, "output", dtype=I32, shape=[])
    spec.identity.SetInParent()
    spec.isUpdatable = True
    spec.specificationVersion = 4
    bad(spec, "WRONG_MODEL_TYPE")


def test_invalid_updatable_model_wrong_layer():
    """testInvalidUpdatableModelWrongLayer: an embedding layer marked updatable."""
    spec = int_minimal_model()
    layer = spec.neuralNetwork.layers.add()
    layer.name = "embed"
    layer.input.append("input")
    layer.output.append("probs")
    layer.isUpdatable = True
    embedding = layer.embedding
    embedding.inputDim = 5
    embedding.outputChannels = 3
    embedding.hasBias = True
    embedding.weights.floatValue.extend([1.0] * 15)
    embedding.bias.floatValue.extend([1.0] * 3)
    findings = bad(spec, "LAYER_NOT_UPDATABLE_TYPE")
    assert finding(findings, "LAYER_NOT_UPDATABLE_TYPE").layer == "embed"


def test_invalid_updatable_model_wrong_weights():
    """testInvalidUpdatableModelWrongWeights: updatable layer, weights not marked updatable."""
    spec = int_minimal_model()
    layer = add_dense(spec.neuralNetwork, "ip", "input", "probs", updatable=True)
    layer.innerProduct.weights.isUpdatable = False
    findings = bad(spec, "WEIGHTS_NOT_MARKED")
    assert finding(findings, "WEIGHTS_NOT_MARKED").layer == "ip"


def test_invalid_updatable_model_wrong_biases():
    """testInvalidUpdatableModelWrongBiases: updatable layer, bias not marked updatable."""
    spec = int_minimal_model()
    layer = add_dense(spec.neuralNetwork, "", "input", "probs", updatable=True)
    layer.innerProduct.bias.isUpdatable = False
    bad(spec, "WEIGHTS_NOT_MARKED")


def test_invalid_updatable_model_non_updatable_layers():
    """testInvalidUpdatableModelNonUpdatableLayers: model updatable, no layer updatable."""
    spec = int_minimal_model()
    add_dense(spec.neuralNetwork, "", "input", "probs")
    bad(spec, "NO_UPDATABLE_LAYER")


def test_invalid_updatable_model_with_collided_layer_and_loss_layer_names():
    """testInvalidUpdatableModelwithCollidedLayerAndLossLayerNames: layer and loss both 'name1'."""
    spec = int_minimal_model()
    spec.neuralNetwork.updateParams.lossLayers.add().name = "name1"  # no loss type, as in C++
    add_dense(spec.neuralNetwork, "name1", "input", "probs", updatable=True)
    findings = bad(spec, "NAME_COLLISION")
    assert finding(findings, "NAME_COLLISION").layer == "name1"


def test_invalid_updatable_layer_missing_bias():
    """testInvalidUpdatableLayerMissingBias: no bias, weights left unmarked.

    Apple does not require a bias; the verdict comes from the unmarked weights."""
    spec = int_minimal_model()
    add_dense(
        spec.neuralNetwork, "ip", "input", "probs", updatable=True, bias=False, mark_params=False
    )
    bad(spec, "WEIGHTS_NOT_MARKED")


def _quantized_cce_model(q_weights: bool, q_bias: bool):
    spec = Model_pb2.Model()
    nn = network(spec, True, A, B, q_weights=q_weights, q_bias=q_bias)
    add_softmax(nn, "softmax", "B", "softmax_out")
    add_cce(spec, nn, "cross_entropy_loss_layer", "softmax_out", "label_target")
    add_sgd_setup(nn, shuffle=False)
    return spec


def test_invalid_updatable_model_quantized_weights():
    """testInvalidUpdatableModelQuantizedWeights: updatable layer with quantized weights."""
    findings = bad(_quantized_cce_model(True, False), "WEIGHTS_NOT_FP32")
    assert finding(findings, "WEIGHTS_NOT_FP32").layer == "inner_layer"


def test_invalid_updatable_model_quantized_bias():
    """testInvalidUpdatableModelQuantizedBias: updatable layer with a quantized bias."""
    findings = bad(_quantized_cce_model(False, True), "WEIGHTS_NOT_FP32")
    assert finding(findings, "WEIGHTS_NOT_FP32").layer == "inner_layer"


def test_valid_updatable_model_quantized_weights_and_bias_for_non_updatable_layer():
    """testValidUpdatableModelQuantizedWeightsAndBiasForNonUpdatableLayer: frozen quantized layer."""
    spec = Model_pb2.Model()
    nn = network(spec, True, A, B)
    add_dense(nn, "non_updatable_fc", "B", "non_updatable_fc_output", q_weights=True, q_bias=True)
    add_softmax(nn, "softmax", "non_updatable_fc_output", "softmax_out")
    add_cce(spec, nn, "cross_entropy_loss_layer", "softmax_out", "label_target")
    add_sgd_setup(nn, shuffle=False)
    good(spec)


def test_updatable_model_spec_version():
    """testUpdatableModelSpecVersion: version 3 is refused, version 4 accepted."""
    spec = Model_pb2.Model()
    nn = cce_softmax_model(spec)
    add_sgd_setup(nn, shuffle=False)
    spec.specificationVersion = 3
    bad(spec, "SPEC_VERSION")
    spec.specificationVersion = 4
    good(spec)


def test_valid_updatable_model_with_1024_layers():
    """testValidUpdatableModelWith1024Layers: 1024 updatable innerProducts, softmax, CCE."""
    spec = Model_pb2.Model()
    network(spec, True, ("InTensor", 3), ("OutTensor", 1), depth=1024)
    finish_with_softmax_cce(spec, "OutTensor")
    good(spec)


# -- UpdatableModelValidatorTests.cpp: loss layers and backpropagation ----------------------


def test_invalid_model_unsupported_layers_for_bp():
    """testInvalidModelUnsupportedLayersForBP: innerProduct (U) -> abs -> pooling -> CCE.

    Apple's first failing rule is the CCE input (a pooling output, not a softmax); the test
    was written for the abs layer blocking backpropagation, which we must name too."""
    spec = Model_pb2.Model()
    add_array(spec.description.input, "A", 3)
    add_array(spec.description.output, "B", shape=[])
    spec.isUpdatable = True
    spec.specificationVersion = 4
    nn = spec.neuralNetwork
    add_dense(nn, "inner_layer", "A", "ip", updatable=True)
    unary = nn.layers.add()
    unary.name = "abs_layer"
    unary.input.append("ip")
    unary.output.append("abs_out")
    unary.unary.type = NeuralNetwork_pb2.UnaryFunctionLayerParams.ABS
    pool = nn.layers.add()
    pool.name = "pooling_layer"
    pool.input.append("abs_out")
    pool.output.append("B")
    pool.pooling.type = NeuralNetwork_pb2.PoolingLayerParams.AVERAGE
    pool.pooling.globalPooling = True
    pool.pooling.valid.SetInParent()
    add_cce(spec, nn, "loss_layer", "B", "label_target", training_input=False)
    findings = bad(spec, "CCE_INPUT_NOT_SOFTMAX", "BACKPROP_BLOCKED")
    assert finding(findings, "BACKPROP_BLOCKED").layer == "abs_layer"


def _loss_input_missing_model(kind: str):
    spec = Model_pb2.Model()
    add_array(spec.description.input, "A", 3)
    add_array(spec.description.output, "B", shape=[])
    spec.isUpdatable = True
    spec.specificationVersion = 4
    nn = spec.neuralNetwork
    add_dense(nn, "inner_layer", "A", "B", updatable=True)
    loss = nn.updateParams.lossLayers.add()
    body = (
        loss.categoricalCrossEntropyLossLayer if kind == "cce" else loss.meanSquaredErrorLossLayer
    )
    loss.name = "cross_entropy_loss_layer" if kind == "cce" else "mse_loss_layer"
    body.input = "C"
    body.target = "label_target"
    return spec


def test_invalid_categorical_cross_entropy_loss_layer_inputs():
    """testInvalidCategoricalCrossEntropyLossLayerInputs: CCE reads a blob no layer produces."""
    bad(_loss_input_missing_model("cce"), "CCE_INPUT_NOT_SOFTMAX")


def test_invalid_mean_squared_error_loss_layer_inputs():
    """testInvalidMeanSquaredErrorLossLayerInputs: MSE reads a blob no layer produces."""
    bad(_loss_input_missing_model("mse"), "MSE_INPUT_NOT_IN_GRAPH")


def test_invalid_model_invalid_softmax():
    """testInvalidModelInvalidSoftmax: Dense(U) -> SM -> Dense(U) -> SM -> CCE; the first
    softmax blocks backpropagation to the first dense layer."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    add_softmax(nn, "softmax", "B", "softmax_out")
    add_dense(
        nn,
        "inner_layer_after_softmax",
        "softmax_out",
        "inner_layer_after_softmax_out",
        updatable=True,
    )
    add_softmax(nn, "softmax_2", "inner_layer_after_softmax_out", "softmax_2_out")
    add_cce(spec, nn, "cross_entropy_loss_layer", "softmax_2_out", "label_target")
    add_sgd_setup(nn, shuffle=False)
    findings = bad(spec, "BACKPROP_BLOCKED")
    assert finding(findings, "BACKPROP_BLOCKED").layer == "softmax"


def test_valid_model_valid_multiple_softmax_1():
    """testValidModelValidMultipleSoftmax_1: Dense -> SM -> Dense(U) -> SM -> CCE.

    As written in C++ the model itself is never marked updatable (its builder is called with
    isUpdatable=false), so Apple's updatable rules do not run; we then also check the model
    marked updatable (with its input added to the training inputs), which is what the test
    is about: a softmax before the first updatable layer is fine."""
    spec = Model_pb2.Model()
    nn = network(spec, False, A, B)
    add_softmax(nn, "softmax", "B", "softmax_out")
    add_dense(
        nn,
        "inner_layer_after_softmax",
        "softmax_out",
        "inner_layer_after_softmax_out",
        updatable=True,
    )
    add_softmax(nn, "softmax_2", "inner_layer_after_softmax_out", "softmax_2_out")
    add_cce(spec, nn, "cross_entropy_loss_layer", "softmax_2_out", "label_target")
    add_sgd_setup(nn, shuffle=False)
    good_not_updatable(spec)
    spec.isUpdatable = True
    copy_inputs_to_training(spec)
    good(spec)


def test_valid_model_valid_multiple_softmax_2():
    """testValidModelValidMultipleSoftmax_2: Dense(U) -> SM -> CCE, and SM -> Dense(U) -> SM
    off the loss path."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    add_softmax(nn, "softmax", "B", "softmax_out")
    add_cce(spec, nn, "cross_entropy_loss_layer", "softmax_out", "label_target")
    add_dense(
        nn,
        "inner_layer_after_softmax",
        "softmax_out",
        "inner_layer_after_softmax_out",
        updatable=True,
    )
    add_softmax(nn, "softmax_2", "inner_layer_after_softmax_out", "softmax_2_out")
    add_sgd_setup(nn, shuffle=False)
    good(spec)


def test_valid_model_multiple_softmax_outputs():
    """testValidModelMultipleSoftmaxOutputs: Dense(U) -> SM -> CCE, and SM -> frozen Dense."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    add_softmax(nn, "softmax", "B", "softmax_out")
    add_dense(nn, "inner_layer_after_softmax", "softmax_out", "inner_layer_after_softmax_out")
    add_cce(spec, nn, "cross_entropy_loss_layer", "softmax_out", "label_target")
    add_sgd_setup(nn, shuffle=False)
    good(spec)


def test_invalid_model_multiple_loss():
    """testInvalidModelMultipleLoss: two CCE loss layers."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    add_softmax(nn, "softmax", "B", "softmax_out")
    add_dense(
        nn,
        "inner_layer_after_softmax",
        "softmax_out",
        "inner_layer_after_softmax_out",
        updatable=True,
    )
    add_cce(spec, nn, "cross_entropy_loss_layer_1", "softmax_1_out", "label_target")
    add_softmax(nn, "softmax_2", "inner_layer_after_softmax_out", "softmax_2_out")
    add_cce(spec, nn, "cross_entropy_loss_layer_2", "softmax_2_out", "label_target")
    add_sgd_setup(nn, shuffle=False)
    bad(spec, "MULTIPLE_LOSSES")


# -- UpdatableModelValidatorTests.cpp: update parameters ------------------------------------


def test_missing_updatable_model_parameters():
    """testMissingUpdatableModelParameters: CCE or MSE model without optimizer or epochs."""
    spec = Model_pb2.Model()
    cce_softmax_model(spec)
    bad(spec, "NO_OPTIMIZER")
    spec = Model_pb2.Model()
    mse_model(spec)
    bad(spec, "NO_OPTIMIZER")


def test_missing_mini_batch_size_parameter():
    """testMissingMiniBatchSizeParameter: SGD with a learning rate but no mini-batch size."""
    spec = Model_pb2.Model()
    nn = cce_softmax_model(spec)
    bad(spec, "NO_OPTIMIZER")
    add_lr(nn, SGD)
    bad(spec, "OPTIMIZER_PARAM_MISSING")
    add_batch(nn, SGD)
    add_epochs(nn)
    good(spec)


def test_missing_learning_rate_parameter():
    """testMissingLearningRateParameter: SGD with a mini-batch size but no learning rate."""
    spec = Model_pb2.Model()
    nn = cce_softmax_model(spec)
    bad(spec, "NO_OPTIMIZER")
    add_batch(nn, SGD)
    bad(spec, "OPTIMIZER_PARAM_MISSING")
    add_lr(nn, SGD)
    add_epochs(nn)
    good(spec)


@pytest.mark.parametrize("missing", ["beta1", "beta2", "eps"])
def test_missing_adam_parameter(missing):
    """testMissingBeta1Parameter / testMissingBeta2Parameter / testMissingEpsParameter."""
    spec = Model_pb2.Model()
    nn = cce_softmax_model(spec)
    bad(spec, "NO_OPTIMIZER")
    add_lr(nn, ADAM)
    add_batch(nn, ADAM)
    add_epochs(nn)
    for field in ("beta1", "beta2", "eps"):
        if field != missing:
            add_adam_param(nn, field)
    bad(spec, "OPTIMIZER_PARAM_MISSING")
    add_adam_param(nn, missing)
    good(spec)


def test_missing_epochs_parameter():
    """testMissingEpochsParameter: SGD complete, no epochs."""
    spec = Model_pb2.Model()
    nn = cce_softmax_model(spec)
    bad(spec, "NO_OPTIMIZER")
    add_batch(nn, SGD)
    add_lr(nn, SGD)
    bad(spec, "NO_EPOCHS")


def test_existing_shuffle_with_missing_seed_parameter():
    """testExistingShuffleWithMissingSeedParameter: shuffle on, seed 100 in [0, 100]."""
    spec = Model_pb2.Model()
    nn = cce_softmax_model(spec)
    add_batch(nn, SGD)
    add_lr(nn, SGD)
    add_epochs(nn)
    add_shuffle_seed(nn, 100, 0, 100)
    good(spec)


# -- UpdatableModelValidatorTests.cpp: training inputs --------------------------------------


def test_invalid_no_training_inputs():
    """testInvalid_NoTrainingInputs: no training inputs, then target + model input."""
    spec = Model_pb2.Model()
    training_family(spec)
    clear_training(spec)
    bad(spec, "TRAINING_INPUTS_MISSING")
    add_int_target(spec)
    copy_inputs_to_training(spec)
    good(spec)


def test_invalid_only_model_inputs():
    """testInvalid_OnlyModelInputs: only the model input, then the target too."""
    spec = Model_pb2.Model()
    training_family(spec, cce_training_input=False)
    bad(spec, "TRAINING_INPUTS_MISSING")
    add_int_target(spec)
    good(spec)


def test_invalid_only_target():
    """testInvalid_OnlyTarget: only the target, then the model input too."""
    spec = Model_pb2.Model()
    training_family(spec, target="cce_target")
    clear_training(spec)
    add_int_target(spec, "cce_target")
    bad(spec, "TRAINING_INPUTS_MISSING")
    reset_outputs_to_out_tensor(spec)
    copy_inputs_to_training(spec)
    good(spec)


def test_invalid_only_predicted_feature_name():
    """testInvalid_OnlyPredictedFeatureName: a plain network whose only training input is its
    (declared) predicted feature; then target and model input are added."""
    spec = Model_pb2.Model()
    training_family(spec, classifier_outputs=True)
    clear_training(spec)
    add_string(spec.description.trainingInput, "predictedFeatures")
    bad(spec, "TRAINING_INPUTS_MISSING")
    reset_outputs_to_out_tensor(spec)
    add_int_target(spec)
    copy_inputs_to_training(spec)
    good(spec)


def test_invalid_only_target_and_predicted_feature_name():
    """testInvalid_OnlyTargetAndPredictedFeatureName: target + predicted feature, no model input."""
    spec = Model_pb2.Model()
    training_family(spec, target="cce_target", classifier_outputs=True)
    clear_training(spec)
    add_int_target(spec, "cce_target")
    add_string(spec.description.trainingInput, "predictedFeatures")
    bad(spec, "TRAINING_INPUTS_MISSING")
    reset_outputs_to_out_tensor(spec)
    copy_inputs_to_training(spec)
    good(spec)


def test_invalid_target_and_fake_model_inputs():
    """testInvalid_TargetAndFakeModelInputs: target + an input the model does not have."""
    spec = Model_pb2.Model()
    training_family(spec, target="cce_target")
    clear_training(spec)
    add_made_up_input(spec)
    add_int_target(spec, "cce_target")
    bad(spec, "TRAINING_INPUTS_MISSING")
    copy_inputs_to_training(spec)
    good(spec)


def test_invalid_predicted_feature_name_and_fake_model_inputs():
    """testInvalid_PredictedFeatureNameAndFakeModelInputs: made-up input + predicted feature."""
    spec = Model_pb2.Model()
    training_family(spec, classifier_outputs=True)
    clear_training(spec)
    add_made_up_input(spec)
    add_string(spec.description.trainingInput, "predictedFeatures")
    bad(spec, "TRAINING_INPUTS_MISSING")
    reset_outputs_to_out_tensor(spec)
    add_int_target(spec)
    copy_inputs_to_training(spec)
    good(spec)


def test_invalid_target_predicted_feature_name_and_fake_model_inputs():
    """testInvalid_TargetPredictedFeatureNameAndFakeModelInputs: made-up input, target and
    predicted feature, but no real model input."""
    spec = Model_pb2.Model()
    training_family(spec, target="cce_target", classifier_outputs=True)
    clear_training(spec)
    add_made_up_input(spec)
    add_int_target(spec, "cce_target")
    add_string(spec.description.trainingInput, "predictedFeatures")
    bad(spec, "TRAINING_INPUTS_MISSING")
    reset_outputs_to_out_tensor(spec)
    copy_inputs_to_training(spec)
    good(spec)


def test_invalid_predicted_feature_name():
    """testInvalid_PredictedFeatureName: a plain network (not a classifier) given its predicted
    feature instead of the loss target; then the target is added."""
    spec = Model_pb2.Model()
    training_family(spec, cce_training_input=False, classifier_outputs=True)
    add_string(spec.description.trainingInput, "predictedFeatures")
    bad(spec, "TRAINING_TARGET_MISSING")
    reset_outputs_to_out_tensor(spec)
    add_int_target(spec)
    good(spec)


def test_valid_target_and_predicted_feature_name():
    """testValid_TargetAndPredictedFeatureName: model input, target and predicted feature name
    (declared, though no such output exists)."""
    spec = Model_pb2.Model()
    training_family(spec, cce_training_input=False)
    spec.description.predictedFeatureName = "predictedFeatures"
    spec.description.predictedProbabilitiesName = "probs"
    add_int_target(spec)
    add_string(spec.description.trainingInput, "predictedFeatures")
    good(spec)


def test_valid_target_and_real_and_fake_training_inputs():
    """testValid_TargetAndRealAndFakeTrainingInputs: model input, a made-up input and target."""
    spec = Model_pb2.Model()
    training_family(spec, cce_training_input=False)
    add_made_up_input(spec)
    add_int_target(spec)
    good(spec)


def test_valid_target_one_of_two_model_inputs():
    """testValid_TargetOneOfTwoModelInputs: a second, unused model input left out of training."""
    spec = Model_pb2.Model()
    training_family(spec, cce_training_input=False)
    add_array(spec.description.input, "fakeInput", 3)
    add_int_target(spec)
    good(spec)


def test_valid_target_unused_one_of_two_model_input():
    """testValid_TargetUnusedOneOfTwoModelInput: training inputs are the unused model input and
    the target; the input the network reads is not among them (Apple accepts this)."""
    spec = Model_pb2.Model()
    training_family(spec, cce_training_input=False)
    clear_training(spec)
    unused = add_array(spec.description.input, "fakeInput", 3)
    spec.description.trainingInput.add().CopyFrom(unused)
    add_int_target(spec)
    good(spec)


def test_valid_1_inference_and_3_training_inputs():
    """testValid_1InferenceAnd3TrainingInputs: model input, two made-up inputs and the target.

    As in C++, the second made-up input ends up with no type (its shape was written into the
    first one, which ends with six dimensions)."""
    spec = Model_pb2.Model()
    training_family(spec, target="cce_target", cce_training_input=False)
    first = add_made_up_input(spec)
    second = spec.description.trainingInput.add()
    second.name = "madeUpInput2"
    first.type.multiArrayType.shape.extend([1, 1, 1])
    add_int_target(spec, "cce_target")
    good(spec)


def test_valid_with_mse():
    """testValid_WithMSE: 1024 updatable layers, MSE on OutTensor, Double target 'mse_target'."""
    spec = Model_pb2.Model()
    nn = network(spec, True, ("InTensor", 3), ("OutTensor", 1), depth=1024)
    add_mse(spec, nn, "mean_square_error", "OutTensor", "mse_target")
    clear_training(spec)
    copy_inputs_to_training(spec)
    add_array(spec.description.trainingInput, "mse_target", 1, F64)
    add_sgd_setup(nn)
    good(spec)


def test_invalid_classifier_only_predicted_feature_name():
    """testInvalid_Classifier_OnlyPredictedFeatureName: the label alone, then with the input."""
    spec = Model_pb2.Model()
    classifier(spec)
    clear_training(spec)
    add_string(spec.description.trainingInput, "predictedClass")
    bad(spec, "TRAINING_INPUTS_MISSING")
    copy_inputs_to_training(spec)
    good(spec)


def test_invalid_classifier_only_target():
    """testInvalid_Classifier_OnlyTarget: the loss target alone, then with the input."""
    spec = Model_pb2.Model()
    classifier(spec)
    clear_training(spec)
    add_int_target(spec)
    bad(spec, "TRAINING_INPUTS_MISSING")
    copy_inputs_to_training(spec)
    good(spec)


def test_valid_classifier_predicted_feature_name():
    """testValid_Classifier_PredictedFeatureName: input + String label."""
    spec = Model_pb2.Model()
    classifier(spec)
    clear_training(spec)
    copy_inputs_to_training(spec)
    add_string(spec.description.trainingInput, "predictedClass")
    good(spec)


def test_valid_classifier_target():
    """testValid_Classifier_Target: input + the loss target (an Int32 MultiArray) instead of
    the label: Apple accepts the loss target for a classifier too."""
    spec = Model_pb2.Model()
    classifier(spec)
    clear_training(spec)
    copy_inputs_to_training(spec)
    add_int_target(spec)
    good(spec)


def test_valid_classifier_predicted_feature_name_and_target():
    """testValid_Classifier_PredictedFeatureNameAndTarget: input, target and label."""
    spec = Model_pb2.Model()
    classifier(spec)
    clear_training(spec)
    copy_inputs_to_training(spec)
    add_int_target(spec)
    add_string(spec.description.trainingInput, "predictedClass")
    good(spec)


def test_invalid_classifier_predicted_feature_name_wrong_type():
    """testInvalid_Classifier_PredictedFeatureNameWrongType: Int64 label for String classes."""
    spec = Model_pb2.Model()
    classifier(spec)
    clear_training(spec)
    copy_inputs_to_training(spec)
    label = spec.description.trainingInput.add()
    label.name = "predictedClass"
    label.type.int64Type.SetInParent()
    bad(spec, "TRAINING_TARGET_TYPE")
    label.type.Clear()
    label.type.stringType.SetInParent()
    good(spec)


# -- UpdatableModelValidatorTests.cpp: pipelines and k-NN -----------------------------------


def test_non_updatable_pipeline_with_non_updatable_models():
    """testNonUpdatablePipelineWithNonUpdatableModels: nothing updatable anywhere."""
    spec, models = pipeline_of_four(False, False)
    for model in models:
        good_not_updatable(model)
    good_not_updatable(spec)


def test_non_updatable_pipeline_with_one_updatable_model():
    """testNonUpdatablePipelineWithOneUpdatableModel: updatable k-NN in a frozen pipeline."""
    spec, models = pipeline_of_four(False, True)
    for model in models[:3]:
        good_not_updatable(model)
    good(models[3])
    bad(spec, "PIPELINE_UPDATABLE_POSITION")


def test_non_updatable_pipeline_with_one_updatable_model_inside_pipeline_hierarchy():
    """testNonUpdatablePipelineWithOneUpdatableModelInsidePipelineHierarchy: an updatable
    network inside a non-updatable inner pipeline inside a non-updatable pipeline."""
    spec = Model_pb2.Model()
    outer = pipeline(spec, False, A, "E")
    m1, m2, m3 = (outer.models.add() for _ in range(3))
    network(m1, False, A, B)
    inner = pipeline(m2, False, B, out=D)
    knn_model(m3, False, D, "E")
    m4, m5 = inner.models.add(), inner.models.add()
    network(m4, False, B, C)
    network(m5, True, C, D)
    finish_with_softmax_cce(m5, "D")
    good_not_updatable(m1)
    bad(m2, "PIPELINE_UPDATABLE_POSITION")
    good_not_updatable(m3)
    good_not_updatable(m4)
    good(m5)
    bad(spec, "PIPELINE_UPDATABLE_POSITION")


def test_updatable_pipeline_with_non_updatable_models():
    """testUpdatablePipelineWithNonUpdatableModels: updatable pipeline, no updatable model."""
    spec, models = pipeline_of_four(True, False)
    for model in models:
        good_not_updatable(model)
    bad(spec, "PIPELINE_UPDATABLE_POSITION")


def test_updatable_pipeline_with_multiple_updatable_models():
    """testUpdatablePipelineWithMultipleUpdatableModels: two updatable networks, frozen k-NN."""
    spec = Model_pb2.Model()
    chain = pipeline(spec, True, A, "E")
    m1, m2, m3, m4 = (chain.models.add() for _ in range(4))
    network(m1, True, A, B)
    finish_with_softmax_cce(m1, "B")
    network(m2, False, B, C)
    network(m3, True, C, D)
    finish_with_softmax_cce(m3, "D")
    knn_model(m4, False, D, "E")
    good(m1)
    good_not_updatable(m2)
    good(m3)
    good_not_updatable(m4)
    bad(spec, "PIPELINE_UPDATABLE_POSITION")


def test_updatable_pipeline_with_one_updatable_model():
    """testUpdatablePipelineWithOneUpdatableModel: frozen networks, then an updatable k-NN."""
    spec, models = pipeline_of_four(True, True)
    for model in models[:3]:
        good_not_updatable(model)
    good(models[3])
    good(spec)


def test_updatable_pipeline_with_one_updatable_model_inside_pipeline_hierarchy():
    """testUpdatablePipelineWithOneUpdatableModelInsidePipelineHierarchy: the last model is an
    updatable pipeline whose last model is an updatable k-NN."""
    spec = Model_pb2.Model()
    outer = pipeline(spec, True, A, "E")
    m1, m2, m3 = (outer.models.add() for _ in range(3))
    network(m1, False, A, B)
    network(m2, False, B, C)
    inner = pipeline(m3, True, C, "E")
    m4, m5 = inner.models.add(), inner.models.add()
    network(m4, False, C, D)
    knn_model(m5, True, D, "E")
    good_not_updatable(m1)
    good_not_updatable(m2)
    good(m3)
    good_not_updatable(m4)
    good(m5)
    good(spec)


def test_valid_pipeline():
    """testValid_Pipeline: an updatable network in third place of an updatable pipeline; it
    has no loss at first, then gets softmax + CCE + SGD and validates on its own."""
    spec = Model_pb2.Model()
    chain = pipeline(spec, True, A, "E")
    m1, m2, m3, m4 = (chain.models.add() for _ in range(4))
    network(m1, False, A, B)
    network(m2, False, B, C)
    nn = network(m3, True, C, D)
    knn_model(m4, False, D, "E")
    good_not_updatable(m1)
    good_not_updatable(m2)
    bad(m3, "NO_LOSS")
    good_not_updatable(m4)
    bad(spec, "PIPELINE_UPDATABLE_POSITION")
    add_softmax(nn, "softmax", "D", "softmax_out")
    add_cce(m3, nn, "cce_loss", "softmax_out", "cce_target")
    add_sgd_setup(nn)
    good(m3)


# -- ParameterTests.cpp: Int64 / Double parameter rules ------------------------------------
# These use the basic updatable network without any loss layer. Apple validates the
# optimizer before it needs a loss, so the verdict comes from the parameter rule noted.


def test_mini_batch_size_out_of_allowed_range():
    """testMiniBatchSizeOutOfAllowedRange: batch 5 outside [10, 100]."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    add_lr(nn, SGD)
    add_batch(nn, SGD, 5, 10, 100)
    bad(spec, "PARAM_INVALID")


def test_mini_batch_size_out_of_allowed_set():
    """testMiniBatchSizeOutOfAllowedSet: batch 5 not in {10, 20, 30, 40}."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    add_lr(nn, SGD)
    add_batch(nn, SGD, 5, values=[10, 20, 30, 40])
    bad(spec, "PARAM_INVALID")


def test_learning_rate_out_of_allowed_range():
    """testLearningRateOutOfAllowedRange: learning rate 5 outside [0.1, 1]."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    add_lr(nn, SGD, 5.0, 0.1, 1.0)
    bad(spec, "PARAM_INVALID")


def test_momentum_out_of_allowed_range():
    """testMomentumOutOfAllowedRange: SGD with only a momentum (5 outside [0.1, 1]).

    Apple never range-checks momentum; its verdict comes from the missing learning rate."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    add_momentum(nn, 5.0, 0.1, 1.0)
    bad(spec, "OPTIMIZER_PARAM_MISSING")


@pytest.mark.parametrize("field", ["beta1", "beta2", "eps"])
def test_adam_parameter_out_of_allowed_range(field):
    """testBeta1OutOfAllowedRange / testBeta2OutOfAllowedRange / testEpsOutOfAllowedRange:
    Adam with only that parameter (5 outside [0.1, 1]); Apple's verdict comes from the missing
    learning rate, the test was written for the range."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    add_adam_param(nn, field, 5.0, 0.1, 1.0)
    bad(spec, "OPTIMIZER_PARAM_MISSING", "PARAM_INVALID")


def test_epochs_out_of_allowed_range():
    """testEpochsOutOfAllowedRange: epochs 100 outside [1, 50]."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    add_lr(nn, SGD)
    add_batch(nn, SGD, 20, 10, 100)
    add_epochs(nn, 100, 1, 50)
    bad(spec, "PARAM_INVALID")


def test_epochs_out_of_allowed_set():
    """testEpochsOutOfAllowedSet: epochs 100 not in {10, 20, 30, 40}."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    add_lr(nn, SGD)
    add_batch(nn, SGD, 20, 10, 100)
    add_epochs(nn, 100, values=[10, 20, 30, 40])
    bad(spec, "PARAM_INVALID")


# -- KNNValidatorTests.cpp, on the same k-NN specs marked updatable -------------------------


def knn_interface(spec):
    """k-NN interface of the C++ k-NN tests: 'input' (Float32 [4]) -> String 'output'."""
    spec.specificationVersion = 4
    spec.isUpdatable = True
    spec.description.metadata.shortDescription = "Testing nearest neighbor validator"
    add_array(spec.description.input, "input", shape=[4])
    add_string(spec.description.output, "output")
    spec.description.predictedFeatureName = "output"
    return spec.kNearestNeighborsClassifier


def knn_points(knn) -> None:
    index = knn.nearestNeighborsIndex
    index.numberOfDimensions = 4
    for point in (
        [0, 0, 0, 0],
        [1, 0, 0, 0],
        [2.1, 0, 0, 0],
        [0, 0.1, 0, 0],
        [1, 0, 0.1, 0],
        [2.1, 0, 0, 0.1],
    ):
        index.floatSamples.add().vector.extend(point)


def knn_string_labels(knn) -> None:
    knn.stringClassLabels.vector.extend(["zero"] * 6)


def knn_set_k(knn, k: int = 3) -> None:
    knn.numberOfNeighbors.defaultValue = k


def test_knn_validator_no_points():
    """testKNNValidatorNoPoints: labels but no examples."""
    spec = Model_pb2.Model()
    knn = knn_interface(spec)
    knn_set_k(knn)
    knn_string_labels(knn)
    bad(spec, "KNN_INVALID")


def test_knn_validator_no_k():
    """testKNNValidatorNoK: number of neighbours left at 0."""
    spec = Model_pb2.Model()
    knn = knn_interface(spec)
    knn_points(knn)
    knn_string_labels(knn)
    bad(spec, "KNN_INVALID")


def test_knn_validator_no_dimension():
    """testKNNValidatorNoDimension: numberOfDimensions 0 with 4-long examples."""
    spec = Model_pb2.Model()
    knn = knn_interface(spec)
    knn_set_k(knn)
    knn_points(knn)
    knn_string_labels(knn)
    knn.nearestNeighborsIndex.numberOfDimensions = 0
    bad(spec, "KNN_INVALID")


def test_knn_validator_no_labels():
    """testKNNValidatorNoLabels: examples without labels or a default label."""
    spec = Model_pb2.Model()
    knn = knn_interface(spec)
    knn_set_k(knn)
    knn_points(knn)
    bad(spec, "KNN_INVALID")


def test_knn_validator_wrong_number_of_labels():
    """testKNNValidatorWrongNumberOfLabels: 7 labels for 6 examples."""
    spec = Model_pb2.Model()
    knn = knn_interface(spec)
    knn_set_k(knn)
    knn_points(knn)
    knn_string_labels(knn)
    knn.stringClassLabels.vector.append("Idontwork")
    bad(spec, "KNN_INVALID")


def test_knn_validator_no_index():
    """testKNNValidatorNoIndex: no index type (nor weighting or distance)."""
    spec = Model_pb2.Model()
    knn = knn_interface(spec)
    knn_set_k(knn)
    knn_points(knn)
    knn_string_labels(knn)
    bad(spec, "KNN_INVALID")


def test_knn_validator_linear_index():
    """testKNNValidatorLinearIndex: linear index, Euclidean distance, uniform weighting."""
    spec = Model_pb2.Model()
    knn = knn_interface(spec)
    knn_set_k(knn)
    knn.uniformWeighting.SetInParent()
    knn.nearestNeighborsIndex.linearIndex.SetInParent()
    knn.nearestNeighborsIndex.squaredEuclideanDistance.SetInParent()
    knn_points(knn)
    knn_string_labels(knn)
    good(spec)


def test_knn_validator_single_kd_tree_index():
    """testKNNValidatorSingleKdTreeIndex: leaf size 0 and -1 refused, 30 accepted."""
    spec = Model_pb2.Model()
    knn = knn_interface(spec)
    knn_set_k(knn)
    knn.uniformWeighting.SetInParent()
    tree = knn.nearestNeighborsIndex.singleKdTreeIndex
    tree.SetInParent()
    knn.nearestNeighborsIndex.squaredEuclideanDistance.SetInParent()
    knn_points(knn)
    knn_string_labels(knn)
    bad(spec, "KNN_INVALID")
    tree.leafSize = -1
    bad(spec, "KNN_INVALID")
    tree.leafSize = 30
    good(spec)


def test_knn_validator_no_weighting_scheme():
    """testKNNValidatorNoWeightingScheme: no weighting scheme."""
    spec = Model_pb2.Model()
    knn = knn_interface(spec)
    knn_set_k(knn)
    knn.nearestNeighborsIndex.linearIndex.SetInParent()
    knn.nearestNeighborsIndex.squaredEuclideanDistance.SetInParent()
    knn_points(knn)
    knn_string_labels(knn)
    bad(spec, "KNN_INVALID")


def test_knn_validator_no_distance_function():
    """testKNNValidatorNoDistanceFunction: no distance function."""
    spec = Model_pb2.Model()
    knn = knn_interface(spec)
    knn_set_k(knn)
    knn.uniformWeighting.SetInParent()
    knn.nearestNeighborsIndex.linearIndex.SetInParent()
    knn_points(knn)
    knn_string_labels(knn)
    bad(spec, "KNN_INVALID")


def _kd_tree_knn(spec):
    knn = knn_interface(spec)
    knn_set_k(knn)
    knn.uniformWeighting.SetInParent()
    knn.nearestNeighborsIndex.squaredEuclideanDistance.SetInParent()
    knn.nearestNeighborsIndex.singleKdTreeIndex.leafSize = 30
    return knn


def test_knn_validator_good():
    """testKNNValidatorGood: a complete kd-tree k-NN."""
    spec = Model_pb2.Model()
    knn = _kd_tree_knn(spec)
    knn_points(knn)
    knn_string_labels(knn)
    good(spec)


def test_empty_knn_validation_good():
    """testEmptyKNNValidationGood: an empty k-NN needs a default label to fix its label type."""
    spec = Model_pb2.Model()
    knn = _kd_tree_knn(spec)
    bad(spec, "KNN_INVALID")
    knn.defaultStringLabel = "Default"
    good(spec)
    knn.ClearField("defaultStringLabel")
    bad(spec, "KNN_INVALID")


def test_label_type_mismatch_test():
    """testLabelTypeMismatchTest: a String default label with (empty) Int64 class labels."""
    spec = Model_pb2.Model()
    knn = _kd_tree_knn(spec)
    bad(spec, "KNN_INVALID")
    knn.defaultStringLabel = "Default"
    good(spec)
    knn.int64ClassLabels.SetInParent()
    bad(spec, "KNN_INVALID")


# -- the codes this suite relies on ----------------------------------------------------------


def test_codes_used_here_exist():
    """Every finding code this suite expects is declared in validator.CODES."""
    import pathlib
    import re

    source = pathlib.Path(__file__).read_text()
    used = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', source)) - {"A", "B", "C", "D", "E"}
    used -= {"ABS", "AVERAGE"}
    assert used <= set(CODES), sorted(used - set(CODES))
