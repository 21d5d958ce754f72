"""Frozen weights stored quantized (``compress_frozen``) and the runtime reading them.

Decoding is checked against values computed by hand for each storage kind NeuralNetwork.proto
defines (linear per tensor and per channel, with and without bias, a deconvolution's channel
axis, lookup tables at 8, 4, 2 and 1 bits packed most significant bit first, int8RawValue),
and against coremltools' own quantizer and dequantizer. Exports: frozen weights ~4x smaller,
updatable layers byte-identical, predictions within the documented bound of the fp32 export;
weights on the int8 grid compress losslessly, so prediction and update parity with the source
framework stay at 1e-4.
"""

from __future__ import annotations

import json
import subprocess

import keras
import numpy as np
import pytest

from keras_helpers import max_abs_diff, randomize, relative_diff, to_channel_first
from test_cli import CLI, cli_env
from updatable_coreml._proto import NeuralNetwork_pb2
from updatable_coreml.compression import (
    compress_frozen,
    linear_codes,
    lookup_table,
    pack_codes,
)
from updatable_coreml.errors import ConfigError, RuntimeLayerError
from updatable_coreml.exporters.keras import export_keras
from updatable_coreml.runtime import load
from updatable_coreml.runtime.weights import decode_weights
from updatable_coreml.spec_io import load_spec, neural_network
from updatable_coreml.validator import is_valid, validate

L = keras.layers

#: Documented bound (docs/compression.md) on the largest change of a softmax output from
#: int8 on small random models; the measured values are far below it.
INT8_PROBABILITY_BOUND = 0.02


def _layer(kind: str, **fields):
    layer = NeuralNetwork_pb2.NeuralNetworkLayer(name="l")
    body = getattr(layer, kind)
    for key, value in fields.items():
        if isinstance(value, list):
            getattr(body, key).extend(value)
        else:
            setattr(body, key, value)
    return layer


def _quantized(raw: bytes, bits: int, *, scale=None, bias=None, table=None, int8=False):
    params = NeuralNetwork_pb2.WeightParams()
    if int8:
        params.int8RawValue = raw
    else:
        params.rawValue = raw
    params.quantization.numberOfBits = bits
    if table is not None:
        params.quantization.lookupTableQuantization.floatValue.extend(table)
    else:
        params.quantization.linearQuantization.scale.extend(scale)
        params.quantization.linearQuantization.bias.extend(bias or [])
    return params


# -- decoding, by hand -----------------------------------------------------------------------


def test_linear_per_channel_by_hand():
    # innerProduct 2 outputs x 3 inputs: row 0 scale 0.5 bias 1, row 1 scale 2 bias -1
    params = _quantized(bytes([0, 1, 255, 3, 4, 5]), 8, scale=[0.5, 2.0], bias=[1.0, -1.0])
    layer = _layer("innerProduct", inputChannels=3, outputChannels=2)
    got = decode_weights(params, "l", layer, "weights")
    np.testing.assert_array_equal(got, [1.0, 1.5, 128.5, 5.0, 7.0, 9.0])


def test_linear_per_tensor_without_bias_by_hand():
    # Apple allows an empty bias (QuantizationValidationUtils.cpp): it means 0
    params = _quantized(bytes([0, 2, 200]), 8, scale=[0.25])
    np.testing.assert_array_equal(decode_weights(params, "l"), [0.0, 0.5, 50.0])


def test_deconvolution_channels_are_the_second_axis_by_hand():
    # [kernelChannels=2, outputChannels=2, 1, 1]; scales per output channel (axis 1)
    layer = _layer(
        "convolution",
        outputChannels=2,
        kernelChannels=2,
        kernelSize=[1, 1],
        isDeconvolution=True,
        nGroups=1,
    )
    params = _quantized(bytes([1, 1, 2, 2]), 8, scale=[10.0, 100.0], bias=[0.0, 0.5])
    got = decode_weights(params, "l", layer, "weights")
    np.testing.assert_array_equal(got, [10.0, 100.5, 20.0, 200.5])


@pytest.mark.parametrize(
    "bits, raw, codes",
    [
        (4, bytes([0x1F, 0xA0]), [1, 15, 10]),  # 0001 1111 1010 (0000 padding)
        (2, bytes([0b11100100]), [3, 2, 1]),  # 11 10 01 (00 padding)
        (1, bytes([0b10100000]), [1, 0, 1]),
    ],
)
def test_lookup_table_sub_byte_codes_by_hand(bits, raw, codes):
    table = [float(10 * i) for i in range(1 << bits)]
    params = _quantized(raw, bits, table=table)
    layer = _layer("innerProduct", inputChannels=3, outputChannels=1)
    got = decode_weights(params, "l", layer, "weights")  # the layer says: 3 values, not 4+
    np.testing.assert_array_equal(got, [10.0 * c for c in codes])


