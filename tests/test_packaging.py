"""What pip installs and what the sdist ships: extras installable on Apple Silicon, a licence,
type information, no half test suite."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(extra: str) -> list[str]:
    """An extra's requirements with self-references (``updatable-coreml[a,b]``) expanded."""
    found = []
    for requirement in PROJECT["optional-dependencies"][extra]:
        nested = re.fullmatch(r"updatable-coreml\[(.+)\]", requirement)
        found += (
            [r for e in nested.group(1).split(",") for r in requirements(e)]
            if nested
            else [requirement]
        )
    return found


def names(extra: str) -> set[str]:
    return {re.split(r"[<>=!;~\[ ]", r, maxsplit=1)[0].lower() for r in requirements(extra)}


@pytest.mark.parametrize("extra", ["keras", "all", "demo", "test"])
def test_extras_leave_the_keras_backend_to_the_user(extra):
    # tensorflow-cpu has no macOS arm64 wheel: requiring it made these extras uninstallable there
    assert not {n for n in names(extra) if n.startswith("tensorflow")}, names(extra)
    if extra != "test":
        assert "keras" in names(extra)


def test_dev_setup_still_installs_the_pinned_backend():
    dev = (ROOT / "dev").read_text()
    assert (
        "tensorflow-cpu" in dev
        and "tensorflow-cpu==" in (ROOT / "constraints" / "dev.txt").read_text()
    )


def _imported_modules() -> set[str]:
    modules = set()
    for path in (ROOT / "updatable_coreml").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                "quiet_import",
                "require",
            ):
                if node.args and isinstance(node.args[0], ast.Constant):
                    modules.add(str(node.args[0].value).split(".")[0])
    return modules


def test_onnx_extra_pulls_only_what_the_package_imports():
    assert "onnxruntime" not in _imported_modules()
    assert names("onnx") == {"onnx"}
    assert "onnxruntime" in names("test")  # the parity tests compare against it


def test_licence_type_marker_and_metadata():
    text = (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause License" in text and "Neither the name of the copyright holder" in text
    assert PROJECT["license"] == "BSD-3-Clause" and PROJECT["license-files"] == ["LICENSE"]
    assert (ROOT / "updatable_coreml" / "py.typed").exists()
    assert "Typing :: Typed" in PROJECT["classifiers"]
    assert (
        'pip install ".[keras]"' in (ROOT / "README.md").read_text()
    )  # from source, until a release


@pytest.mark.slow
def test_sdist_ships_no_partial_test_suite(tmp_path):
    """Build the sdist from the tracked files: either the suite with its helpers, or none."""
    if shutil.which("git") is None:
        pytest.skip("needs git to list the tracked files")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    source = tmp_path / "src"
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    code = (
        "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    )
    built = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "dist")],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    with tarfile.open(tmp_path / "dist" / built.stdout.strip().splitlines()[-1]) as archive:
        members = [m.split("/", 1)[1] for m in archive.getnames() if "/" in m]
    tests = [m for m in members if m.startswith("tests/")]
    helpers = {"tests/conftest.py", "tests/models.py", "tests/bad_input_files.py"}
    assert not tests or helpers <= set(tests), tests
    assert "LICENSE" in members and "updatable_coreml/py.typed" in members
    assert "updatable_coreml/cli/__main__.py" in members
    templates = sorted(
        p.name for p in (ROOT / "updatable_coreml" / "swift" / "templates").iterdir()
    )
    assert templates and all(f"updatable_coreml/swift/templates/{t}" in members for t in templates)
