"""Where our verdict once differed from Apple's released validator (issue 13 section 1).

Each case is a model on which ``updatable-coreml validate`` disagreed with Apple's validator
(coremltools tags 3.0 to 9.0, ``mlmodel/src/Validation/``), with the rule it now follows.
"""

from __future__ import annotations

from test_validator_apple import (
    I32,
    add_array,
    add_cce,
    add_dense,
    add_momentum,
    add_mse,
    add_sgd_setup,
    add_softmax,
    bad,
    basic_updatable,
    cce_softmax_model,
    good,
    knn_model,
    mse_model,
    network,
    pipeline,
)
from updatable_coreml._proto import Model_pb2
from updatable_coreml.validator import validate


def codes(spec) -> set[str]:
    return {f.code for f in validate(spec)}


def _layer(nn, name: str, src: str, dst: str):
    layer = nn.layers.add()
    layer.name = name
    layer.input.append(src)
    layer.output.append(dst)
    return layer


def _dense_softmax_cce(between=None):
    """A -> dense (updatable) -> [between] -> softmax -> CCE, usual SGD setup."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    src = "B"
    if between is not None:
        between(_layer(nn, "mid", "B", "mid_out"))
        src = "mid_out"
    add_softmax(nn, "softmax", src, "softmax_out")
    add_cce(spec, nn, "loss", "softmax_out", "label")
    add_sgd_setup(nn)
    return spec


def test_classic_reshape_blocks_gradients():
    """Apple: 'There is a layer (mid), which does not support backpropagation, between an
    updatable marked layer and the loss function.' (isLayerSupportedForBackprop, 3.0-9.0)."""

    def reshape(layer):
        layer.reshape.targetShape.extend([1, 1, 1])

    findings = bad(_dense_softmax_cce(reshape), "BACKPROP_BLOCKED")
    assert next(f for f in findings if f.code == "BACKPROP_BLOCKED").layer == "mid"


def test_uni_directional_lstm_passes_gradients():
    """uniDirectionalLSTM is in isLayerSupportedForBackprop from 5.0b1 on."""

    def lstm(layer):
        layer.output.extend(["h_out", "c_out"])  # Apple: an LSTM has exactly 3 outputs
        for kind in ("sigmoid", "tanh", "tanh"):  # Apple: exactly 3 activations
            getattr(layer.uniDirectionalLSTM.activations.add(), kind).SetInParent()
        layer.uniDirectionalLSTM.inputVectorSize = 1
        layer.uniDirectionalLSTM.outputVectorSize = 1
        for gate in ("inputGate", "forgetGate", "blockInput", "outputGate"):  # 1x1 matrices
            for matrix in ("WeightMatrix", "RecursionMatrix"):
                getattr(layer.uniDirectionalLSTM.weightParams, gate + matrix).floatValue.append(0.5)

    good(_dense_softmax_cce(lstm))


def test_parent_is_the_writer_at_that_point_in_the_layer_list():
    """A later ``copy`` rewrites blob B; the reshape's parent is still the updatable dense
    (NeuralNetworkValidatorGraph::insertNode), so Apple refuses the model."""
    spec = Model_pb2.Model()
    nn = basic_updatable(spec)
    _layer(nn, "rs", "B", "r").reshape.targetShape.extend([1, 1, 1])
    add_softmax(nn, "softmax", "r", "softmax_out")
    _layer(nn, "cp", "A", "B").copy.SetInParent()
    add_cce(spec, nn, "loss", "softmax_out", "label")
    add_sgd_setup(nn)
    findings = bad(spec, "BACKPROP_BLOCKED")
    assert next(f for f in findings if f.code == "BACKPROP_BLOCKED").layer == "rs"


def test_loss_reads_the_last_writer():
    """The loss layers join the graph after all layers: a copy that rewrites the softmax
    output makes the CCE input come from the copy, not a softmax."""
    spec = Model_pb2.Model()
    nn = cce_softmax_model(spec)
    _layer(nn, "cp", "B", "softmax_out").copy.SetInParent()
    add_sgd_setup(nn)
    bad(spec, "CCE_INPUT_NOT_SOFTMAX")


