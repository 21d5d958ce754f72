"""The random layers and categoricalDistribution: Core ML's generator is not public, so these
tests check what the proto defines (shapes, the distribution and its parameters) and what our
runtime promises (a seed reproduces its values), never a device's values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder

from updatable_coreml._proto import NeuralNetwork_pb2 as nn_pb
from updatable_coreml.errors import RuntimeLayerError
from updatable_coreml.runtime import layers  # noqa: F401  (registers the ops)
from updatable_coreml.runtime.model import load
from updatable_coreml.runtime.registry import forward_op

DISTRIBUTIONS = ("randomNormal", "randomUniform", "randomBernoulli")
FORMS = ("Like", "Static", "Dynamic")
#: how many standard errors a sample statistic may stray (a false alarm is < 1e-4 per check)
Z = 4.5


def layer_of(kind: str, seed: int = 7, inputs: int = 1, **fields) -> nn_pb.NeuralNetworkLayer:
    layer = nn_pb.NeuralNetworkLayer(
        name=f"my_{kind}", input=[f"x{i}" for i in range(inputs)], output=["y"]
    )
    params = getattr(layer, kind)
    params.SetInParent()
    params.seed = seed
    for name, value in fields.items():
        if name == "outputShape":
            params.outputShape.extend(value)
        else:
            setattr(params, name, value)
    return layer


def run(layer, *inputs: np.ndarray) -> np.ndarray:
    (out,) = forward_op(layer)(layer, [np.asarray(x) for x in inputs], lambda field: None)
    return out


def parameters(distribution: str) -> dict:
    return {
        "randomNormal": {"mean": 1.5, "stdDev": 2.0},
        "randomUniform": {"minVal": -1.0, "maxVal": 3.0},
        "randomBernoulli": {"prob": 0.3},
    }[distribution]


def sample(distribution: str, form: str, shape: tuple[int, ...], batch: int = 2, seed: int = 7):
    """Run the ``form`` layer so that each example's tensor has ``shape``."""
    kind = distribution + form
    fields = parameters(distribution)
    if form == "Static":
        return run(layer_of(kind, seed, inputs=0, outputShape=shape, **fields))
    layer = layer_of(kind, seed, **fields)
    if form == "Like":
        return run(layer, np.full((batch,) + shape, 9.0, dtype=np.float32))
    return run(layer, np.tile(np.asarray(shape, dtype=np.float32), (batch, 1)))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_shapes_per_form(distribution, form):
    """Like: the input's shape; Static: ``outputShape`` as a batch of one; Dynamic: the shape
    the input's values give, for each example."""
    out = sample(distribution, form, (3, 1, 4))
    assert out.shape == ((1,) if form == "Static" else (2,)) + (3, 1, 4)
    assert out.dtype == np.float32


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_a_seed_reproduces_and_another_seed_differs(distribution, form):
    first = sample(distribution, form, (50,), seed=3)
    np.testing.assert_array_equal(first, sample(distribution, form, (50,), seed=3))
    assert not np.array_equal(first, sample(distribution, form, (50,), seed=4))
    # a negative seed other than the builder's -1 is a seed like any other
    np.testing.assert_array_equal(
        sample(distribution, form, (50,), seed=-5), sample(distribution, form, (50,), seed=-5)
    )


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_seed_minus_one_draws_fresh_values(distribution):
    """coremltools' builder documents seed -1 as "random"."""
    first = sample(distribution, "Like", (200,), seed=-1)
    assert not np.array_equal(first, sample(distribution, "Like", (200,), seed=-1))


def test_example_zero_of_a_batch_gets_the_values_of_a_batch_of_one():
    one = sample("randomNormal", "Like", (4, 5), batch=1)
    three = sample("randomNormal", "Like", (4, 5), batch=3)
    np.testing.assert_array_equal(three[:1], one)
    assert not np.array_equal(three[1], three[0])


def moments_within(values: np.ndarray, mean: float, var: float, fourth: float) -> None:
    """Sample mean and variance within ``Z`` standard errors of the distribution's; ``fourth``
    is the distribution's fourth central moment (the variance of the sample variance is
    (mu4 - var**2) / n)."""
    n = values.size
    assert abs(values.mean() - mean) < Z * math.sqrt(var / n), (values.mean(), mean)
    assert abs(values.var() - var) < Z * math.sqrt((fourth - var**2) / n), (values.var(), var)


@pytest.mark.parametrize("form", FORMS)
def test_normal_statistics(form):
    values = sample("randomNormal", form, (100, 1000), batch=1).astype(np.float64)
    sigma2 = 2.0**2
    moments_within(values, 1.5, sigma2, 3 * sigma2**2)


