"""The GitHub Actions workflow cannot run here, so check what can be checked offline.

``check-jsonschema`` ships the GitHub workflow schema (``vendor.github-workflows``); validating
against the vendored copy needs no network, and the test blocks any attempt through a dead
proxy. The rest pins down what the workflow promises: three Linux Pythons running ``./dev
test``, and an Apple Silicon job on the keras + torch extras without TensorFlow that runs the
real-Core-ML tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "ci.yml"


def validate(path: Path) -> subprocess.CompletedProcess:
    dead_proxy = "http://127.0.0.1:9"  # any network use fails instead of silently downloading
    env = dict(
        os.environ,
        HTTP_PROXY=dead_proxy,
        HTTPS_PROXY=dead_proxy,
        http_proxy=dead_proxy,
        https_proxy=dead_proxy,
        NO_PROXY="",
        no_proxy="",
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def workflow() -> dict:
    return YAML(typ="safe").load(WORKFLOW.read_text())


def test_workflow_matches_the_github_schema():
    result = validate(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on: macos-14", "runs_on: macos-14"))
    result = validate(broken)
    assert result.returncode != 0
    assert "runs_on" in result.stdout + result.stderr


def test_linux_matrix_runs_the_test_command(workflow):
    job = workflow["jobs"]["linux"]
    assert job["strategy"]["matrix"]["python"] == ["3.10", "3.11", "3.12"]
    assert job["runs-on"].startswith("ubuntu")
    assert any(step.get("run", "").strip() == "./dev test" for step in job["steps"])


def test_macos_job_runs_real_core_ml_without_tensorflow(workflow):
    job = workflow["jobs"]["macos"]
    runner = job["runs-on"]
    assert runner.startswith("macos-") and int(runner.split("-")[1]) >= 14  # Apple Silicon
    assert job["env"]["KERAS_BACKEND"] == "torch"
    commands = "\n".join(step.get("run", "") for step in job["steps"])
    assert '".[keras,torch]"' in commands and "tensorflow" not in commands.lower()
    assert "tests/test_coreml_macos.py" in commands
    assert "xcrun" in commands  # the Swift toolchain the type check uses is shown in the log


def test_pre_commit_config_is_valid_and_offline():
    """pre-commit's own validator; every hook is local (runs the .venv tools, downloads nothing)."""
    root = WORKFLOW.parents[2]
    config = root / ".pre-commit-config.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "pre_commit", "validate-config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    hooks = YAML(typ="safe").load(config.read_text())["repos"]
    assert [repo["repo"] for repo in hooks] == ["local"]
    ids = {hook["id"] for hook in hooks[0]["hooks"]}
    assert ids == {"ruff", "ruff-format", "mypy"}
