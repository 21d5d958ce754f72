import pytest

from updatable_coreml._proto import Model_pb2
from updatable_coreml.errors import ConfigError
from updatable_coreml.training import (
    SGD,
    Adam,
    FloatParam,
    IntParam,
    Loss,
    TrainingConfig,
    apply_training_config,
)


def cce(**kw):
    return TrainingConfig(Loss("cce", "probs"), **kw)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(optimizer=lambda: SGD(learning_rate=1.5)), "learning rate must lie in"),
        (dict(optimizer=lambda: SGD(learning_rate=-0.1)), "learning rate must lie in"),
        (dict(optimizer=lambda: SGD(momentum=1.2)), "momentum must lie in"),
        (dict(optimizer=lambda: Adam(eps=0.0)), "eps must be > 0"),
        (dict(optimizer=lambda: Adam(beta1=2.0)), "beta1 must lie in"),
        (dict(batch_size=8, allowed_batch_sizes=(1, 2, 16)), "not in its allowed set"),
        (dict(batch_size=0), "batch size must be >= 1"),
        (dict(epochs=0), "epochs must be >= 1"),
        (dict(epochs=5, allowed_epochs=range(10, 20)), "outside its allowed range"),
        (dict(seed=-1), "seed must be a non-negative"),
        (dict(batch_size=2.5), "batch size must be an integer"),
    ],
)
def test_bad_values_raise_at_construction(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cce(**{k: v() if callable(v) else v for k, v in kwargs.items()})


def test_bad_loss_kind_and_lr_range():
    with pytest.raises(ConfigError, match="unknown loss"):
        Loss("bce", "probs")
    with pytest.raises(ConfigError, match="outside its allowed range"):
        SGD(FloatParam(0.5, (0.0, 0.1)))


def test_defaults_and_round_trip_through_a_spec():
    config = cce(
        optimizer=Adam(0.002, 0.8, 0.99, 1e-7),
        batch_size=16,
        allowed_batch_sizes=[16, 1, 4],
        epochs=5,
        allowed_epochs=range(1, 51),
        shuffle=False,
        seed=7,
    )
    spec = Model_pb2.Model()
    spec.specificationVersion = 1
    spec.neuralNetwork.SetInParent()
    apply_training_config(spec, config)
    assert spec.isUpdatable and spec.specificationVersion == 4
    back = TrainingConfig.from_spec(spec)
    assert back.loss == config.loss
    assert back.optimizer == config.optimizer
    assert back.batch_size.values == (1, 4, 16)
    assert back.epochs.range == (1, 50)
    assert (back.shuffle, back.seed) == (False, 7)
    params = spec.neuralNetwork.updateParams
    assert params.optimizer.adamOptimizer.learningRate.range.maxValue == 1.0


def test_default_allowed_values():
    config = cce(batch_size=4, epochs=3)
    assert config.batch_size == IntParam(4, values=(4,), name="batch size")
    assert config.epochs.range == (1, 1000)
    assert config.epochs.allows(1000) and not config.epochs.allows(1001)
    assert config.loss.target == "probs_true"


def test_training_inputs_for_plain_cce_and_mse():
    for kind, dtype, shape in (("cce", "INT32", [1]), ("mse", "FLOAT32", [1])):
        spec = Model_pb2.Model()
        spec.specificationVersion = 4
        x = spec.description.input.add()
        x.name = "x"
        x.type.multiArrayType.shape.append(3)
        spec.neuralNetwork.SetInParent()
        apply_training_config(spec, TrainingConfig(Loss(kind, "y")))
        names = [t.name for t in spec.description.trainingInput]
        assert names == ["x", "y_true"]
        target = spec.description.trainingInput[1].type.multiArrayType
        assert type(target).ArrayDataType.Name(target.dataType) == dtype
        assert list(target.shape) == shape
