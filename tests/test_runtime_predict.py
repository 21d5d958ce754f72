"""Prediction: feature forms (single/batch), images and preprocessing, classifiers, pipelines."""

from __future__ import annotations

import numpy as np
import pytest

from updatable_coreml import runtime
from updatable_coreml._proto import FeatureTypes_pb2, Model_pb2
from updatable_coreml.errors import ConfigError, ModelFileError

RNG = np.random.default_rng(5)
ColorSpace = FeatureTypes_pb2.ImageFeatureType


def add_array(features, name: str, *shape: int):
    feature = features.add(name=name)
    feature.type.multiArrayType.shape.extend(shape)
    feature.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    return feature


def add_dense(nn, name, source, target, w, b):
    layer = nn.layers.add(name=name, input=[source], output=[target])
    layer.innerProduct.outputChannels, layer.innerProduct.inputChannels = w.shape
    layer.innerProduct.hasBias = True
    layer.innerProduct.weights.floatValue.extend(w.ravel())
    layer.innerProduct.bias.floatValue.extend(b)


def classifier_spec(w, b, labels):
    spec = Model_pb2.Model(specificationVersion=4)
    add_array(spec.description.input, "x", w.shape[1])
    spec.description.output.add(name="probs").type.dictionaryType.int64KeyType.SetInParent()
    spec.description.output.add(name="label").type.int64Type.SetInParent()
    spec.description.predictedFeatureName = "label"
    spec.description.predictedProbabilitiesName = "probs"
    nn = spec.neuralNetworkClassifier
    add_dense(nn, "dense", "x", "logits", w, b)
    nn.layers.add(name="softmax", input=["logits"], output=["probs"]).softmax.SetInParent()
    nn.int64ClassLabels.vector.extend(labels)
    return spec


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_classifier_single_example_and_batch():
    w, b = RNG.normal(size=(3, 4)), RNG.normal(size=3)
    model = runtime.load(classifier_spec(w, b, [10, 20, 30]))
    x = RNG.normal(size=(5, 4))
    expected = softmax(x @ w.T + b)
    one = model.predict({"x": x[0]})
    assert one["label"] == [10, 20, 30][expected[0].argmax()] and isinstance(one["label"], int)
    assert one["probs"] == pytest.approx(dict(zip([10, 20, 30], expected[0])), abs=1e-6)
    batch = model.predict({"x": x})
    assert batch["label"].tolist() == [[10, 20, 30][i] for i in expected.argmax(axis=1)]
    assert len(batch["probs"]) == 5
    assert batch["probs"][3] == pytest.approx(dict(zip([10, 20, 30], expected[3])), abs=1e-6)


def test_missing_and_mixed_inputs_are_config_errors():
    spec = classifier_spec(RNG.normal(size=(2, 3)), np.zeros(2), [0, 1])
    add_array(spec.description.input, "y", 3)
    model = runtime.load(spec)
    with pytest.raises(ConfigError, match="missing input feature\\(s\\) 'y'"):
        model.predict({"x": np.zeros(3)})
    with pytest.raises(ConfigError, match="one example or every input as a batch"):
        model.predict({"x": np.zeros(3), "y": np.zeros((2, 3))})


def image_spec(color_space, *, width=4, height=3, scale=1 / 255, biases=(0.1, 0.2, 0.3, 0.4)):
    """image -> 1x1 identity convolution -> output (C, H, W), with an image scaler."""
    channels = 1 if color_space == ColorSpace.GRAYSCALE else 3
    spec = Model_pb2.Model(specificationVersion=4)
    image = spec.description.input.add(name="image").type.imageType
    image.width, image.height, image.colorSpace = width, height, color_space
    add_array(spec.description.output, "out", channels, height, width)
    nn = spec.neuralNetwork
    layer = nn.layers.add(name="identity", input=["image"], output=["out"])
    conv = layer.convolution
    conv.outputChannels, conv.kernelChannels = channels, channels
    conv.kernelSize.extend([1, 1])
    conv.weights.floatValue.extend(np.eye(channels).ravel())
    scaler = nn.preprocessing.add(featureName="image").scaler
    scaler.channelScale = scale
    scaler.redBias, scaler.greenBias, scaler.blueBias, scaler.grayBias = biases
    return spec


