"""CLI contract: exit codes, one-line errors, no partial outputs."""

import json
import os
import subprocess
import sys

import pytest

from models import squeezenet_like
from updatable_coreml.cli import main

CLI = [sys.executable, "-m", "updatable_coreml.cli"]


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "Squeeze.mlmodel"
    path.write_bytes(squeezenet_like().SerializeToString())
    return path


@pytest.fixture(scope="module")
def updatable_model(plain_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("u") / "Updatable.mlmodel"
    assert main(["make-updatable", str(plain_model), "-o", str(out), "--layers", "fc", "-q",
                 "--seed", "1"]) == 0
    return out


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=120)


def _bad_files(tmp_path):
    good = squeezenet_like().SerializeToString()
    (tmp_path / "empty.mlmodel").write_bytes(b"")
    (tmp_path / "junk.mlmodel").write_bytes(b"\xff\x00not a model at all")
    (tmp_path / "truncated.mlmodel").write_bytes(good[: len(good) // 2])
    (tmp_path / "folder").mkdir()
    (tmp_path / "Model.mlpackage").mkdir()
    return ["empty.mlmodel", "junk.mlmodel", "truncated.mlmodel", "folder", "Model.mlpackage",
            "missing.mlmodel"]


@pytest.mark.parametrize("command", ["inspect", "validate", "make-updatable"])
def test_bad_model_files_give_one_line_and_exit_2(tmp_path, command):
    for name in _bad_files(tmp_path):
        out = tmp_path / "out.mlmodel"
        extra = ["-o", out, "--layers", "fc"] if command == "make-updatable" else []
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


def test_make_updatable_refusal_names_the_blocking_layer(plain_model, tmp_path):
    out = tmp_path / "x.mlmodel"
    result = run("make-updatable", plain_model, "-o", out, "--layers", "fire2/squeeze")
    assert result.returncode == 2 and "fire2/concat" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_usage_errors_are_one_line(plain_model, tmp_path):
    result = run("make-updatable", plain_model, "-o", tmp_path / "x.mlmodel", "--layers", "fc",
                 "--allowed-batch-sizes", "1,x")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_output_in_missing_or_read_only_folder(plain_model, tmp_path):
    result = run("make-updatable", plain_model, "-o", tmp_path / "nope" / "x.mlmodel", "--layers", "fc")
    assert result.returncode == 2 and "does not exist" in result.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions")
        result = run("make-updatable", plain_model, "-o", locked / "x.mlmodel", "--layers", "fc")
        assert result.returncode == 2 and "cannot write" in result.stderr
    finally:
        locked.chmod(0o700)


def test_cli_does_not_import_heavy_frameworks(updatable_model):
    code = ("import sys; from updatable_coreml.cli import main; main(['inspect', %r]); "
            "heavy = [m for m in ('tensorflow', 'torch', 'keras', 'coremltools.converters') "
            "if m in sys.modules]; print('HEAVY', heavy)" % str(updatable_model))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
