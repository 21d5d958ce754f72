"""Builders of the bad-input corpus (``test_bad_inputs.py``): one folder of hostile, damaged
or unsupported files, made once per test session.

Files that would run code if loaded unsafely write a marker file when they do; each such
builder proves it with a positive control (loading the file unsafely once, here, must
create the marker) so the corpus test's "marker absent" check can fail.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from models import image_classifier_builder, mlp_regressor, squeezenet_like

LABELS = ["blue", "red"]


# -- Core ML models ------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def image_classifier():
    """8x8 RGB image -> conv -> relu -> global pool -> flatten -> fc -> softmax, updatable fc
    (epochs allowed {1, 2, 3}, batch size 4, learning rate in 0..1)."""
    from coremltools.models.neural_network import SgdParams

    b = image_classifier_builder(LABELS, np.random.default_rng(3))
    sgd = SgdParams(lr=0.5, batch=4)
    sgd.set_batch(4, allowed_set=[4])
    b.set_sgd_optimizer(sgd)
    b.set_epochs(2, allowed_set=[1, 2, 3])
    b.set_shuffle(seed=3)
    return b.spec


def ml_program():
    """A minimal ML Program spec (what ``ct.convert(..., convert_to='mlprogram')`` gives,
    without its weights folder)."""
    from updatable_coreml._proto import Model_pb2

    spec = Model_pb2.Model()
    spec.specificationVersion = 7
    spec.description.input.add(name="x").type.multiArrayType.shape.extend([4])
    spec.description.output.add(name="y").type.multiArrayType.shape.extend([2])
    spec.mlProgram.version = 1
    spec.mlProgram.functions["main"].opset = "CoreML6"
    return spec


def mlpackage(
    path: Path,
    *,
    manifest: bytes | None = None,
    model_path: str = "com.apple.CoreML/model.mlmodel",
    write_model: bool = True,
) -> Path:
    """An ``.mlpackage`` folder laid out as coremltools saves one (Manifest.json naming a root
    item under Data/), holding ``ml_program()``; the keywords damage one part each."""
    import json

    root_id = "4D1A2B3C-0000-4000-8000-000000000001"
    if manifest is None:
        manifest = json.dumps(
            {
                "fileFormatVersion": "1.0.0",
                "itemInfoEntries": {
                    root_id: {
                        "author": "com.apple.CoreML",
                        "name": "model.mlmodel",
                        "description": "CoreML Model Specification",
                        "path": model_path,
                    }
                },
                "rootModelIdentifier": root_id,
            }
        ).encode()
    path.mkdir(parents=True)
    (path / "Manifest.json").write_bytes(manifest)
    if write_model:
        model = path / "Data" / "com.apple.CoreML" / "model.mlmodel"
        model.parent.mkdir(parents=True)
        spec = ml_program()
        block = spec.mlProgram.functions["main"].block_specializations["CoreML6"]
        for op in ("relu", "linear", "relu"):
            block.operations.add(type=op)
        model.write_bytes(spec.SerializeToString())
    return path


def quantized_head():
    """squeezenet_like with its fc weights 8-bit linearly quantized (frozen: fine; to train: no)."""
    spec = squeezenet_like()
    fc = next(layer for layer in spec.neuralNetworkClassifier.layers if layer.name == "fc")
    count = len(fc.innerProduct.weights.floatValue)
    fc.innerProduct.weights.ClearField("floatValue")
    fc.innerProduct.weights.rawValue = bytes(range(count))
    quant = fc.innerProduct.weights.quantization
    quant.numberOfBits = 8
    quant.linearQuantization.scale.append(0.01)
    quant.linearQuantization.bias.append(-0.2)
    return spec


def huge_input():
    """A plain network that declares a 2**40-element input (a few bytes of protobuf)."""
    spec = mlp_regressor()
    shape = spec.description.input[0].type.multiArrayType.shape
    del shape[:]
    shape.extend([2**20, 2**20])
    return spec


def huge_upsample():
    """A small network whose upsample layer asks for a 2**20 x 2**20 scale-up."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder([("x", datatypes.Array(1, 4, 4))], [("y", None)])
    b.add_upsample("blowup", 2, 2, "x", "y")
    b.spec.neuralNetwork.layers[0].upsample.scalingFactor[:] = [2**20, 2**20]
    return b.spec


# -- images and datasets ---------------------------------------------------------------------


def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _colored(rng, size=8) -> np.ndarray:
    return rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)