def test_lookup_table_8_bit_by_hand():
    table = [float(-i) for i in range(256)]
    params = _quantized(bytes([0, 7, 255]), 8, table=table)
    np.testing.assert_array_equal(decode_weights(params, "l"), [0.0, -7.0, -255.0])


def test_int8_raw_value_by_hand():
    params = _quantized(np.array([-128, 0, 127], np.int8).tobytes(), 8, scale=[0.5], int8=True)
    np.testing.assert_array_equal(decode_weights(params, "l"), [-64.0, 0.0, 63.5])


@pytest.mark.parametrize(
    "params, message",
    [
        (_quantized(bytes([1, 2]), 4, table=[0.0] * 8), "needs 16 values"),
        (_quantized(bytes([1, 2]), 9, scale=[1.0]), "1 to 8"),
        (_quantized(bytes([1, 2]), 8, scale=[1.0, 2.0], bias=[1.0]), "2 scales and 1 biases"),
        (_quantized(bytes([1, 2, 3]), 8, scale=[1.0, 2.0]), "do not split"),
    ],
)
def test_malformed_quantization_is_refused(params, message):
    with pytest.raises(RuntimeLayerError, match=message):
        decode_weights(params, "layer 'l' weights")


def test_too_few_codes_for_the_layer_is_refused():
    params = _quantized(bytes([0x12]), 4, table=[0.0] * 16)
    layer = _layer("innerProduct", inputChannels=3, outputChannels=1)
    with pytest.raises(RuntimeLayerError, match="the layer needs 3"):
        decode_weights(params, "l", layer, "weights")


# -- decoding what coremltools writes ---------------------------------------------------------


def _builder_model(seed: int = 0):
    """conv -> deconv -> flatten -> innerProduct (coremltools' builder, fp32)."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(seed)
    builder = NeuralNetworkBuilder([("x", datatypes.Array(3, 6, 6))], [("y", None)])
    builder.add_convolution(
        "conv", 3, 6, 3, 3, 1, 1, "same", 1, rng.normal(size=(3, 3, 3, 6)), rng.normal(size=6),
        True, input_name="x", output_name="c",
    )  # fmt: skip
    builder.add_convolution(
        "deconv", 6, 4, 2, 2, 2, 2, "valid", 1, rng.normal(size=(2, 2, 4, 6)), None, False,
        input_name="c", output_name="d", is_deconv=True, output_shape=(12, 12),
    )  # fmt: skip
    builder.add_flatten("flat", 0, "d", "f")
    builder.add_inner_product(
        "fc", rng.normal(size=(5, 4 * 12 * 12)), rng.normal(size=5), 4 * 12 * 12, 5, True, "f", "y"
    )
    return builder.spec


@pytest.mark.parametrize(
    "bits, mode",
    [
        (8, "_linear_quantization"),
        (4, "_linear_quantization"),
        (3, "_lookup_table_quantization_linear"),
    ],
)
def test_runtime_reads_coremltools_quantization(bits, mode, capsys):
    """coremltools' quantizer writes, its dequantizer reads back; our runtime must agree."""
    from coremltools.models.neural_network import quantization_utils as qu

    quantized = qu._quantize_spec_weights(_builder_model(), bits, mode)
    capsys.readouterr()  # coremltools prints what it quantizes
    reference = type(quantized)()
    reference.CopyFrom(quantized)
    qu._dequantize_nn_spec(reference.neuralNetwork)
    checked = 0
    for layer, plain in zip(quantized.neuralNetwork.layers, reference.neuralNetwork.layers):
        kind = layer.WhichOneof("layer")
        if kind not in ("convolution", "innerProduct"):
            continue
        weights = getattr(layer, kind).weights
        assert weights.HasField("quantization"), layer.name
        got = decode_weights(weights, layer.name, layer, "weights")
        np.testing.assert_allclose(got, getattr(plain, kind).weights.floatValue, atol=1e-5)
        checked += 1
    assert checked == 3