@pytest.mark.parametrize("space", [ColorSpace.RGB, ColorSpace.BGR])
def test_color_image_scaler_and_channel_order(space):
    model = runtime.load(image_spec(space), dtype=np.float64)
    rgb = RNG.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    out = model.predict({"image": rgb})["out"]
    order = [0, 1, 2] if space == ColorSpace.RGB else [2, 1, 0]
    biases = np.array([0.1, 0.2, 0.3])[order]  # red, green, blue biases in the model's order
    expected = rgb.transpose(2, 0, 1)[order] / 255 + biases[:, None, None]
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_pil_images_single_and_batch_and_grayscale():
    image_module = pytest.importorskip("PIL.Image")
    pixels = RNG.integers(0, 256, size=(2, 3, 4, 3), dtype=np.uint8)
    pictures = [image_module.fromarray(p) for p in pixels]
    model = runtime.load(image_spec(ColorSpace.RGB, scale=1.0, biases=(0, 0, 0, 0)))
    np.testing.assert_array_equal(
        model.predict({"image": pictures[0]})["out"], pixels[0].transpose(2, 0, 1)
    )
    batch = model.predict({"image": pictures})["out"]
    np.testing.assert_array_equal(batch, pixels.transpose(0, 3, 1, 2))
    gray = runtime.load(image_spec(ColorSpace.GRAYSCALE, scale=2.0))
    plane = RNG.integers(0, 256, size=(3, 4), dtype=np.uint8)
    np.testing.assert_allclose(
        gray.predict({"image": image_module.fromarray(plane)})["out"],
        plane[None] * 2.0 + 0.4,
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        gray.predict({"image": plane[:, :, None]})["out"], plane[None] * 2.0 + 0.4, rtol=1e-6
    )


def test_wrong_image_size_is_refused_clearly():
    model = runtime.load(image_spec(ColorSpace.RGB))
    with pytest.raises(ConfigError, match="is 5x3 \\(WxH\\), the model expects 4x3"):
        model.predict({"image": np.zeros((3, 5, 3), dtype=np.uint8)})


def test_mean_image_preprocessing():
    spec = image_spec(ColorSpace.RGB)
    mean = RNG.normal(size=(3, 3, 4))
    spec.neuralNetwork.preprocessing[0].meanImage.meanImage.extend(mean.ravel())
    rgb = RNG.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    out = runtime.load(spec, dtype=np.float64).predict({"image": rgb})["out"]
    np.testing.assert_allclose(out, rgb.transpose(2, 0, 1) - mean, atol=1e-5)


def test_pipeline_feeds_outputs_by_name():
    w1, b1 = RNG.normal(size=(5, 4)), RNG.normal(size=5)
    w2, b2 = RNG.normal(size=(2, 5)), RNG.normal(size=2)
    spec = Model_pb2.Model(specificationVersion=4)
    add_array(spec.description.input, "x", 4)
    add_array(spec.description.output, "out", 2)
    first, second = spec.pipeline.models.add(), spec.pipeline.models.add()
    for sub, source, target, w, b in (
        (first, "x", "feat", w1, b1),
        (second, "feat", "out", w2, b2),
    ):
        sub.specificationVersion = 4
        add_array(sub.description.input, source, w.shape[1])
        add_array(sub.description.output, target, w.shape[0])
        add_dense(sub.neuralNetwork, f"dense_{target}", source, target, w, b)
    x = RNG.normal(size=(3, 4))
    out = runtime.load(spec, dtype=np.float64).predict({"x": x})
    np.testing.assert_allclose(out["out"], (x @ w1.T + b1) @ w2.T + b2, rtol=1e-6)
    assert set(out) == {"out"}


def test_unsupported_model_type_and_dtype():
    spec = Model_pb2.Model(specificationVersion=4)
    spec.glmRegressor.SetInParent()
    with pytest.raises(ModelFileError, match="'glmRegressor' is not supported"):
        runtime.load(spec)
    with pytest.raises(ConfigError, match="float32 or float64"):
        runtime.load(classifier_spec(np.zeros((2, 2)), np.zeros(2), [0, 1]), dtype=np.int32)


def test_load_from_file_and_save_round_trip(tmp_path):
    spec = classifier_spec(RNG.normal(size=(3, 4)), RNG.normal(size=3), [1, 2, 3])
    path = tmp_path / "m.mlmodel"
    runtime.load(spec).save(path)
    x = RNG.normal(size=(2, 4))
    assert (
        runtime.load(path).predict({"x": x})["label"].tolist()
        == runtime.load(spec).predict({"x": x})["label"].tolist()
    )
