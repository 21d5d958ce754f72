"""Docs: generated pages match the code, and the site builds with ``mkdocs build --strict``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "docs" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_findings_page_equals_the_generated_one():
    gen_docs = _gen_docs()
    committed = (ROOT / "docs" / "validator-findings.md").read_text(encoding="utf-8")
    assert committed == gen_docs.findings_page(), (
        "docs/validator-findings.md is stale: run python docs/gen_docs.py"
    )


def test_committed_supported_ops_page_equals_the_generated_one():
    committed = (ROOT / "docs" / "supported-ops.md").read_text(encoding="utf-8")
    assert committed == _gen_docs().supported_ops_page(), (
        "docs/supported-ops.md is stale: run python docs/gen_docs.py"
    )


def test_supported_ops_page_lists_every_ir_op_and_activation_kind():
    from updatable_coreml import ops
    from updatable_coreml.ops.activation import KINDS

    page = _gen_docs().supported_ops_page()
    for name in ops.OPS:
        assert f"| `{name}` | {ops.OPS[name].family} |" in page
    for kind in KINDS:
        assert f"| `{kind}` | " in page


def test_findings_page_lists_every_code_with_its_fix():
    from updatable_coreml.validator import CODES

    page = _gen_docs().findings_page()
    for code, (severity, _, fix) in CODES.items():
        assert f"## {code}\n\n**{severity}**" in page
        assert fix in page


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs not installed (pip install '.[docs]')")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "validator-findings" / "index.html").exists()
    assert not (tmp_path / "site" / "gen_docs.py").exists()