def test_runtime_reads_coremltools_batched_matmul_quantization(capsys):
    """batchedMatmul stores its [X1, X2] weights transposed; per-channel scales run along
    X2, the outputs (coremltools' quantizer and our runtime agree)."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder
    from coremltools.models.neural_network import quantization_utils as qu

    rng = np.random.default_rng(5)
    builder = NeuralNetworkBuilder(
        [("x", datatypes.Array(6))], [("y", None)], disable_rank5_shape_mapping=True
    )
    builder.add_batched_mat_mul(
        "mm", ["x"], "y", weight_matrix_rows=6, weight_matrix_columns=4,
        W=rng.normal(size=(6, 4)) * [1.0, 10.0, 0.1, 3.0], bias=rng.normal(size=4),
    )  # fmt: skip
    spec = builder.spec
    x = rng.normal(size=(3, 6)).astype(np.float32)
    quantized = qu._quantize_spec_weights(spec, 8, "_linear_quantization")
    capsys.readouterr()
    weights = quantized.neuralNetwork.layers[0].batchedMatmul.weights
    assert len(weights.quantization.linearQuantization.scale) == 4
    reference = type(quantized)()
    reference.CopyFrom(quantized)
    qu._dequantize_nn_spec(reference.neuralNetwork)
    layer = quantized.neuralNetwork.layers[0]
    got = decode_weights(weights, "mm", layer, "weights")
    want = reference.neuralNetwork.layers[0].batchedMatmul.weights.floatValue
    np.testing.assert_allclose(got, want, atol=1e-5)
    ours, _ = compress_frozen(reference, "int8")
    before, after = load(reference).predict({"x": x}), load(ours).predict({"x": x})
    assert np.abs(np.asarray(before["y"]) - np.asarray(after["y"])).max() < 0.05


# -- encoding --------------------------------------------------------------------------------


def test_int8_error_is_at_most_half_a_step_per_channel():
    rng = np.random.default_rng(1)
    values = (rng.normal(size=(4, 50)) * [[0.01], [1.0], [10.0], [0.0]]).astype(np.float32)
    codes, scale, offset = linear_codes(values.ravel(), 8, 4)
    restored = codes.reshape(4, 50) * scale[:, None] + offset[:, None]
    steps = (values.max(1) - values.min(1)) / 255
    assert np.all(np.abs(restored - values).max(1) <= steps / 2 + 1e-6)
    np.testing.assert_array_equal(restored[3], values[3])  # a constant channel is exact


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_lookup_table_is_nearest_entry_and_beats_a_uniform_grid(bits):
    rng = np.random.default_rng(2)
    values = rng.standard_t(3, size=4000).astype(np.float32)  # heavy tails, like weights
    table, codes = lookup_table(values, bits)
    assert table.size == 1 << bits
    nearest = np.abs(values[:, None] - table[None, :]).argmin(1)
    np.testing.assert_array_equal(table[codes], table[nearest])
    grid = np.linspace(values.min(), values.max(), 1 << bits)
    uniform = np.abs(values[:, None] - grid[None, :]).min(1)
    assert np.mean((table[codes] - values) ** 2) < np.mean(uniform**2)


@pytest.mark.parametrize("bits", [1, 3, 4, 7, 8])
def test_packing_round_trips(bits):
    codes = np.random.default_rng(3).integers(0, 1 << bits, 13).astype(np.uint8)
    params = NeuralNetwork_pb2.WeightParams(rawValue=pack_codes(codes, bits))
    params.quantization.numberOfBits = bits
    params.quantization.lookupTableQuantization.floatValue.extend(range(1 << bits))
    layer = _layer("innerProduct", inputChannels=13, outputChannels=1)
    np.testing.assert_array_equal(decode_weights(params, "l", layer, "weights"), codes)


@pytest.mark.parametrize("name", ["int8", "lut8", "lut4"])
def test_compress_frozen_spec(name):
    spec = _builder_model()
    compressed, result = compress_frozen(spec, name)
    assert spec.neuralNetwork.layers[0].convolution.weights.floatValue  # the input is kept
    # a layer is rewritten only when that makes it smaller: a 256-entry table (1 KiB) is
    # larger than the 162 and 96 weights of the convolutions
    wanted = ["fc"] if name == "lut8" else ["conv", "deconv", "fc"]
    assert [layer.layer for layer in result.layers] == wanted
    fc = next(layer for layer in result.layers if layer.layer == "fc")
    bits = {"int8": 8, "lut8": 8, "lut4": 4}[name]
    parameters = 4 * (256 if name == "lut8" else 16) if name != "int8" else 2 * 4 * 5
    assert fc.bytes_before >= 4 * fc.values
    assert fc.bytes_after <= fc.values * bits / 8 + parameters + 32  # codes, table/scales, tags
    for layer, original in zip(compressed.neuralNetwork.layers, spec.neuralNetwork.layers):
        kind = layer.WhichOneof("layer")
        if kind in ("convolution", "innerProduct"):
            got = decode_weights(getattr(layer, kind).weights, layer.name, layer, "weights")
            want = np.asarray(getattr(original, kind).weights.floatValue)
            errors = [c.max_weight_error for c in result.layers if c.layer == layer.name]
            if not errors:  # left as it was
                np.testing.assert_array_equal(got, want.astype(np.float32))
                continue
            err = errors[0]
            assert np.abs(got - want).max() == pytest.approx(err, rel=1e-6)
            if name == "int8":  # per channel: half a step of the widest channel at most
                assert err <= (want.max() - want.min()) / 255 / 2 + 1e-6


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="int8, lut8, lut4"):
        compress_frozen(_builder_model(), "int4")


# -- exports ---------------------------------------------------------------------------------


def _grid_conv_classifier():
    """A frozen conv whose weights lie on an int8 grid (each output channel spans exactly 255
    steps of 1/256 from -0.5), so int8 storage is lossless; trainable conv and dense."""
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(8, 3, activation="relu", name="frozen_conv"),
            L.Conv2D(4, 2, padding="same", activation="relu", name="conv"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(4, activation="softmax", name="head"),
        ]
    )
    model.get_layer("frozen_conv").trainable = False
    randomize(model, seed=3, scale=0.5)
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 256, (3, 3, 2, 8))
    codes[0, 0, 0], codes[1, 1, 1] = 0, 255  # every channel spans the whole range
    kernel, bias = model.get_layer("frozen_conv").get_weights()
    model.get_layer("frozen_conv").set_weights([(-0.5 + codes / 256).astype(np.float32), bias])
    return model


def _weights(spec, name):
    layer = next(lyr for lyr in neural_network(spec).layers if lyr.name == name)
    return getattr(layer, layer.WhichOneof("layer")).weights


def test_keras_int8_on_the_grid_keeps_prediction_and_update_parity(tmp_path):
    model = _grid_conv_classifier()
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    plain, small = tmp_path / "plain.mlmodel", tmp_path / "small.mlmodel"
    options = dict(batch_size=4, epochs=1, shuffle=False, class_labels=[0, 1, 2, 3])
    export_keras(model, plain, **options)
    report = export_keras(model, small, compress_frozen="int8", **options)
    assert [layer.layer for layer in report.compression.layers] == ["frozen_conv"]
    assert report.compression.layers[0].max_weight_error == 0.0
    assert max_abs_diff(model, small, x) <= 1e-4
    # the updatable layers are the fp32 export's, byte for byte
    for name in ("conv", "head"):
        assert _weights(load_spec(small), name) == _weights(load_spec(plain), name)
    assert _weights(load_spec(small), "frozen_conv").HasField("quantization")
    # update parity with Keras on the same batches
    runtime = load(small)
    description = runtime.description
    result = runtime.update(
        {description.input[0].name: to_channel_first(x), description.trainingInput[-1].name: y}
    )
    for step in range(2):
        model.train_on_batch(x[step * 4 : (step + 1) * 4], y[step * 4 : (step + 1) * 4])
    trained = result.model.spec
    kernel, _ = model.get_layer("head").get_weights()
    h, w, c = 2, 2, 4  # the head reads the flattened (2, 2, 4) pooling output: Keras H, W, C
    want = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(kernel.shape).T.ravel()
    assert relative_diff(np.asarray(_weights(trained, "head").floatValue), want) <= 1e-4
    conv_kernel, _ = model.get_layer("conv").get_weights()
    got = np.asarray(_weights(trained, "conv").floatValue)
    assert relative_diff(got, conv_kernel.transpose(3, 2, 0, 1).ravel()) <= 1e-4
    # the frozen layer stays quantized in the updated model
    assert _weights(trained, "frozen_conv").HasField("quantization")


def test_keras_int8_random_weights_smaller_and_close(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            L.Conv2D(16, 3, activation="relu", name="c1"),
            L.Conv2D(16, 3, activation="relu", name="c2"),
            L.GlobalAveragePooling2D(),
            L.Dense(32, activation="relu", name="d1"),
            L.Dense(5, activation="softmax", name="head"),
        ]
    )
    for name in ("c1", "c2", "d1"):
        model.get_layer(name).trainable = False
    randomize(model, seed=5, scale=0.3)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    plain, small = tmp_path / "plain.mlmodel", tmp_path / "small.mlmodel"
    export_keras(model, plain)
    report = export_keras(model, small, compress_frozen="int8")
    compression = report.compression
    assert [layer.layer for layer in compression.layers] == ["c1", "c2", "d1"]
    channels = {"c1": 16, "c2": 16, "d1": 32}
    for layer in compression.layers:  # 1 byte per weight plus a scale and offset per channel
        assert layer.bytes_before >= 4 * layer.values
        assert layer.bytes_after <= layer.values + 8 * channels[layer.layer] + 32
    before = sum(layer.bytes_before for layer in compression.layers)
    after = sum(layer.bytes_after for layer in compression.layers)
    assert before / after > 3.3  # these layers are small: the per-channel scales count
    assert compression.size_after < compression.size_before
    effect = compression.effect
    assert effect["examples"] == 8 and effect["data"] == "random examples"
    assert effect["max_output_difference"] <= INT8_PROBABILITY_BOUND
    x = np.random.default_rng(6).normal(size=(16, 12, 12, 3)).astype(np.float32)
    assert max_abs_diff(model, small, x) <= INT8_PROBABILITY_BOUND
    assert _weights(load_spec(small), "head") == _weights(load_spec(plain), "head")
    assert "compressed frozen weights (int8" in report.summary()


def test_torch_int8_smaller_and_close(tmp_path):
    torch = pytest.importorskip("torch")
    from updatable_coreml.exporters.torch import export_torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 6 * 6, 5),
    )
    for parameter in list(model[0].parameters()) + list(model[2].parameters()):
        parameter.requires_grad = False
    example = torch.randn(1, 3, 10, 10)
    report = export_torch(
        model, (example,), tmp_path / "small.mlmodel", loss="cross_entropy", compress_frozen="int8"
    )
    assert len(report.compression.layers) == 2
    for layer in report.compression.layers:  # 16 output channels each
        assert layer.bytes_before >= 4 * layer.values
        assert layer.bytes_after <= layer.values + 8 * 16 + 32
    x = torch.randn(16, 3, 10, 10)
    want = torch.softmax(model(x), 1).detach().numpy()
    runtime = load(tmp_path / "small.mlmodel")
    got = runtime.predict({runtime.description.input[0].name: x.numpy()})
    probs = np.asarray(got[runtime.description.output[0].name]).reshape(16, -1)
    assert np.abs(probs - want).max() <= INT8_PROBABILITY_BOUND
    assert report.compression.effect["max_output_difference"] <= INT8_PROBABILITY_BOUND


def test_validator_refuses_quantized_updatable_layer(tmp_path):
    model = _grid_conv_classifier()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    export_keras(model, tmp_path / "m.mlmodel", compress_frozen="int8")
    spec = load_spec(tmp_path / "m.mlmodel")
    assert is_valid(validate(spec))
    # mark the quantized frozen conv updatable: Apple refuses quantized weights on an
    # updatable layer (UpdatableNeuralNetworkValidator.cpp validateWeightParamsUpdatable)
    conv = next(layer for layer in neural_network(spec).layers if layer.name == "frozen_conv")
    assert conv.convolution.weights.HasField("quantization")
    conv.isUpdatable = True
    conv.convolution.weights.isUpdatable = True
    conv.convolution.bias.isUpdatable = True
    codes = {f.code for f in validate(spec) if f.severity == "error"}
    assert "WEIGHTS_NOT_FP32" in codes


# -- the command line ------------------------------------------------------------------------


def test_cli_export_and_make_updatable_compress(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(8, 3, activation="relu", name="frozen_conv"),
            L.Flatten(),
            L.Dense(3, activation="softmax", name="head"),
        ]
    )
    model.get_layer("frozen_conv").trainable = False
    randomize(model, seed=7)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    source = tmp_path / "m.keras"
    model.save(source)
    rng = np.random.default_rng(8)
    data = tmp_path / "val.npz"
    np.savez(data, x=rng.normal(size=(12, 3, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 12))
    out, report = tmp_path / "m.mlmodel", tmp_path / "r.json"
    args = [source, "-o", out, "--compress-frozen", "int8", "--val", data, "--report", report]
    done = subprocess.run(
        CLI + ["export", *map(str, args)], capture_output=True, text=True, env=cli_env()
    )
    assert done.returncode == 0, done.stderr
    compression = json.loads(report.read_text())["export"]["compression"]
    assert compression["method"] == "int8"
    assert compression["size_after"] < compression["size_before"]
    effect = compression["effect"]
    assert effect["data"] == "validation examples" and effect["examples"] == 12
    assert abs(effect["accuracy_after"] - effect["accuracy_before"]) <= 1 / 12
    assert effect["max_output_difference"] <= INT8_PROBABILITY_BOUND
    # make-updatable: a plain model in, its frozen layers compressed, the head trains
    from models import squeezenet_like

    plain = tmp_path / "plain.mlmodel"
    plain.write_bytes(squeezenet_like().SerializeToString())
    updatable = tmp_path / "u.mlmodel"
    done = subprocess.run(
        CLI
        + ["make-updatable", str(plain), "-o", str(updatable), "--trainable", "fc"]
        + ["--compress-frozen", "int8"],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert done.returncode == 0, done.stderr
    assert "compressed frozen weights (int8" in done.stdout
    spec = load_spec(updatable)
    assert is_valid(validate(spec))
    layers = neural_network(spec).layers
    assert any(
        layer.convolution.weights.HasField("quantization")
        for layer in layers
        if layer.WhichOneof("layer") == "convolution"
    )
    assert not _weights(spec, "fc").HasField("quantization")
    # --val without --compress-frozen: one line, exit 2
    done = subprocess.run(
        CLI + ["export", str(source), "-o", str(tmp_path / "x.mlmodel"), "--val", str(data)],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert done.returncode == 2 and "--compress-frozen" in done.stderr
    assert not (tmp_path / "x.mlmodel").exists()


# -- the validator on quantized frozen weights (QuantizationValidationUtils.cpp) ---------------


def _two_layer_updatable(compress: str | None = "int8"):
    """fc1 (frozen, 6 -> 8, quantized by ``compress``) -> fc2 (updatable) -> softmax."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    from updatable_coreml import make_updatable

    rng = np.random.default_rng(9)
    builder = NeuralNetworkBuilder(
        [("x", datatypes.Array(6))], [("probs", None)], mode="classifier"
    )
    builder.add_inner_product(
        "fc1", rng.normal(size=(8, 6)), rng.normal(size=8), 6, 8, True, "x", "h"
    )
    builder.add_inner_product(
        "fc2", rng.normal(size=(3, 8)), rng.normal(size=3), 8, 3, True, "h", "z"
    )
    builder.add_softmax("softmax", "z", "probs")
    builder.set_class_labels(["a", "b", "c"], predicted_feature_name="label")
    return make_updatable(builder.spec, layers=["fc2"], compress_frozen=compress)