@pytest.mark.parametrize("form", FORMS)
def test_uniform_statistics_and_bounds(form):
    values = sample("randomUniform", form, (100, 1000), batch=1).astype(np.float64)
    width = 4.0
    assert values.min() >= -1.0 and values.max() <= 3.0
    moments_within(values, 1.0, width**2 / 12, width**4 / 80)


@pytest.mark.parametrize("form", FORMS)
def test_bernoulli_statistics(form):
    values = sample("randomBernoulli", form, (100, 1000), batch=1)
    assert set(np.unique(values)) <= {0.0, 1.0}
    p = 0.3
    assert abs(values.mean() - p) < Z * math.sqrt(p * (1 - p) / values.size)


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_bernoulli_certain_outcomes(prob):
    layer = layer_of("randomBernoulliLike", prob=prob)
    np.testing.assert_array_equal(run(layer, np.zeros((2, 300))), np.full((2, 300), prob))


def test_statistics_along_the_batch_of_a_dynamic_layer():
    """Every example gets its own draws (not one tensor repeated)."""
    values = sample("randomUniform", "Dynamic", (4,), batch=20000)
    per_position = values.astype(np.float64)
    moments_within(per_position[:, 0], 1.0, 16 / 12, 256 / 80)
    assert np.unique(values[:, 0]).size > 19000


@pytest.mark.parametrize(
    "kind,fields,match",
    [
        ("randomUniformLike", {"minVal": 2.0, "maxVal": 1.0}, "minVal 2.0 is larger"),
        ("randomBernoulliLike", {"prob": 1.5}, r"prob 1\.5 is outside"),
        ("randomNormalLike", {"stdDev": -1.0}, "stdDev -1.0 is negative"),
    ],
)
def test_invalid_parameters_are_refused_naming_the_layer(kind, fields, match):
    with pytest.raises(RuntimeLayerError, match=f"'my_{kind}'.*{match}"):
        run(layer_of(kind, **fields), np.zeros((1, 3)))


def test_static_shape_must_be_given_and_bounded():
    with pytest.raises(RuntimeLayerError, match="'my_randomNormalStatic'.*outputShape is empty"):
        run(layer_of("randomNormalStatic", inputs=0))
    with pytest.raises(RuntimeLayerError, match="'my_randomUniformStatic'.*cannot fill"):
        run(layer_of("randomUniformStatic", inputs=0, outputShape=[1 << 20, 1 << 20]))


def test_a_dynamic_shape_must_be_whole_numbers():
    with pytest.raises(RuntimeLayerError, match="non-integer"):
        run(layer_of("randomNormalDynamic"), np.asarray([[2.5, 3.0]]))


# -- categoricalDistribution --------------------------------------------------------------------


def categorical(x: np.ndarray, samples: int, seed: int = 11, **fields) -> np.ndarray:
    layer = layer_of("categoricalDistribution", seed, numSamples=samples, **fields)
    return run(layer, x)


def frequencies_match(draws: np.ndarray, p: np.ndarray) -> None:
    """Class frequencies of ``draws`` (indices) within ``Z`` standard errors of ``p``."""
    n = draws.size
    counts = np.bincount(draws.astype(np.int64).ravel(), minlength=p.size)[: p.size] / n
    assert counts.sum() == pytest.approx(1.0)
    bound = Z * np.sqrt(p * (1 - p) / n) + 1e-12
    assert np.all(np.abs(counts - p) <= bound), (counts, p)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def test_categorical_shape_and_values():
    """``[D_1, ..., D_R]`` becomes ``[D_1, ..., D_(R-1), numSamples]``, class indices."""
    x = np.random.default_rng(0).normal(size=(2, 3, 1, 5))
    out = categorical(x, 7, isLogits=True)
    assert out.shape == (2, 3, 1, 7)
    assert out.dtype == np.float64
    assert set(np.unique(out)) <= set(range(5))
    np.testing.assert_array_equal(out, categorical(x, 7, isLogits=True))
    assert not np.array_equal(out, categorical(x, 7, seed=12, isLogits=True))


@pytest.mark.parametrize("temperature", [0.0, 1.0, 2.5, 0.4])
def test_categorical_logits_follow_the_softmax_at_the_temperature(temperature):
    """Temperature 0 is proto3's unset value and reads as the proto's default, 1.0."""
    logits = np.asarray([0.5, -1.0, 2.0, 0.0])
    draws = categorical(logits[None, None], 60000, isLogits=True, temperature=temperature).ravel()
    frequencies_match(draws, softmax(logits / (temperature or 1.0)))