def bomb_png(path: Path, side: int = 30000) -> None:
    """A PNG header declaring ``side`` x ``side`` pixels with almost no data (a decompression
    bomb: decoding it would allocate gigabytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def image_folders(root: Path) -> None:
    rng = np.random.default_rng(5)
    for label in LABELS:  # a valid folder, the others differ from it in one way each
        _png(root / "train_ok" / label / "0.png", _colored(rng))
    (root / "train_empty" / "red").mkdir(parents=True)
    (root / "train_empty" / "blue").mkdir(parents=True)
    _png(root / "train_unknown_label" / "green" / "0.png", _colored(rng))
    _png(root / "train_unknown_label" / "red" / "0.png", _colored(rng))
    _png(root / "train_corrupt" / "red" / "0.png", _colored(rng))
    good = (root / "train_corrupt" / "red" / "0.png").read_bytes()
    (root / "train_corrupt" / "blue").mkdir(parents=True)
    (root / "train_corrupt" / "blue" / "0.png").write_bytes(good[: len(good) // 2])
    _png(root / "train_bomb" / "red" / "0.png", _colored(rng))
    bomb_png(root / "train_bomb" / "blue" / "0.png")
    x_ok = np.stack([_colored(rng) for _ in range(4)])
    y_ok = np.asarray(LABELS * 2)
    np.savez(root / "wrong_size.npz", x=np.stack([_colored(rng, 5) for _ in range(4)]), y=y_ok)
    np.savez(root / "wrong_mode.npz", x=np.zeros((4, 8, 8, 4), np.uint8), y=y_ok)
    np.savez(root / "gray_for_rgb.npz", x=np.zeros((4, 8, 8), np.uint8), y=y_ok)
    np.savez(root / "unknown_label.npz", x=x_ok, y=np.asarray(["green"] * 4))
    np.savez(root / "objects.npz", x=np.asarray([object()] * 4, dtype=object), y=y_ok)
    np.savez(root / "ok.npz", x=x_ok, y=y_ok)
    data = (root / "ok.npz").read_bytes()
    (root / "truncated.npz").write_bytes(data[: len(data) // 3])


# -- Keras -------------------------------------------------------------------------------------


def keras_files(root: Path, marker: Path) -> None:
    import keras

    layers = keras.layers

    def mlp(middle=None, loss="sparse_categorical_crossentropy", optimizer="sgd", name="m"):
        x = keras.Input((8,), name="x")
        h = layers.Dense(6, activation="relu", name="hidden")(x)
        if middle is not None:
            h = middle(h)
        y = layers.Dense(3, activation="softmax", name="head")(h)
        model = keras.Model(x, y, name=name)
        model.compile(loss=loss, optimizer=optimizer)
        return model

    # The lambda writes the marker if it ever runs (Keras runs it while rebuilding the model).
    writes_marker = eval(f"lambda z: (open({str(marker)!r}, 'w').close(), z)[1]")
    with_lambda = mlp(lambda h: layers.Lambda(writes_marker, name="evil")(h))
    for name in ("lambda.keras", "lambda.h5"):  # the .keras archive and the legacy HDF5 file
        with_lambda.save(root / name)
        marker.unlink(missing_ok=True)  # building or saving the model may have run it
        keras.saving.load_model(root / name, safe_mode=False)  # positive control
        assert marker.exists(), (
            f"the {name} marker does not work: the no-execution check could not fail"
        )
        marker.unlink()

    mlp(lambda h: layers.UnitNormalization(name="norm")(h)).save(root / "unitnorm.keras")
    mlp(lambda h: layers.Activation("gelu", name="gelu")(h)).save(root / "gelu_on_path.keras")
    mlp(loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1)).save(
        root / "smoothing.keras"
    )
    mlp(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)).save(
        root / "nesterov.keras"
    )
    mlp().save(root / "good.keras")
    data = (root / "good.keras").read_bytes()
    (root / "truncated.keras").write_bytes(data[: len(data) // 2])
    (root / "empty.keras").write_bytes(b"")
    (root / "folder.keras").mkdir()


# -- torch -------------------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this calls ``open(marker, 'w')``: code execution from a data file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def torch_files(root: Path, marker: Path) -> None:
    import torch

    (root / "net.py").write_text(
        "from torch import nn\n\n\ndef build():\n"
        "    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))\n"
    )
    torch.save({"0.weight": _RunsCode(marker)}, root / "evil_state.pt")
    torch.load(root / "evil_state.pt", weights_only=False)  # positive control
    assert marker.exists(), "the pickle marker does not work"
    marker.unlink()
    torch.save(torch.nn.Linear(8, 6), root / "whole_module.pt")
    torch.save({"fc.weight": torch.zeros(2, 2)}, root / "other_arch.pt")

    # A .pt2 whose sample-input payload is a pickle that runs code (torch.export.load falls
    # back to weights_only=False for it).
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    torch.export.save(torch.export.export(net, (torch.zeros(1, 4),)), root / "clean.pt2")
    payload = io.BytesIO()
    torch.save(_RunsCode(marker), payload)
    with (
        zipfile.ZipFile(root / "clean.pt2") as source,
        zipfile.ZipFile(root / "evil.pt2", "w", zipfile.ZIP_STORED) as target,
    ):
        for info in source.infolist():
            data = source.read(info.filename)
            target.writestr(
                info,
                payload.getvalue() if info.filename.endswith("sample_inputs/model.pt") else data,
            )
    data = (root / "clean.pt2").read_bytes()
    (root / "truncated.pt2").write_bytes(data[: len(data) // 2])
    try:
        torch.export.load(root / "evil.pt2")  # positive control
    except Exception:
        pass
    assert marker.exists(), "the .pt2 marker does not work"
    marker.unlink()


# -- ONNX --------------------------------------------------------------------------------------


def onnx_files(root: Path) -> None:
    import onnx
    from onnx import TensorProto, helper
    from onnx.external_data_helper import set_external_data

    from onnx_helpers import model

    good = model([helper.make_node("Relu", ["x"], ["features"], name="relu")], [8])
    onnx.save(good, root / "good.onnx")
    onnx.save_model(
        good,
        root / "external.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="external.onnx.data",
        size_threshold=0,
    )
    (root / "external.onnx.data").unlink()
    onnx.save(
        model(
            [
                helper.make_node(
                    "Einsum", ["x", "x"], ["features"], name="outer", equation="bi,bi->bi"
                )
            ],
            [8],
        ),
        root / "einsum.onnx",
    )
    escape = onnx.load(root / "good.onnx")
    tensor = escape.graph.initializer[0]
    set_external_data(tensor, "../../etc/passwd")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    onnx.save(escape, root / "escape.onnx")
    (root / "junk.onnx").write_bytes(b"\x08\x07junk\xff\xff")


def softmax_nd_over_batch_axis():
    """What ct.convert writes (N-d semantics, rank-2 blobs, a final softmaxND), but the
    softmax runs over axis 0, not over the classes: make-updatable cannot turn it into the
    classic softmax Core ML's cross-entropy needs."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder(
        [("x", datatypes.Array(1, 4))],
        [("probs", datatypes.Array(1, 3))],
        disable_rank5_shape_mapping=True,
    )
    w = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    b.add_inner_product("fc", w, None, 4, 3, False, "x", "logits")
    b.add_softmax_nd("softmax", "logits", "probs", axis=0)
    return b.spec