def _fc1_weights(spec):
    return neural_network(spec).layers[0].innerProduct.weights


def test_make_updatable_compress_frozen_is_valid():
    spec = _two_layer_updatable()
    assert _fc1_weights(spec).HasField("quantization")
    assert not neural_network(spec).layers[1].innerProduct.weights.HasField("quantization")
    assert is_valid(validate(spec))


def _break_scales(weights):
    del weights.quantization.linearQuantization.scale[1:3]


def _break_bias(weights):
    weights.quantization.linearQuantization.bias.append(0.0)


def _break_bits(weights):
    weights.quantization.numberOfBits = 9


def _break_bytes(weights):
    weights.rawValue = weights.rawValue[:-1]


def _break_table(weights):
    values = decode_weights(weights, "fc1")
    table, codes = lookup_table(values, 2)
    weights.ClearField("quantization")
    weights.rawValue = pack_codes(codes, 2)
    weights.quantization.numberOfBits = 2
    weights.quantization.lookupTableQuantization.floatValue.extend(list(table) + [0.0])


@pytest.mark.parametrize(
    "damage, message",
    [
        (_break_scales, "6 linear quantization scales for its weights (allowed: 1 or 8"),
        (_break_bias, "9 linear quantization biases for 8 scales"),
        (_break_bits, "quantized to 9 bits"),
        (_break_bytes, "47 bytes for 48 8-bit weights values"),
        (_break_table, "5-entry lookup table for its 2-bit weights"),
    ],
)
def test_validator_refuses_what_apple_refuses_in_quantized_weights(damage, message):
    spec = _two_layer_updatable()
    damage(_fc1_weights(spec))
    errors = [f for f in validate(spec) if f.severity == "error"]
    assert [f.code for f in errors] == ["LAYER_PARAMS"]
    assert message in errors[0].message and "'fc1'" in errors[0].message


