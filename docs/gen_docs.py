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


def supported_ops_page() -> str:
    """What each frontend converts and what the runtime runs, read from the registries."""
    from updatable_coreml.exporters import keras, onnx_ops, torch_ops
    from updatable_coreml.runtime import backward, registry
    from updatable_coreml.validator import BACKPROP_ACTIVATIONS, BACKPROP_LAYER_TYPES

    def listing(names) -> str:
        return ", ".join(f"`{name}`" for name in sorted(names))

    sections = [
        ("Keras 3 layers", "Layer classes `export_keras` converts (anything else is refused by "
         "name):", keras.CONVERTERS),
        ("Keras activations", "Values of `activation=` and `keras.layers.Activation`:", keras.ACTIVATIONS),
        ("PyTorch (aten) ops", "Ops of the `torch.export` graph `export_torch` converts:", torch_ops.CONVERTERS),
        ("ONNX ops", "Op types `export_onnx` converts (default domain, opset 13 and newer):",
         onnx_ops.CONVERTERS),
        ("Runtime: forward", "Core ML layer types the reference runtime runs:", registry.FORWARD),
        ("Runtime: backward", "Layer types the runtime backpropagates through (activations: "
         f"{listing(BACKPROP_ACTIVATIONS)}):",
         [kind for kind in backward.BACKWARD if kind not in backward.GRADIENT_STOPS]),
        ("Runtime: trained, no gradient through", "Layer types the runtime trains only as the "
         "first updatable layer on their path, as Core ML does (experimental):",
         backward.GRADIENT_STOPS),
        ("Core ML: backpropagation", "Layer types our validator lets sit between the loss and "
         "an updatable layer (plus a softmax directly before categorical cross-entropy):",
         BACKPROP_LAYER_TYPES),
    ]
    lines = ["# Supported ops", "",
             "<!-- Generated from the converter registries by docs/gen_docs.py; do not edit. -->", ""]
    for title, intro, names in sections:
        lines += [f"## {title}", "", f"{intro} {listing(names)}.", ""]
    return "\n".join(lines)


PAGES = {"validator-findings.md": findings_page, "supported-ops.md": supported_ops_page}


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
