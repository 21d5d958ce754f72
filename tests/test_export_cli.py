"""``updatable-coreml export``: exit codes, config-file precedence, the JSON report,
byte-determinism, the three source kinds, and the examples/pipeline Makefile."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from onnx_helpers import const, model, rng
from updatable_coreml import runtime
from updatable_coreml.cli import main
from updatable_coreml.cli.export_config import class_labels, image_input
from updatable_coreml.errors import ConfigError
from updatable_coreml.spec_io import load_spec, neural_network

CLI = [sys.executable, "-m", "updatable_coreml.cli"]
PIPELINE = Path(__file__).resolve().parents[1] / "examples" / "pipeline"


def run(*args, cwd=None):
    return subprocess.run(
        CLI + [str(a) for a in args], capture_output=True, text=True, timeout=180, cwd=cwd
    )


def classifier() -> onnx.ModelProto:
    """x (6,) -> Gemm (hidden) -> Relu -> Gemm (logits, 'y') with 3 outputs."""
    nodes = [
        helper.make_node(
            "Gemm", ["x", "hidden.weight", "hidden.bias"], ["h"], name="hidden", transB=1
        ),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "out.weight", "out.bias"], ["y"], name="out", transB=1),
    ]
    generator = rng(3)
    inits = [
        const("hidden.weight", generator.normal(size=(8, 6))),
        const("hidden.bias", np.zeros(8)),
        const("out.weight", generator.normal(size=(3, 8))),
        const("out.bias", np.zeros(3)),
    ]
    return model(nodes, (6,), initializers=inits, head=None)


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(classifier(), path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- exit codes ------------------------------------------------------------------------------


def test_export_is_quiet_valid_and_reports(source, tmp_path):
    out, report = tmp_path / "M.mlmodel", tmp_path / "report.json"
    result = run(
        "export",
        source,
        "-o",
        out,
        "--loss",
        "cce",
        "--trainable",
        "out",
        "--seed",
        1,
        "--class-labels",
        "a,b,c",
        "--report",
        report,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    document = json.loads(report.read_text())
    assert document["valid"] is True
    assert document["output"]["sha256"] == sha256(out)
    assert document["source"] == {"path": str(source), "kind": "onnx", "sha256": sha256(source)}
    assert document["export"]["trainable"] == ["out"]
    assert any("appended softmax" in change for change in document["export"]["changes"])
    assert (document["schema"], document["schema_version"]) == ("updatable-coreml/export-report", 1)
    params = document["export"]["update_parameters"]
    assert params["kind"] == "network" and params["loss"]["kind"] == "cce"
    assert params["optimizer"]["kind"] == "sgd" and params["seed"] == 1
    assert isinstance(params["optimizer"]["learning_rate"]["default"], float)
    assert any(line.startswith("  loss: cce") for line in document["export"]["summary"])
    assert document["findings"] == []
    assert {"updatable_coreml", "onnx", "python", "numpy"} <= set(document["versions"])
    assert document["settings"]["class_labels"] == ["a", "b", "c"]


def test_unusable_inputs_exit_2_with_one_line_and_no_output(source, tmp_path):
    unknown = tmp_path / "unknown.onnx"
    onnx.save(model([helper.make_node("Erf", ["x"], ["y"], name="erf")], (6,), head=None), unknown)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00 junk")
    cases = [
        ([source], "give --loss"),
        ([source, "--loss", "cce", "--trainable", "nope"], "no node or initializer named 'nope'"),
        ([unknown, "--loss", "mse"], "'erf' (Erf)"),
        ([junk, "--loss", "mse"], "not an ONNX model"),
        ([tmp_path / "absent.onnx", "--loss", "mse"], "no such file"),
        (
            [source, "--loss", "mse", "--beta1", "0.8"],
            "--beta1 belongs to Adam: add --optimizer adam",
        ),
        ([source, "--loss", "mse", "--image-input", "x:cmyk"], "color must be"),
        ([tmp_path / "model.tflite", "--loss", "mse"], "unknown source type"),
    ]
    for extra, message in cases:
        out = tmp_path / "out.mlmodel"
        result = run("export", *extra, "-o", out)
        assert result.returncode == 2, (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("updatable-coreml: error: "), result.stderr
        assert message in lines[0]
        assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_lr_without_optimizer_is_sgd(source, tmp_path):
    out, report = tmp_path / "lr.mlmodel", tmp_path / "lr.json"
    result = run("export", source, "-o", out, "--loss", "cce", "--lr", "0.1", "--report", report)
    assert result.returncode == 0, result.stderr
    optimizer = json.loads(report.read_text())["export"]["update_parameters"]["optimizer"]
    assert optimizer["kind"] == "sgd" and optimizer["learning_rate"]["default"] == 0.1


def test_strict_makes_warnings_fail_with_exit_1(source, tmp_path, capsys):
    out = tmp_path / "M.mlmodel"
    assert main(["export", str(source), "-o", str(out), "--loss", "mse", "--trainable", "all"]) == 0
    assert (
        main(
            [
                "export",
                str(source),
                "-o",
                str(out),
                "--loss",
                "mse",
                "--trainable",
                "all",
                "--strict",
            ]
        )
        == 1
    )
    assert "NO_SHUFFLE_SEED" in capsys.readouterr().err
    assert out.exists()  # exported, but not what --strict accepts


# -- config file -----------------------------------------------------------------------------


def test_config_file_with_flags_overriding_it(source, tmp_path):
    config = tmp_path / "export.toml"
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    config.write_text(
        f'source = "{source}"\noutput = "{tmp_path / "from_config.mlmodel"}"\n'
        f'loss = "cce"\ntrainable = "all"\noptimizer = "adam"\nlr = 0.002\n'
        f"batch-size = 4\nallowed_batch_sizes = [2, 4]\nepochs = 3\nseed = 9\n"
        f'class-labels = "{labels}"\nversion = "2.1"\n'
    )
    out = tmp_path / "override.mlmodel"
    report = tmp_path / "r.json"
    assert (
        main(
            [
                "export",
                "--config",
                str(config),
                "-o",
                str(out),
                "--epochs",
                "7",
                "--report",
                str(report),
            ]
        )
        == 0
    )
    assert not (tmp_path / "from_config.mlmodel").exists()
    document = json.loads(report.read_text())
    params = document["export"]["update_parameters"]
    assert params["epochs"]["default"] == 7
    assert params["batch_size"] == {"default": 4, "allowed": {"set": [2, 4]}}
    assert params["optimizer"]["kind"] == "adam"
    assert params["optimizer"]["learning_rate"]["default"] == 0.002 and params["seed"] == 9
    assert document["settings"]["class_labels"] == ["cat", "dog", "bird"]
    assert document["settings"]["model_version"] == "2.1"
    assert document["export"]["trainable"] == ["hidden", "out"]


def test_config_file_errors_are_clean(tmp_path, source, capsys):
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text('loss = "cce"\nbatchsize = 4\n')
    broken = tmp_path / "broken.toml"
    broken.write_text('loss = "cce\n')
    wrong_type = tmp_path / "type.toml"
    wrong_type.write_text('loss = "hinge"\n')
    for path, message in (
        (bad_key, "unknown setting 'batchsize'"),
        (broken, "not a valid TOML"),
        (wrong_type, "'hinge' is not one of cce, mse"),
        (tmp_path / "none.toml", "no such config file"),
    ):
        assert (
            main(["export", str(source), "-o", str(tmp_path / "o.mlmodel"), "--config", str(path)])
            == 2
        )
        assert message in capsys.readouterr().err


# -- determinism and option parsing ----------------------------------------------------------


def test_exports_are_byte_identical(source, tmp_path):
    outputs = [tmp_path / "a.mlmodel", tmp_path / "b.mlmodel"]
    for out in outputs:
        assert (
            main(
                [
                    "export",
                    str(source),
                    "-o",
                    str(out),
                    "--loss",
                    "cce",
                    "--trainable",
                    "all",
                    "--seed",
                    "3",
                    "--class-labels",
                    "0,1,2",
                ]
            )
            == 0
        )
    assert outputs[0].read_bytes() == outputs[1].read_bytes()


def test_image_input_and_class_label_forms(tmp_path):
    assert image_input("image:rgb:scale=1/255:bias=-1,-0.5,0") == {
        "name": "image",
        "color": "rgb",
        "scale": 1 / 255,
        "bias": [-1.0, -0.5, 0.0],
    }
    assert image_input("bgr:bias=-1/2") == {"color": "bgr", "bias": [-0.5]}
    assert image_input({"name": "x", "color": "grayscale", "scale": 0.5}) == {
        "name": "x",
        "color": "grayscale",
        "scale": 0.5,
    }
    with pytest.raises(ConfigError):
        image_input("x:rgb:gamma=2")
    path = tmp_path / "labels.txt"
    path.write_text("3\n1\n\n2\n")
    assert class_labels(str(path)) == [3, 1, 2]
    assert class_labels("a, b,c") == ["a", "b", "c"]
    assert class_labels([1, "x"]) == ["1", "x"]
    with pytest.raises(ConfigError, match="no such labels file"):
        class_labels(str(tmp_path / "missing.txt"))


# -- the other source kinds ------------------------------------------------------------------


def test_torch_factory_with_weights(tmp_path):
    torch = pytest.importorskip("torch")
    factory = tmp_path / "net.py"
    factory.write_text(
        "from torch import nn\n\ndef make():\n"
        "    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))\n"
    )
    torch.manual_seed(0)
    weights = {
        f"{k}": v
        for k, v in torch.nn.Sequential(
            torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
        )
        .state_dict()
        .items()
    }
    torch.save(weights, tmp_path / "w.pt")
    out = tmp_path / "T.mlmodel"
    assert (
        main(
            [
                "export",
                f"{factory}:make",
                "--weights",
                str(tmp_path / "w.pt"),
                "--example-shape",
                "6",
                "-o",
                str(out),
                "--loss",
                "cce",
                "--trainable",
                "2",
                "--optimizer",
                "sgd",
                "--lr",
                "0.05",
                "--seed",
                "0",
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["export"]["trainable"] == ["2"] and "torch" in document["versions"]
    assert document["export"]["update_parameters"]["optimizer"]["learning_rate"]["default"] == 0.05


def test_torch_text_factory_takes_an_int64_example(tmp_path):
    """An nn.Embedding refuses the float zeros --example-shape makes by default; with
    --example-dtype int64 the token model exports, and predicts like torch on real ids."""
    torch = pytest.importorskip("torch")
    source = tmp_path / "text.py"
    source.write_text(
        "import torch\nfrom torch import nn\n\nclass Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        torch.manual_seed(0)\n        self.emb = nn.Embedding(20, 4)\n"
        "        self.fc = nn.Linear(4, 3)\n\n"
        "    def forward(self, ids):\n        return self.fc(self.emb(ids).mean(1))\n\n"
        "def make():\n    return Net().eval()\n"
    )
    args = ["export", f"{source}:make", "--example-shape", "5", "-o"]
    common = ["--loss", "cce", "--trainable", "fc", "--optimizer", "sgd", "--seed", "0"]
    assert main([*args, str(tmp_path / "F.mlmodel"), *common]) == 2  # float ids refused
    out = tmp_path / "T.mlmodel"
    assert main([*args, str(out), *common, "--example-dtype", "int64"]) == 0
    import importlib.util

    spec = importlib.util.spec_from_file_location("text", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.make()
    ids = np.array([[1, 7, 3, 19, 0], [4, 4, 2, 8, 11]])
    expected = torch.softmax(net(torch.from_numpy(ids)), dim=1).detach().numpy()
    model = runtime.load(out)
    (name,) = [d.name for d in model.description.input]
    probs = model.description.predictedProbabilitiesName or model.description.output[0].name
    # a sequence input travels as [Seq, Batch, C] (its shortDescription says so)
    got = [model.predict({name: row.reshape(5, 1, 1).astype(np.float32)})[probs] for row in ids]
    got = np.array([list(g.values()) if isinstance(g, dict) else np.ravel(g) for g in got])
    assert np.abs(got - expected).max() <= 1e-4


def test_keras_file(tmp_path):
    pytest.importorskip("keras")
    from updatable_coreml.exporters.keras import _keras

    keras = _keras()
    net = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    net.layers[0].trainable = False
    net.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(0.03))
    net.save(tmp_path / "net.keras")
    out = tmp_path / "K.mlmodel"
    result = run(
        "export", tmp_path / "net.keras", "-o", out, "--seed", 0, "--report", tmp_path / "r.json"
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result.stderr
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["export"]["trainable"] == ["out"]
    assert document["export"]["update_parameters"]["optimizer"]["learning_rate"][
        "default"
    ] == pytest.approx(0.03)


# -- the pipeline example --------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_pipeline_makefile_exports_and_validates(tmp_path):
    pytest.importorskip("torch")
    build = tmp_path / "build"
    result = subprocess.run(
        ["make", "-C", str(PIPELINE), f"PYTHON={sys.executable}", f"BUILD={build}"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{build / 'Model.mlmodel'}: valid" in result.stdout
    document = json.loads((build / "report.json").read_text())
    assert document["valid"] and document["output"]["sha256"] == sha256(build / "Model.mlmodel")
    labels = neural_network(load_spec(build / "Model.mlmodel")).stringClassLabels.vector
    assert list(labels) == ["cat", "dog", "bird", "fish", "user0", "user1"]


def test_dvc_stages_run_in_order(tmp_path):
    """What ``dvc repro`` would run (dvc itself is not needed): each stage's cmd in its folder."""
    pytest.importorskip("torch")
    yaml = pytest.importorskip("yaml")
    folder = tmp_path / "pipeline"
    shutil.copytree(PIPELINE, folder, ignore=shutil.ignore_patterns("build"))
    stages = yaml.safe_load((folder / "dvc.yaml").read_text())["stages"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for name, stage in stages.items():
        result = subprocess.run(
            stage["cmd"],
            shell=True,
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, (name, result.stderr)
        for out in stage.get("outs", []):
            assert (folder / out).is_file(), (name, out)
    assert json.loads((folder / "build" / "report.json").read_text())["valid"]


def test_pipeline_flag_writes_backbone_and_head(tmp_path):
    pytest.importorskip("torch")
    factory = tmp_path / "net.py"
    factory.write_text(
        "from torch import nn\n\ndef make():\n"
        "    return nn.Sequential(nn.Linear(6, 8), nn.Mish(), nn.Linear(8, 3))\n"
    )
    out = tmp_path / "P.mlmodel"
    assert (
        main(
            [
                "export",
                f"{factory}:make",
                "--example-shape",
                "6",
                "-o",
                str(out),
                "--loss",
                "cce",
                "--trainable",
                "2",
                "--pipeline",
                "--backbone",
                "auto",
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    spec = load_spec(out)
    assert spec.WhichOneof("Type") == "pipelineClassifier" or spec.WhichOneof("Type") == "pipeline"
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["export"]["backbone"] == "coremltools"  # ours refuses Mish


def test_backbone_option_is_refused_where_it_does_not_apply(source, tmp_path, capsys):
    out = tmp_path / "x.mlmodel"
    assert (
        main(
            [
                "export",
                str(source),
                "-o",
                str(out),
                "--loss",
                "cce",
                "--pipeline",
                "--backbone",
                "auto",
            ]
        )
        == 2
    )
    assert "does not apply to ONNX" in capsys.readouterr().err and not out.exists()
    factory = tmp_path / "net.py"
    factory.write_text(
        "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Linear(6, 3))\n"
    )
    assert (
        main(
            [
                "export",
                f"{factory}:make",
                "--example-shape",
                "6",
                "-o",
                str(out),
                "--loss",
                "cce",
                "--backbone",
                "coremltools",
            ]
        )
        == 2
    )
    assert "add --pipeline" in capsys.readouterr().err and not out.exists()