def test_training_inputs_compared_by_name_and_type_only():
    """Comparison.cpp isEquivalent: the optional flag, the description and a flexible shape
    of the same rank do not make a training input differ from the prediction input."""
    spec = Model_pb2.Model()
    nn = cce_softmax_model(spec)
    add_sgd_setup(nn)
    training = spec.description.trainingInput[0]
    training.shortDescription = "the image, for training"
    training.type.isOptional = True
    training.type.multiArrayType.shapeRange.sizeRanges.add().lowerBound = 1
    training.type.multiArrayType.shapeRange.sizeRanges.add().lowerBound = 1
    training.type.multiArrayType.shapeRange.sizeRanges.add().lowerBound = 1
    good(spec)
    training.type.multiArrayType.dataType = I32
    bad(spec, "TRAINING_INPUTS_MISSING")


def test_knn_training_label_in_a_pipeline_is_not_checked_by_apple():
    """Apple checks no k-NN training input (KNearestNeighborsClassifierValidator.cpp,
    PipelineValidator.cpp): a MultiArray or Int64 label is valid, with our warning."""
    for make_label in (
        lambda f: add_array(f, "E", 1, I32),
        lambda f: f.add().type.int64Type.SetInParent(),
    ):
        spec = Model_pb2.Model()
        chain = pipeline(spec, True, ("D", 3), "E")
        knn_model(chain.models.add(), True, ("D", 3), "E")
        add_array(spec.description.trainingInput, "D", 3)
        make_label(spec.description.trainingInput)
        spec.description.trainingInput[-1].name = "E"
        spec.description.predictedFeatureName = "E"
        findings = good(spec)
        assert {f.code for f in findings} == {"KNN_TRAINING_LABEL_TYPE"}


def test_allowed_set_is_read_only_up_to_the_default():
    """validateInt64Parameter stops at the default: a non-positive value after it passes."""
    spec = Model_pb2.Model()
    nn = cce_softmax_model(spec)
    add_sgd_setup(nn)
    batch = nn.updateParams.optimizer.sgdOptimizer.miniBatchSize
    batch.defaultValue = 10
    batch.set.values.extend([5, 10, -1])
    good(spec)
    del batch.set.values[:]
    batch.set.values.extend([-1, 10])
    bad(spec, "PARAM_INVALID")


def test_sgd_momentum_is_not_checked_by_apple():
    """validateOptimizer never reads SGD momentum: valid, with our warning."""
    spec = Model_pb2.Model()
    nn = cce_softmax_model(spec)
    add_sgd_setup(nn)
    add_momentum(nn, 5.0, 0.1, 1.0)
    findings = good(spec)
    assert [f.code for f in findings].count("MOMENTUM_OUT_OF_RANGE") == 2


def test_fp16_frozen_weights_warn_quantized_do_not():
    spec = Model_pb2.Model()
    nn = network(spec, True, ("A", 1), ("B", 1), depth=2)
    nn.layers[0].isUpdatable = False
    frozen = nn.layers[0].innerProduct
    frozen.weights.isUpdatable = frozen.bias.isUpdatable = False
    add_softmax(nn, "softmax", "B", "softmax_out")
    add_cce(spec, nn, "loss", "softmax_out", "label")
    add_sgd_setup(nn)
    assert "FP16_WEIGHTS" not in {f.code for f in good(spec)}
    del frozen.weights.floatValue[:]
    frozen.weights.float16Value = b"\x00\x3c"
    bad(spec, "LAYER_PARAMS")  # Apple: weights and bias of one precision
    del frozen.bias.floatValue[:]
    frozen.bias.float16Value = b"\x00\x3c"
    findings = good(spec)
    assert [f.layer for f in findings if f.code == "FP16_WEIGHTS"] == [nn.layers[0].name]
    frozen.weights.ClearField("float16Value")
    frozen.bias.ClearField("float16Value")
    frozen.bias.floatValue.append(1.0)
    frozen.weights.rawValue = b"\x01"
    frozen.weights.quantization.numberOfBits = 8
    frozen.weights.quantization.linearQuantization.scale.append(1.0)
    frozen.weights.quantization.linearQuantization.bias.append(0.0)
    assert "FP16_WEIGHTS" not in codes(spec)
    nn.layers[1].innerProduct.weights.float16Value = b"\x00\x3c"
    del nn.layers[1].innerProduct.weights.floatValue[:]
    bad(spec, "WEIGHTS_NOT_FP32")