# -- everything --------------------------------------------------------------------------------


def build_corpus(root: Path, marker: Path) -> Path:
    from updatable_coreml import make_updatable

    root.mkdir(parents=True, exist_ok=True)
    plain = squeezenet_like()
    _write(root / "plain.mlmodel", plain.SerializeToString())
    make_updatable(
        plain, root / "updatable.mlmodel", layers=["fc"], seed=1, allowed_epochs=[5, 10], epochs=10
    )
    _write(root / "image_classifier.mlmodel", image_classifier().SerializeToString())
    _write(root / "program.mlmodel", ml_program().SerializeToString())
    _write(root / "softmax_nd.mlmodel", softmax_nd_over_batch_axis().SerializeToString())
    _write(root / "mlp.mlmodel", mlp_regressor().SerializeToString())
    _write(root / "quantized.mlmodel", quantized_head().SerializeToString())
    _write(root / "huge_input.mlmodel", huge_input().SerializeToString())
    _write(root / "huge_upsample.mlmodel", huge_upsample().SerializeToString())
    data = plain.SerializeToString()
    _write(root / "truncated.mlmodel", data[: len(data) // 2])
    _write(root / "empty.mlmodel", b"")
    _write(root / "junk.mlmodel", b"\xff\x00 this is not a model at all")
    (root / "folder.mlmodel").mkdir()
    (root / "Model.mlpackage").mkdir()
    mlpackage(root / "Program.mlpackage")
    mlpackage(root / "BadManifest.mlpackage", manifest=b"{not json")
    mlpackage(root / "Escaping.mlpackage", model_path="../../../junk.mlmodel")
    mlpackage(root / "NoModel.mlpackage", write_model=False)
    (root / "a_file").write_text("a regular file, used as an output's parent folder\n")
    (root / "unknown_key.toml").write_text("lossy = 'cce'\n")
    image_folders(root)
    keras_files(root, marker)
    torch_files(root, marker)
    onnx_files(root)
    return root
