"""CLI contract: exit codes, one-line errors, no partial outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bad_input_files import image_classifier, image_folders, mlpackage
from models import squeezenet_like
from updatable_coreml import __version__
from updatable_coreml.cli import main

ROOT = Path(__file__).resolve().parents[1]
#: The installed console script (pyproject's [project.scripts]), running this checkout's code.
SCRIPT = Path(sys.executable).parent / "updatable-coreml"
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "updatable_coreml.cli"]


def cli_env(*first: Path, **extra: str) -> dict:
    """The environment for a CLI process: this checkout first on the path (after ``first``)."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, first), str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "Squeeze.mlmodel"
    path.write_bytes(squeezenet_like().SerializeToString())
    return path


@pytest.fixture(scope="module")
def updatable_model(plain_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("u") / "Updatable.mlmodel"
    assert (
        main(
            [
                "make-updatable",
                str(plain_model),
                "-o",
                str(out),
                "--trainable",
                "fc",
                "-q",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    return out


def run(*args, env=None):
    return subprocess.run(
        CLI + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env or cli_env(),
    )


def _bad_files(tmp_path):
    good = squeezenet_like().SerializeToString()
    (tmp_path / "empty.mlmodel").write_bytes(b"")
    (tmp_path / "junk.mlmodel").write_bytes(b"\xff\x00not a model at all")
    (tmp_path / "truncated.mlmodel").write_bytes(good[: len(good) // 2])
    (tmp_path / "folder").mkdir()
    (tmp_path / "Model.mlpackage").mkdir()
    return [
        "empty.mlmodel",
        "junk.mlmodel",
        "truncated.mlmodel",
        "folder",
        "Model.mlpackage",
        "missing.mlmodel",
    ]


@pytest.mark.parametrize("command", ["inspect", "validate", "make-updatable"])
def test_bad_model_files_give_one_line_and_exit_2(tmp_path, command):
    for name in _bad_files(tmp_path):
        out = tmp_path / "out.mlmodel"
        extra = ["-o", out, "--trainable", "fc"] if command == "make-updatable" else []
        result = run(command, tmp_path / name, *extra)
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("updatable-coreml: error: "), result.stderr
        assert name.split(".")[0] in lines[0]
        assert "Traceback" not in result.stderr
        assert not out.exists()
        assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_mlpackage_message_says_what_to_do(tmp_path):
    (tmp_path / "Model.mlpackage").mkdir()
    result = run("inspect", tmp_path / "Model.mlpackage")
    assert "ML Program" in result.stderr and "neuralnetwork" in result.stderr


def test_validate_exit_codes_and_json(plain_model, updatable_model):
    assert main(["validate", str(updatable_model)]) == 0
    assert main(["validate", str(plain_model)]) == 1
    result = run("validate", "--json", updatable_model, plain_model)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report[str(updatable_model)]["valid"] is True
    assert report[str(plain_model)]["findings"][0]["code"] == "NOT_UPDATABLE"


def test_inspect_text_and_json(updatable_model, capsys):
    assert main(["inspect", str(updatable_model)]) == 0
    text = capsys.readouterr().out
    assert "UB fc" in text and "epochs: 10" in text and "seed: 1" in text
    assert main(["inspect", "--json", str(updatable_model)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["is_updatable"] and info["model_type"] == "neuralNetworkClassifier"
    assert (info["schema"], info["schema_version"]) == ("updatable-coreml/inspect", 1)
    params = info["update_parameters"]  # numbers and ranges, not display strings
    assert params["kind"] == "network" and params["seed"] == 1 and params["shuffle"] is True
    assert params["epochs"]["default"] == 10 and params["batch_size"]["default"] == 8
    assert params["optimizer"] == {
        "kind": "sgd",
        "learning_rate": {"default": 0.01, "allowed": {"range": [0.0, 1.0]}},
        "momentum": {"default": 0.0, "allowed": {"range": [0.0, 1.0]}},
    }
    image = info["inputs"][0]
    assert (
        image["name"] == "image" and image["type"] == "multiArray" and image["shape"] == [3, 16, 16]
    )
    fc = next(layer for layer in info["layers"] if layer["name"] == "fc")
    assert fc["updatable"] and fc["weights"]["W"] == [3, 16]
    assert [f["name"] for f in info["training_inputs"]] == ["image", "classLabel"]


def test_make_updatable_refusal_names_the_blocking_layer(plain_model, tmp_path):
    out = tmp_path / "x.mlmodel"
    result = run("make-updatable", plain_model, "-o", out, "--trainable", "fire2/squeeze")
    assert result.returncode == 2 and "fire2/concat" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_usage_errors_are_one_line(plain_model, tmp_path):
    result = run(
        "make-updatable",
        plain_model,
        "-o",
        tmp_path / "x.mlmodel",
        "--trainable",
        "fc",
        "--allowed-batch-sizes",
        "1,x",
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_output_in_missing_or_read_only_folder(plain_model, tmp_path):
    result = run(
        "make-updatable", plain_model, "-o", tmp_path / "nope" / "x.mlmodel", "--trainable", "fc"
    )
    assert result.returncode == 2 and "does not exist" in result.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions")
        result = run("make-updatable", plain_model, "-o", locked / "x.mlmodel", "--trainable", "fc")
        assert result.returncode == 2 and "cannot write" in result.stderr
    finally:
        locked.chmod(0o700)


def test_cli_does_not_import_heavy_frameworks(updatable_model):
    code = (
        "import sys; from updatable_coreml.cli import main; "
        f"main(['inspect', {str(updatable_model)!r}]); "
        "heavy = [m for m in ('tensorflow', 'torch', 'keras', 'coremltools.converters') "
        "if m in sys.modules]; print('HEAVY', heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"updatable-coreml {__version__}"


# -- optional dependencies: checked before any work, one line naming the extra, exit 2 ----------


def _without(tmp_path: Path, *modules: str) -> Path:
    """A folder that, first on PYTHONPATH, makes ``modules`` look uninstalled."""
    folder = tmp_path / "blocked"
    for module in modules:
        (folder / module).mkdir(parents=True)
        (folder / module / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"
        )
    return folder


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    (root / "classifier.mlmodel").write_bytes(image_classifier().SerializeToString())
    image_folders(root)
    return root


def _one_line_naming(result, *words):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("updatable-coreml: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_simulate_plot_without_matplotlib_refuses_before_training(image_data, tmp_path):
    out = tmp_path / "Updated.mlmodel"
    result = run(
        "simulate",
        image_data / "classifier.mlmodel",
        "--train",
        image_data / "ok.npz",
        "--plot",
        tmp_path / "loss.png",
        "-o",
        out,
        env=cli_env(_without(tmp_path, "matplotlib")),
    )
    _one_line_naming(result, "--plot", "matplotlib", 'pip install "updatable-coreml[plot]"')
    assert result.stdout == "" and not out.exists()  # no epoch ran


def test_image_folder_without_pillow(image_data, tmp_path):
    result = run(
        "simulate",
        image_data / "classifier.mlmodel",
        "--train",
        image_data / "train_ok",
        env=cli_env(_without(tmp_path, "PIL")),
    )
    _one_line_naming(result, "train_ok", "pillow", "updatable-coreml[plot]")


@pytest.mark.parametrize(
    "source, module, extra",
    [
        ("m.onnx", "onnx", "onnx"),
        ("m.keras", "keras", "keras"),
        ("pkg.mod:factory", "torch", "torch"),
    ],
)
def test_export_without_its_framework(tmp_path, source, module, extra):
    out = tmp_path / "m.mlmodel"
    result = run(
        "export",
        tmp_path / source if "." in source[-6:] else source,
        "--loss",
        "cce",
        "-o",
        out,
        env=cli_env(_without(tmp_path, module)),
    )
    _one_line_naming(result, module, f"updatable-coreml[{extra}]")
    assert not out.exists()


def test_keras_without_its_backend(tmp_path):
    pytest.importorskip("keras")
    result = run(
        "export",
        tmp_path / "m.keras",
        "-o",
        tmp_path / "m.mlmodel",
        env=cli_env(_without(tmp_path, "jax"), KERAS_BACKEND="jax"),
    )
    _one_line_naming(result, "Keras backend", "'jax'", "KERAS_BACKEND")


def test_demo_without_keras(tmp_path):
    result = run("demo", "-o", tmp_path / "demo", env=cli_env(_without(tmp_path, "keras")))
    _one_line_naming(result, "the demo", "keras", 'pip install "updatable-coreml[demo]"')
    assert not (tmp_path / "demo").exists()


def test_inspect_into_a_closed_pipe_has_no_traceback(updatable_model):
    process = subprocess.Popen(
        CLI + ["inspect", str(updatable_model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    process.stdout.close()  # like `| head -5` exiting before inspect writes
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, stderr
    assert stderr == ""


# -- .mlpackage: described, not refused -------------------------------------------------------


def test_inspect_mlpackage_describes_the_ml_program(tmp_path):
    package = mlpackage(tmp_path / "Program.mlpackage")
    result = run("inspect", package)
    assert result.returncode == 0, result.stderr
    assert "type: mlProgram" in result.stdout and "updatable: no" in result.stdout
    assert "function 'main' (opset CoreML6): 3 operation(s): relu x2, linear x1" in result.stdout
    assert "not updatable" in result.stdout and "convert_to='neuralnetwork'" in result.stdout
    assert "inputs:\n  x: MultiArray" in result.stdout
    info = json.loads(run("inspect", "--json", package).stdout)
    assert info["model_type"] == "mlProgram" and info["is_updatable"] is False


def test_sizes_use_binary_units_everywhere(updatable_model):
    from updatable_coreml.sizes import format_size

    assert [format_size(n) for n in (0, 900, 1024, 151_000, 5 * 2**20)] == [
        "0 B",
        "900 B",
        "1.0 KiB",
        "147.5 KiB",
        "5.0 MiB",
    ]
    text = run("inspect", updatable_model).stdout
    assert f"({format_size(updatable_model.stat().st_size)})" in text.splitlines()[0]


# -- one name per idea, help for everything ---------------------------------------------------


def _subparsers():
    import argparse

    from updatable_coreml.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_every_option_has_help_and_help_has_no_rest_markup():
    import argparse

    parser, commands = _subparsers()
    for name, sub in [("", parser), *commands.items()]:
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, (name, action.option_strings or action.dest)
        text = sub.format_help()
        for markup in ("``", ":class:", ":func:", ":meth:"):
            assert markup not in text, (name, markup)
    assert "``" not in run("export", "--help").stdout


def test_output_is_dash_o_everywhere():
    _, commands = _subparsers()
    for name in ("make-updatable", "export", "simulate", "swift", "demo"):
        flags = {s for a in commands[name]._actions for s in a.option_strings}
        assert {"-o", "--output"} <= flags, name


def test_one_name_for_trainable_layers_and_spare_classes(plain_model, tmp_path):
    from updatable_coreml.inspection import inspect

    _, commands = _subparsers()
    for name in ("make-updatable", "export"):
        flags = {s for a in commands[name]._actions for s in a.option_strings}
        assert {"--trainable", "--extra-class-slots"} <= flags, name
    out = tmp_path / "slots.mlmodel"
    result = run(
        "make-updatable",
        plain_model,
        "-o",
        out,
        "--trainable",
        "fc",
        "--extra-class-slots",
        "2",
        "-q",
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert inspect(out).class_labels == ["class0", "class1", "class2", "user0", "user1"]


def test_old_spellings_work_with_one_warning(plain_model, image_data, tmp_path):
    from updatable_coreml.inspection import inspect

    out = tmp_path / "old.mlmodel"
    result = run(
        "make-updatable", plain_model, "-o", out, "--layers", "fc", "--expand-classes", "4", "-q"
    )
    assert result.returncode == 0, result.stderr
    assert "warning: --layers is deprecated, use --trainable" in result.stderr
    assert (
        "--expand-classes is deprecated, use --extra-class-slots (spare slots, not the total)"
        in result.stderr
    )
    assert len(inspect(out).class_labels) == 4
    updated = tmp_path / "updated.mlmodel"
    result = run(
        "simulate",
        image_data / "classifier.mlmodel",
        "--train",
        image_data / "ok.npz",
        "--epochs",
        "1",
        "--out",
        updated,
    )
    assert result.returncode == 0 and updated.exists(), result.stderr
    assert "--out is deprecated, use -o/--output" in result.stderr


def test_simulate_argument_error_prints_no_table_header(image_data):
    result = run(
        "simulate",
        image_data / "classifier.mlmodel",
        "--train",
        image_data / "ok.npz",
        "--epochs",
        "7",
    )
    assert result.returncode == 2 and "epochs=7" in result.stderr
    assert result.stdout == ""


def test_lr_without_optimizer_means_sgd_unless_the_source_has_one():
    from updatable_coreml.cli.export_sources import optimizer_from
    from updatable_coreml.errors import ConfigError
    from updatable_coreml.training import SGD

    optimizer = optimizer_from({"lr": 0.05, "momentum": 0.5})
    assert isinstance(optimizer, SGD)
    assert optimizer.learning_rate.default == 0.05 and optimizer.momentum.default == 0.5
    with pytest.raises(ConfigError, match="--beta1 belongs to Adam: add --optimizer adam"):
        optimizer_from({"beta1": 0.8})
    with pytest.raises(ConfigError, match="compiled optimizer applies"):
        optimizer_from({"lr": 0.05}, keras_source=True)


# -- progress: on a terminal only, never under --quiet ------------------------------------------


def _run_with_terminal_stderr(*args):
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe); returns (code, out, err)."""
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        CLI + [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=cli_env(TERM="xterm", COLUMNS="100"),
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    out = process.stdout.read().decode()
    code = process.wait(timeout=300)
    os.close(leader)
    return code, out, b"".join(chunks).decode(errors="replace")


def test_simulate_shows_progress_on_a_terminal_only(image_data):
    model, data = image_data / "classifier.mlmodel", image_data / "ok.npz"
    code, out, err = _run_with_terminal_stderr("simulate", model, "--train", data, "--epochs", "3")
    assert code == 0, err
    assert "mini-batch 1" in err and "3/3" in err  # the bar, on stderr
    assert out.splitlines()[0].split() == ["epoch", "train", "loss", "val", "loss", "val", "acc"]
    assert len(out.splitlines()) == 4  # the table stays on stdout, whole
    code, out, err = _run_with_terminal_stderr(
        "simulate", model, "--train", data, "--epochs", "3", "-q"
    )
    assert code == 0 and "mini-batch" not in err and len(out.splitlines()) == 4
    result = run("simulate", model, "--train", data, "--epochs", "3")  # not a terminal
    assert result.returncode == 0 and result.stderr == ""


def test_simulate_assumptions_presets_and_spread(image_data):
    from updatable_coreml.runtime.assumptions import PRESETS

    _, commands = _subparsers()
    help_text = next(
        a.help for a in commands["simulate"]._actions if "--assumptions" in a.option_strings
    )
    assert all(name in help_text for name in PRESETS) and "'all'" in help_text
    model, data = image_data / "classifier.mlmodel", image_data / "ok.npz"
    result = run("simulate", model, "--train", data, "--epochs", "1", "--assumptions", "all")
    assert result.returncode == 0, result.stderr
    assert "unknown Core ML formulas" in result.stdout and "(default)" in result.stdout
    result = run("simulate", model, "--train", data, "--assumptions", "bogus")
    assert result.returncode == 2 and "unknown assumptions 'bogus'" in result.stderr
    assert result.stdout == ""