def test_categorical_rows_are_independent_distributions():
    rows = np.asarray([[[3.0, 0.0, 0.0]], [[0.0, 0.0, 3.0]]])  # batch 2, tensor (1, 3)
    draws = categorical(rows, 40000, isLogits=True)
    frequencies_match(draws[0], softmax(rows[0, 0]))
    frequencies_match(draws[1], softmax(rows[1, 0]))


def test_categorical_probabilities_are_sampled_as_given():
    p = np.asarray([0.1, 0.0, 0.6, 0.3])
    draws = categorical(p[None, None], 60000, isLogits=False)
    assert not np.any(draws == 1)  # a zero probability is never drawn
    frequencies_match(draws.ravel(), p)


def test_categorical_probabilities_at_a_temperature_are_sharpened():
    """At temperature T the logits are log(p + eps) / T: weights p ** (1 / T)."""
    p = np.asarray([0.2, 0.5, 0.3])
    draws = categorical(p[None, None], 60000, isLogits=False, temperature=0.5)
    frequencies_match(draws.ravel(), p**2 / (p**2).sum())


def test_categorical_refusals():
    with pytest.raises(RuntimeLayerError, match="'my_categoricalDistribution'.*numSamples is 0"):
        categorical(np.zeros((1, 3)), 0)
    with pytest.raises(RuntimeLayerError, match="negative probabilities"):
        categorical(np.asarray([[0.5, -0.1]]), 3, isLogits=False)


# -- through a whole model ----------------------------------------------------------------------


def test_random_layers_in_a_model_built_by_coremltools():
    """coremltools' builder writes the layers; our runtime loads and runs the model."""
    b = NeuralNetworkBuilder(
        [("x", datatypes.Array(2, 3))], [("y", None), ("z", None)], disable_rank5_shape_mapping=True
    )
    b.add_random_uniform_like("noise", "x", "noise", minval=0.0, maxval=1.0, seed=5)
    b.add_random_normal_static("bias", "bias", output_shape=[2, 3], mean=0.0, stddev=1.0, seed=6)
    b.add_add_broadcastable("sum", ["noise", "bias"], "y")
    b.add_categorical_distribution("pick", "x", "z", num_samples=4, is_logits=True, seed=8)
    model = load(b.spec)
    x = np.zeros((2, 3), dtype=np.float32)
    first, second = model.predict({"x": x}), model.predict({"x": x})
    assert first["y"].shape == (2, 3) and first["z"].shape == (2, 4)
    np.testing.assert_array_equal(first["y"], second["y"])
    np.testing.assert_array_equal(first["z"], second["z"])
    noise = (
        first["y"]
        - run(layer_of("randomNormalStatic", 6, inputs=0, stdDev=1.0, outputShape=[2, 3]))[0]
    )
    assert noise.min() >= -1e-6 and noise.max() <= 1 + 1e-6


def test_torch_random_ops_converted_by_coremltools():
    """coremltools writes ``rand_like``, ``randn_like`` and ``randn`` as randomUniformStatic /
    randomNormalStatic with seed -1; the values cannot match torch's (nor a device's), so the
    check is the shapes and the distributions (fresh entropy: about 1e-5 false alarms)."""
    torch = pytest.importorskip("torch")
    import coremltools as ct

    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + torch.rand_like(x), torch.randn_like(x) * 0.5, torch.randn(2, 10000) + 3

    x = torch.full((1, 20000), 2.0)
    spec = ct.convert(
        torch.jit.trace(Noisy(), x, check_trace=False),
        inputs=[ct.TensorType(name="x", shape=x.shape)],
        convert_to="neuralnetwork",
    ).get_spec()
    kinds = [layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers]
    assert {"randomUniformStatic", "randomNormalStatic"} <= set(kinds), kinds
    out = load(spec).predict({"x": x.numpy()})
    uniform, normal, shifted = (out[feature.name] for feature in spec.description.output)
    assert uniform.shape == normal.shape == (1, 20000) and shifted.shape == (2, 10000)
    assert uniform.min() >= 2.0 and uniform.max() <= 3.0
    moments_within(uniform.astype(np.float64), 2.5, 1 / 12, 1 / 80)
    moments_within(normal.astype(np.float64), 0.0, 0.25, 3 * 0.25**2)
    moments_within(shifted.astype(np.float64), 3.0, 1.0, 3.0)