def test_inner_product_feeding_mse_warns_only_when_frozen_after_an_updatable_layer():
    """#1983: frozen innerProduct -> MSE after an updatable layer failed to compile; an
    updatable innerProduct feeding MSE trains in public projects."""
    spec = Model_pb2.Model()
    nn = mse_model(spec)
    add_sgd_setup(nn)
    findings = good(spec)
    assert "INNER_PRODUCT_FEEDS_MSE" not in {f.code for f in findings}
    assert "MSE_LOSS_VALUE" in {f.code for f in findings}
    spec = Model_pb2.Model()
    nn = network(spec, True, ("A", 1), ("B", 1), depth=2)
    last = nn.layers[1]
    last.isUpdatable = last.innerProduct.weights.isUpdatable = (
        last.innerProduct.bias.isUpdatable
    ) = False
    add_mse(spec, nn, "loss", "B", "target")
    add_sgd_setup(nn)
    findings = good(spec)
    assert [f.layer for f in findings if f.code == "INNER_PRODUCT_FEEDS_MSE"] == [last.name]


def _two_convs(spec_version: int):
    spec = Model_pb2.Model()
    add_array(spec.description.input, "A", shape=[1, 2, 2])
    add_array(spec.description.output, "p", shape=[1])
    spec.specificationVersion = spec_version
    spec.isUpdatable = True
    nn = spec.neuralNetwork
    for i, (src, dst) in enumerate((("A", "c0"), ("c0", "c1"))):
        layer = _layer(nn, f"conv{i}", src, dst)
        layer.isUpdatable = True
        conv = layer.convolution
        conv.outputChannels = conv.kernelChannels = 1
        conv.kernelSize.extend([1, 1])
        conv.valid.SetInParent()
        conv.weights.floatValue.append(1.0)
        conv.weights.isUpdatable = True
    add_softmax(nn, "softmax", "c1", "p")
    add_cce(spec, nn, "loss", "p", "label")
    add_sgd_setup(nn)
    spec.description.trainingInput.add().CopyFrom(spec.description.input[0])
    return spec


def test_stacked_updatable_convolutions_warn_when_ios13_is_allowed():
    assert [f.layer for f in good(_two_convs(4)) if f.code == "STACKED_UPDATABLE_CONV"] == ["conv1"]
    assert "STACKED_UPDATABLE_CONV" not in {f.code for f in good(_two_convs(5))}


def test_rank_above_5_warns():
    spec = Model_pb2.Model()
    nn = cce_softmax_model(spec)
    add_sgd_setup(nn)
    nn.layers[0].outputTensor.add().rank = 6
    assert "RANK_ABOVE_5" in {f.code for f in good(spec)}


def _torch_style_classifier(input_shape, output_shape=()):
    """coremltools' updatable torch classifier shape: exact mapping, a rank-2 input, an
    updatable innerProduct and a classic softmax appended to its rank-2 output."""
    spec = Model_pb2.Model()
    add_array(spec.description.input, "A", shape=list(input_shape))
    add_array(spec.description.output, "p", shape=list(output_shape))
    spec.specificationVersion = 4
    spec.isUpdatable = True
    nn = spec.neuralNetwork
    nn.arrayInputShapeMapping = 1  # EXACT_ARRAY_MAPPING
    add_dense(nn, "fc", "A", "logits", updatable=True)
    add_softmax(nn, "softmax", "logits", "p")
    add_cce(spec, nn, "loss", "p", "label")
    add_sgd_setup(nn)
    spec.description.trainingInput.add().CopyFrom(spec.description.input[0])
    return spec


def test_classic_softmax_on_rank_2_blob_is_flagged():
    """Apple's validator cannot see the rank of 'logits' and passes the model; the proto
    requires rank >= 3 for a classic softmax (issue 14): a warning with the fix."""
    findings = good(_torch_style_classifier([1, 1]))
    assert [f.layer for f in findings if f.code == "CLASSIC_SOFTMAX_RANK"] == ["softmax"]
    assert "CLASSIC_SOFTMAX_RANK" not in codes(_torch_style_classifier([1, 1, 1]))


def test_classic_softmax_rank_known_to_apple_is_an_error():
    """With the output declared rank 1, Apple knows the softmax output rank and refuses."""
    bad(_torch_style_classifier([1, 1, 1], [1]), "LAYER_RANK")
