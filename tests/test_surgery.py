"""make_updatable: the seed article's make_nn.py flow, proven on a SqueezeNet-like model."""

import numpy as np
import pytest

from models import squeezenet_like
from updatable_coreml import inspect, make_updatable, validate
from updatable_coreml.errors import ConfigError, NotUpdatableError
from updatable_coreml.training import TrainingConfig
from updatable_coreml.validator import is_valid


@pytest.fixture(scope="module")
def squeezenet():
    return squeezenet_like(num_classes=3)


def _layer(spec, name):
    return next(lyr for lyr in spec.neuralNetworkClassifier.layers if lyr.name == name)


def test_make_nn_flow_expands_head_and_inspect_shows_exact_parameters(squeezenet, tmp_path):
    out = tmp_path / "Updatable.mlmodel"
    spec = make_updatable(
        squeezenet,
        out,
        layers=["fc"],
        loss="cce",
        optimizer="sgd",
        lr=0.001,
        batch_size=8,
        allowed_batch_sizes=[1, 2, 8, 16],
        epochs=10,
        allowed_epochs=[1, 10, 50],
        expand_classes=10,
    )
    assert is_valid(validate(out))
    info = inspect(out)
    assert info.update_parameters == [
        "loss: cce (layer 'loss', input 'classLabelProbs', target 'classLabelProbs_true')",
        "optimizer: sgd  learning rate 0.001 (allowed 0..1)  momentum 0 (allowed 0..1)",
        "batch size: 8 (allowed {1, 2, 8, 16})",
        "epochs: 10 (allowed {1, 10, 50})",
        "shuffle: True",
    ]
    assert info.class_labels == ["class0", "class1", "class2"] + [f"user{i}" for i in range(7)]
    assert [t.split(":")[0] for t in info.training_inputs] == ["image", "classLabel"]
    fc = _layer(spec, "fc")
    weights = np.asarray(fc.innerProduct.weights.floatValue).reshape(10, 16)
    original = np.asarray(_layer(squeezenet, "fc").innerProduct.weights.floatValue).reshape(3, 16)
    np.testing.assert_array_equal(weights[:3], original)
    assert not weights[3:].any() and not np.asarray(fc.innerProduct.bias.floatValue)[3:].any()
    assert (
        fc.isUpdatable and fc.innerProduct.weights.isUpdatable and fc.innerProduct.bias.isUpdatable
    )
    assert [lyr.name for lyr in info.layers if lyr.updatable] == ["fc"]
    assert [lyr.name for lyr in info.layers if lyr.on_backprop_path] == ["fc", "softmax"]


def test_input_model_is_untouched(squeezenet, tmp_path):
    src = tmp_path / "in.mlmodel"
    src.write_bytes(squeezenet.SerializeToString())
    before = src.read_bytes()
    make_updatable(src, tmp_path / "out.mlmodel", layers=["conv10", "fc"])
    assert src.read_bytes() == before
    with pytest.raises(Exception, match="overwrite the input"):
        make_updatable(src, src, layers=["fc"])
    assert src.read_bytes() == before


def test_conv10_behind_concat_trains_but_fire_layers_are_refused_naming_the_concat(squeezenet):
    spec = make_updatable(squeezenet, layers=["conv10"], seed=1)
    assert is_valid(validate(spec))
    with pytest.raises(NotUpdatableError, match="fire2/concat"):
        make_updatable(squeezenet, layers=["fire2/expand3x3"])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(layers=["relu1"]), NotUpdatableError, "only convolution and innerProduct"),
        (dict(layers=["missing"]), NotUpdatableError, "no layer named 'missing'"),
        (dict(layers=[]), ConfigError, "at least one layer"),
        (dict(layers=["fc"], expand_classes=2), ConfigError, "must exceed"),
        (dict(layers=["fc"], optimizer="rmsprop"), ConfigError, "unknown optimizer"),
        (dict(layers=["fc"], optimizer="sgd", beta1=0.9), ConfigError, "belong to Adam"),
        (dict(layers=["fc"], loss="mse", loss_input="nowhere"), NotUpdatableError, "not produced"),
    ],
)
def test_refusals(squeezenet, kwargs, error, message):
    with pytest.raises(error, match=message):
        make_updatable(squeezenet, **kwargs)


def test_reinit_is_seeded_and_adam_is_written(squeezenet):
    a = make_updatable(
        squeezenet,
        layers=["fc"],
        reinit=True,
        reinit_seed=3,
        optimizer="adam",
        lr=0.01,
        beta1=0.8,
        expand_classes=5,
    )
    b = make_updatable(
        squeezenet,
        layers=["fc"],
        reinit=True,
        reinit_seed=3,
        optimizer="adam",
        lr=0.01,
        beta1=0.8,
        expand_classes=5,
    )
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    w = np.asarray(_layer(a, "fc").innerProduct.weights.floatValue)
    assert np.abs(w).max() <= np.sqrt(6 / 16) and np.abs(w).max() > 0
    config = TrainingConfig.from_spec(a)
    assert config.optimizer.beta1.default == 0.8 and config.optimizer.learning_rate.default == 0.01


def test_fp16_weights_are_widened_and_quantized_refused(squeezenet):
    spec = type(squeezenet)()
    spec.CopyFrom(squeezenet)
    fc = _layer(spec, "fc").innerProduct
    values = np.asarray(fc.weights.floatValue, dtype=np.float16)
    del fc.weights.floatValue[:]
    fc.weights.float16Value = values.tobytes()
    out = make_updatable(spec, layers=["fc"])
    np.testing.assert_array_equal(
        np.asarray(_layer(out, "fc").innerProduct.weights.floatValue), values.astype(np.float32)
    )
    fc.weights.quantization.numberOfBits = 8
    with pytest.raises(NotUpdatableError, match="quantized"):
        make_updatable(spec, layers=["fc"])


def test_regressor_gets_its_predicted_feature_name():
    """coremltools' builder in regressor mode leaves predictedFeatureName empty, which Core ML
    refuses ("Specification is missing regressor predictedFeatureName."): make-updatable names
    the single output."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    builder = NeuralNetworkBuilder(
        [("x", datatypes.Array(3))], [("y", datatypes.Array(1))], mode="regressor"
    )
    builder.add_inner_product(
        "fc", np.ones((1, 3), np.float32), np.zeros(1, np.float32), 3, 1, True, "x", "y"
    )
    assert builder.spec.description.predictedFeatureName == ""
    assert "REGRESSOR_PREDICTED_FEATURE" in {f.code for f in validate(builder.spec)}
    spec = make_updatable(builder.spec, layers=["fc"], loss="mse")
    assert spec.description.predictedFeatureName == "y"
    assert is_valid(validate(spec))