def test_validator_accepts_per_tensor_scale_without_bias():
    spec = _two_layer_updatable(compress=None)
    weights = _fc1_weights(spec)
    values = np.asarray(weights.floatValue, np.float32)
    codes, scale, offset = linear_codes(values - values.min(), 8, 1)
    weights.ClearField("floatValue")
    weights.rawValue = pack_codes(codes, 8)
    weights.quantization.numberOfBits = 8
    weights.quantization.linearQuantization.scale.append(float(scale[0]))
    assert is_valid(validate(spec))


def test_grouped_deconvolution_gets_one_scale(capsys):
    """coremltools quantizes a grouped deconvolution with outputChannels / nGroups scales,
    which Apple's validator refuses (1 or outputChannels); ours writes one, and our validator
    flags coremltools' (both verdicts checked against Apple's validator built from source)."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder
    from coremltools.models.neural_network import quantization_utils as qu

    rng = np.random.default_rng(0)
    builder = NeuralNetworkBuilder([("x", datatypes.Array(4, 6, 6))], [("y", None)])
    builder.add_convolution(
        "deconv", 4, 8, 2, 2, 2, 2, "valid", 2, rng.normal(size=(2, 2, 4, 4)), None, False,
        input_name="x", output_name="y", is_deconv=True, output_shape=(12, 12),
    )  # fmt: skip
    ours, _ = compress_frozen(builder.spec, "int8")
    weights = ours.neuralNetwork.layers[0].convolution.weights
    assert len(weights.quantization.linearQuantization.scale) == 1
    assert not [f for f in validate(ours) if f.code == "LAYER_PARAMS"]
    theirs = qu._quantize_spec_weights(builder.spec, 8, "_linear_quantization")
    capsys.readouterr()
    assert [f.code for f in validate(theirs) if f.code == "LAYER_PARAMS"] == ["LAYER_PARAMS"]


def test_keras_pipeline_backbone_is_compressed(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(16, 3, activation="relu", name="c1"),
            L.Flatten(),
            L.Dense(4, activation="softmax", name="head"),
        ]
    )
    model.get_layer("c1").trainable = False
    randomize(model, seed=11)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    path = tmp_path / "p.mlmodel"
    report = export_keras(model, path, pipeline=True, backbone="frontend", compress_frozen="int8")
    assert [layer.layer for layer in report.compression.layers] == ["c1"]
    spec = load_spec(path)
    assert spec.WhichOneof("Type") == "pipeline"
    backbone, head = spec.pipeline.models
    conv = next(lyr for lyr in backbone.neuralNetwork.layers if lyr.name == "c1")
    assert conv.convolution.weights.HasField("quantization")
    assert is_valid(validate(spec))
    x = np.random.default_rng(12).normal(size=(8, 8, 8, 3)).astype(np.float32)
    assert max_abs_diff(model, path, x) <= INT8_PROBABILITY_BOUND


@pytest.mark.parametrize("name", ["int8", "lut4"])
def test_keras_frozen_lstms_compressed(name, tmp_path):
    """The weight and recursion matrices of frozen LSTMs (uniDirectionalLSTM and
    biDirectionalLSTM) are stored quantized, per output when linear; the file stays valid."""
    from test_keras_sequence import core_ml_layout

    model = keras.Sequential(
        [
            keras.Input((10, 4)),
            L.LSTM(16, return_sequences=True, name="lstm"),
            L.Bidirectional(L.LSTM(8), name="bi"),
            L.Dense(3, activation="softmax", name="head"),
        ]
    )
    model.get_layer("lstm").trainable = False
    model.get_layer("bi").trainable = False
    randomize(model, seed=1)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    path = tmp_path / "rnn.mlmodel"
    report = export_keras(model, path, compress_frozen=name)
    fields = {(layer.layer, layer.field) for layer in report.compression.layers}
    assert ("lstm", "weightParams.inputGateWeightMatrix") in fields
    assert ("bi", "weightParams.1.outputGateRecursionMatrix") in fields
    assert len(fields) == 24  # 8 matrices of the LSTM, 8 per direction of the other
    spec = load_spec(path)
    assert is_valid(validate(spec))
    x = np.random.default_rng(0).normal(size=(8, 10, 4)).astype(np.float32)
    runtime = load(path)
    out = runtime.predict({runtime.description.input[0].name: core_ml_layout(x)})
    got = np.asarray(out[runtime.description.output[0].name]).reshape(8, -1)
    want = model.predict(x, verbose=0)
    bound = INT8_PROBABILITY_BOUND if name == "int8" else 0.05
    assert np.abs(got - want).max() <= bound
    # a broken table on a recurrent matrix is refused, as Apple's GRU/LSTM validators do
    bi = next(layer for layer in neural_network(spec).layers if layer.name == "bi")
    matrix = bi.biDirectionalLSTM.weightParams[1].inputGateWeightMatrix
    if name == "int8":
        matrix.quantization.linearQuantization.scale.append(1.0)
    else:
        matrix.quantization.lookupTableQuantization.floatValue.append(1.0)
    errors = [f for f in validate(spec) if f.severity == "error"]
    assert [f.code for f in errors] == ["LAYER_PARAMS"] and "'bi'" in errors[0].message


def test_regressor_effect_on_validation_data(tmp_path):
    """An MSE model: the validation loss before and after, no accuracy and no top-1."""
    from models import mlp_regressor
    from updatable_coreml import make_updatable
    from updatable_coreml.compression import compress_and_measure

    spec = make_updatable(mlp_regressor(), layers=["out"], loss="mse")
    rng = np.random.default_rng(13)
    data = tmp_path / "val.npz"
    np.savez(data, x=rng.normal(size=(10, 4)).astype(np.float32), y=rng.normal(size=(10, 2)))
    small, result = compress_and_measure(spec, "int8", val=str(data))
    assert [layer.layer for layer in result.layers] == ["hidden"]
    effect = result.effect
    assert effect["top1_agreement"] is None and effect["accuracy_before"] is None
    assert effect["examples"] == 10 and 0 < effect["max_output_difference"] < 0.05
    assert abs(effect["loss_after"] - effect["loss_before"]) < 0.05
    text = "\n".join(result.summary_lines())
    assert "validation loss" in text and "top-1" not in text
    assert is_valid(validate(small))


def test_torch_int8_on_the_grid_updates_like_the_fp32_export(tmp_path):
    """Frozen conv weights on an int8 grid decode exactly, so the compressed file trains its
    head exactly like the fp32 export (whose update parity with torch the torch training tests
    prove)."""
    torch = pytest.importorskip("torch")
    from updatable_coreml.exporters.torch import export_torch

    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 3)
    )
    codes = torch.randint(0, 256, model[0].weight.shape)
    codes[:, 0, 0, 0], codes[:, 1, 1, 1] = 0, 255  # every output channel spans the grid
    with torch.no_grad():
        model[0].weight.copy_(-0.5 + codes / 256)
    for parameter in model[0].parameters():
        parameter.requires_grad = False
    example = torch.randn(1, 2, 6, 6)
    options = dict(loss="cross_entropy", batch_size=4, epochs=1, shuffle=False)
    plain, small = tmp_path / "plain.mlmodel", tmp_path / "small.mlmodel"
    export_torch(model, (example,), plain, **options)
    report = export_torch(model, (example,), small, compress_frozen="int8", **options)
    assert report.compression.layers[0].max_weight_error == 0.0
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 2, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    trained = []
    for path in (plain, small):
        runtime = load(path)
        description = runtime.description
        data = {description.input[0].name: x, description.trainingInput[-1].name: y}
        trained.append(runtime.update(data).model.spec)
    head = next(lyr.name for lyr in neural_network(trained[0]).layers if lyr.isUpdatable)
    initial = np.asarray(_weights(load_spec(plain), head).floatValue)
    assert np.abs(np.asarray(_weights(trained[0], head).floatValue) - initial).max() > 1e-3
    np.testing.assert_array_equal(
        np.asarray(_weights(trained[1], head).floatValue),
        np.asarray(_weights(trained[0], head).floatValue),
    )
    frozen = report.compression.layers[0].layer
    assert _weights(trained[1], frozen).HasField("quantization")


def test_cli_refuses_bad_compression_options_before_loading(tmp_path, capsys):
    from updatable_coreml.cli import main

    source = tmp_path / "never_read.keras"  # does not exist: the options are refused first
    out = tmp_path / "m.mlmodel"
    cases = [
        (["--compress-frozen", "int8", "--val", str(tmp_path / "missing.npz")], "no such file"),
        (["--val", str(tmp_path)], "--compress-frozen"),
    ]
    for extra, message in cases:
        assert main(["export", str(source), "-o", str(out), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()


def test_knn_extractor_compressed(tmp_path):
    """export_knn: the whole extractor is frozen, so it is what compresses; initial examples
    are embedded by the compressed extractor (as the device will embed new ones)."""
    from updatable_coreml.knn import export_knn

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = L.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = L.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = L.GlobalAveragePooling2D(name="features")(h)
    model = keras.Model(inputs, L.Dense(3, activation="softmax", name="classifier")(h))
    x = np.random.default_rng(14).normal(size=(6, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "knn.mlmodel"
    report = export_knn(
        model,
        path,
        feature_layer="features",
        compress_frozen="int8",
        initial_examples=(x, ["a", "b", "c", "a", "b", "c"]),
    )
    assert [layer.layer for layer in report.compression.layers] == ["conv1", "conv2"]
    effect = report.compression.effect
    assert effect["top1_agreement"] is None and effect["max_output_difference"] < 0.05
    spec = load_spec(path)
    assert is_valid(validate(spec))
    extractor = spec.pipeline.models[0]
    assert extractor.neuralNetwork.layers[0].convolution.weights.HasField("quantization")
    predicted = load(path).predict({spec.description.input[0].name: x})
    assert list(predicted["classLabel"]) == ["a", "b", "c", "a", "b", "c"]  # its examples
