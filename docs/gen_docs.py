"""Generate the docs pages that must never drift from the code.

``validator-findings.md`` is rendered from ``updatable_coreml.validator.CODES``, the same table
the validator reports from, so a new or reworded finding shows up in the docs by itself.

    python docs/gen_docs.py          # rewrite the generated pages
    python docs/gen_docs.py --check  # exit 1 if a committed page is stale

mkdocs.yml also loads this file as a hook, so ``mkdocs build`` renders these pages from the
code as it is, even before they are regenerated.
tests/test_docs.py fails when the committed page differs from the generated one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

DOCS = Path(__file__).resolve().parent


def findings_page() -> str:
    """The findings catalogue: a summary table, then one section per code (linkable anchors)."""
    from updatable_coreml.validator import CODES

    lines = [
        "# Validator findings",
        "",
        "<!-- Generated from updatable_coreml.validator.CODES by docs/gen_docs.py; do not edit. -->",
        "",
        "`updatable-coreml validate MODEL` (and `updatable_coreml.validate(model)`) reports each",
        "problem as a finding: a stable code, the layer it concerns, a message, and a fix.",
        "Errors are what Core ML itself refuses when it loads or updates the model; warnings are",
        "failures people reported on device that Core ML's validator does not catch.",
        "The command exits 0 when there is no error, 1 when there is one (`--strict` counts",
        "warnings too), and 2 when the file cannot be read as a Core ML model.",
        "",
        "| Code | Severity | Meaning |",
        "| --- | --- | --- |",
    ]
    for code, (severity, meaning, _) in CODES.items():
        lines.append(f"| [`{code}`](#{code.lower()}) | {severity} | {_cell(meaning)} |")
    for code, (severity, meaning, fix) in CODES.items():
        lines += ["", f"## {code}", "", f"**{severity}**: {meaning}", "", f"**Fix:** {fix}"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


PAGES = {"validator-findings.md": findings_page}


def stale_pages() -> list[str]:
    return [name for name, render in PAGES.items()
            if not (DOCS / name).exists() or (DOCS / name).read_text(encoding="utf-8") != render()]


def write_pages() -> list[str]:
    """Rewrite the pages that changed (only those, so file times stay put); return their names."""
    changed = stale_pages()
    for name in changed:
        (DOCS / name).write_text(PAGES[name](), encoding="utf-8")
    return changed


def on_page_read_source(page, config) -> Optional[str]:
    """mkdocs hook: build generated pages from the code as it is now, without touching files."""
    render = PAGES.get(page.file.src_uri)
    return render() if render is not None else None


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        stale = stale_pages()
        if stale:
            print(f"stale generated docs: {', '.join(stale)}; run python docs/gen_docs.py",
                  file=sys.stderr)
        sys.exit(1 if stale else 0)
    for page in write_pages():
        print(f"wrote docs/{page}")
