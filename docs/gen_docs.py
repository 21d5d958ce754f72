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
        "Errors are what Core ML itself refuses when it loads or updates the model (and the few",
        "refusals we make on purpose, listed in [Limits](limits.md)); warnings are failures people",
        "reported on device that Core ML's validator does not catch; info notes change nothing.",
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
    """The op table (IR ops, the Core ML layers they write, what Core ML can do with them),
    then what each frontend converts and what the runtime runs, read from the registries."""
    from updatable_coreml import coreml_rules
    from updatable_coreml.exporters import keras
    from updatable_coreml.exporters.onnx import translate as onnx_ops
    from updatable_coreml.exporters.torch import translate as torch_ops
    from updatable_coreml.runtime import registry

    def listing(names) -> str:
        return ", ".join(f"`{name}`" for name in sorted(names))

    sections = [
        (
            "Keras 3 layers",
            "Layer classes `export_keras` converts (anything else is refused by name):",
            keras.CONVERTERS,
        ),
        (
            "Keras activations",
            "Values of `activation=` and `keras.layers.Activation`:",
            keras.ACTIVATIONS,
        ),
        (
            "PyTorch (aten) ops",
            "Ops of the `torch.export` graph `export_torch` converts:",
            torch_ops.CONVERTERS,
        ),
        (
            "ONNX ops",
            "Op types `export_onnx` converts (default domain, opset 13 and newer):",
            onnx_ops.CONVERTERS,
        ),
        ("Runtime: forward", "Core ML layer types the reference runtime runs:", registry.FORWARD),
        (
            "Runtime: backward",
            "Layer types the runtime backpropagates through, exactly those "
            f"of Core ML's rules table (activations: {listing(coreml_rules.BACKPROP_ACTIVATIONS)}):",
            registry.BACKWARD,
        ),
        (
            "Core ML: backpropagation",
            "Layer types Core ML lets sit between the loss and an "
            "updatable layer (`coreml_rules`; plus a softmax directly before categorical "
            "cross-entropy):",
            coreml_rules.BACKPROP_LAYER_TYPES,
        ),
    ]
    lines = [
        "# Supported ops",
        "",
        "<!-- Generated from the op table and the converter registries by docs/gen_docs.py; "
        "do not edit. -->",
        "",
    ]
    lines += _op_table_lines()
    for title, intro, names in sections:
        lines += [f"## {title}", "", f"{intro} {listing(names)}.", ""]
    return "\n".join(lines)


def _op_table_lines() -> list[str]:
    """The IR ops by family, and the activation kinds, from ``updatable_coreml.ops``."""
    from updatable_coreml import ops
    from updatable_coreml.ops.activation import KINDS

    def yes(flag: bool) -> str:
        return "yes" if flag else ""

    def layers(written) -> str:
        return ", ".join(f"`{layer}`" + (f" ({kind})" if kind else "") for layer, kind in written)

    lines = [
        "## IR ops",
        "",
        "Every frontend translates into these ops (`updatable_coreml.ops`, one module per "
        "family); the backend writes each as the Core ML layer(s) listed. *Updatable* and "
        "*gradients pass* follow from those layer types and Core ML's rules "
        "(`updatable_coreml.coreml_rules`).",
        "",
        "| IR op | Family | Core ML layer | Updatable | Gradients pass "
        "| Attributes (a) and weights (w) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for family in ops.FAMILIES:
        for name, definition in ops.OPS.items():
            if definition.family != family.__name__.rsplit(".", 1)[-1]:
                continue
            written = (
                "removed by the passes"
                if definition.write is None
                else layers((layer, None) for layer in sorted(definition.layer_types()))
            )
            through = (
                name != "activation"
                and definition.write is not None
                and definition.passes_gradients()
            )
            gradients = "by kind" if name == "activation" else yes(through)
            lines.append(
                f"| `{name}` | {definition.family} | {written} | {yes(definition.updatable())} "
                f"| {gradients} | {_cell(definition.doc)} |"
            )
    lines += [
        "",
        "### Activation kinds",
        "",
        "| Kind | Core ML layers | Gradients pass |",
        "| --- | --- | --- |",
    ]
    for attrs in ops.OPS["activation"].variants:
        kind = attrs["kind"]
        lines.append(
            f"| `{kind}` | {layers(KINDS[kind].layers(attrs))} | "
            f"{yes(ops.OPS['activation'].passes_gradients(attrs))} |"
        )
    return lines + [""]


#: What raises each error type, in words; a new error class must be added here (tested).
ERROR_CAUSES = {
    "ModelFileError": [
        "a model, data or config file is missing, empty, a directory, truncated, or not of its "
        "format (Core ML protobuf, `.keras` zip, ONNX protobuf, `.npz`, torch state dict)",
        "an `.mlpackage` or ML Program where a NeuralNetwork `.mlmodel` is needed",
        "an ONNX initializer whose external data file is missing or lies outside the model's folder",
        "a `.keras`/`.h5` file that `safe_mode=True` refuses (a `Lambda` layer: never run)",
        "an output path whose folder is missing, is a file or is read-only, that is a directory, "
        "or that would overwrite the input",
        "the runtime refuses a model declaring a feature beyond its size budget (see Limits)",
    ],
    "ConfigError": [
        "a hyperparameter or allowed range out of bounds (learning rate in 0..1, batch size and "
        "epochs >= 1, a default outside its allowed set, beta1/beta2 in [0, 1], eps > 0, seed >= 0)",
        "an override (`simulate --epochs/--lr/--batch-size`, `update(parameters=...)`) outside "
        "what the model allows",
        "class labels whose count differs from the output's size, or that repeat",
        "unknown layer names (`--trainable`, `feature_layer`), unknown config keys, unknown "
        "source types, missing `--loss` for ONNX and torch sources",
        "training data: labels not in the classifier, images of the wrong size or mode in an "
        "`.npz`, unreadable or oversized images in a folder, an empty folder, object arrays "
        "(pickles) in an `.npz`",
    ],
    "InputShapeError": [
        "`predict`, `update` or `simulate` data whose MultiArray shape the model does not "
        "allow (its declared shape, enumerated shapes or shape range), named with both shapes; "
        "channel-last `(H, W, C)` data for a channel-first model names "
        "`runtime.to_channel_first` (simulate: `--layout nhwc`)",
    ],
    "UnsupportedError": [
        "a layer or op without a converter, anywhere in the model (named with the list of "
        "supported ones)",
        "a loss other than categorical cross-entropy / mean squared error, or loss options Core "
        "ML cannot carry: label smoothing, class weights, `ignore_index`, a reduction other "
        "than the mean",
        "optimizer options Core ML cannot carry: Nesterov momentum, weight decay, AMSGrad, "
        "dampening, several parameter groups with different values, optimizers other than SGD "
        "and Adam (`--allow-unsupported` turns option refusals into report warnings)",
    ],
    "NotUpdatableError": [
        "a chosen layer Core ML cannot train (only convolution and innerProduct), or quantized",
        "a layer Core ML cannot backpropagate through between the loss and a trainable layer "
        "(named, with the layers to freeze)",
        "a layer whose weight trains but whose bias is frozen (or the reverse), tied weights",
        "`make-updatable`/`swift` on an ML Program, a model that is not updatable, or an export "
        "the validator rejects",
    ],
    "MissingDependencyError": [
        "an optional dependency the command needs is not installed: matplotlib for `--plot`, "
        "Pillow for image folders, onnx for an `.onnx` source, Keras and its backend for a "
        "`.keras` source or the demo, torch for a torch source; the message names the extra "
        'to install (`pip install "updatable-coreml[plot]"`, ...). Checked before any work',
    ],
    "UntrustedSourceError": [
        "`export model.pt2` without `--trust-source`: `torch.export.load` unpickles parts of the "
        "file, so a crafted `.pt2` runs code",
    ],
    "RuntimeLayerError": [
        "a layer's parameters do not fit its inputs (named), or a `custom` layer's class has "
        "no Python implementation registered (`register_custom_layer`, see runtime.md)",
        "a layer would make a blob beyond the runtime's size budget, or runs out of memory",
        "an output, a classifier's probabilities or a pipeline feature no layer produces",
    ],
}


def failure_modes_page() -> str:
    """Every error the CLI can print: exit codes, error types (from ``errors``), validator
    codes (from ``validator.CODES``), untrusted-input handling and limits (from the code)."""
    import inspect

    from updatable_coreml import errors
    from updatable_coreml.runtime import limits, simulate
    from updatable_coreml.validator import CODES

    classes = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.UpdatableCoreMLError) and cls is not errors.UpdatableCoreMLError
    ]
    classes.sort(key=lambda cls: inspect.getsourcelines(cls)[1])
    lines = [
        "# Failure modes",
        "",
        "<!-- Generated from updatable_coreml.errors, validator.CODES and the runtime limits by "
        "docs/gen_docs.py; do not edit. -->",
        "",
        "Model files and datasets are untrusted input. Every refusal is **one line** on stderr,",
        "`updatable-coreml: error: <what is wrong, naming the file/layer/option>; <the fix>`,",
        "never a traceback, and no output file is left behind: outputs are written to a temp",
        "file in the destination folder and renamed, so a reader (or a killed run) sees the",
        "previous complete file or the new one. Output paths are checked before any work.",
        "From Python, the same refusals are exceptions deriving from",
        "`updatable_coreml.errors.UpdatableCoreMLError`.",
        "",
        "## Exit codes",
        "",
        "| Code | Meaning |",
        "| --- | --- |",
        "| 0 | done; the model is valid |",
        "| 1 | `validate`/`export`: the model has validator errors (`--strict`: or warnings); "
        "the findings are printed |",
        "| 2 | unusable input or unsupported construct: one `error:` line (below); also usage "
        "errors |",
        "| 130 | interrupted (Ctrl-C) |",
        "| 141 | the reader closed standard output (`inspect M` piped into `head -5`), as a shell reports "
        "SIGPIPE; no traceback |",
        "",
        "## Errors (exit code 2)",
        "",
    ]
    for cls in classes:
        doc = " ".join(inspect.getdoc(cls).split())
        lines += [f"### {cls.__name__}", "", f"{doc}", "", "Raised when:", ""]
        lines += [f"- {cause}" for cause in ERROR_CAUSES[cls.__name__]]
        lines.append("")
    lines += [
        "## Validator findings (exit code 1)",
        "",
        "`validate` and `export` report these codes; each is explained with its fix in",
        "[Validator findings](validator-findings.md).",
        "",
        "| Code | Severity | Meaning |",
        "| --- | --- | --- |",
    ]
    for code, (severity, meaning, _) in CODES.items():
        lines.append(
            f"| [`{code}`](validator-findings.md#{code.lower()}) | {severity} | {_cell(meaning)} |"
        )
    lines += [
        "",
        "## Untrusted sources",
        "",
        "| Input | How it is read | Never |",
        "| --- | --- | --- |",
        "| `.mlmodel` | protobuf parse only | runs code; parse errors become `ModelFileError` |",
        "| `.keras`, `.h5` | `keras.saving.load_model(safe_mode=True)` | deserializes a `Lambda` "
        "(refused); use Keras >= 3.14, earlier releases have known `safe_mode` bypasses |",
        "| `.onnx` | protobuf parse; external data only from files inside the model's folder | "
        "follows `..` or absolute external-data paths |",
        "| `--weights` state dict | `torch.load(weights_only=True)` | unpickles objects (refused) |",
        "| `.pt2` | `torch.export.load`, **only with `--trust-source`** | loaded without the flag: "
        "it unpickles parts of the file without `weights_only` |",
        "| `module:factory`, `file.py:factory` | imports and calls your Python code | it is code "
        "you name on the command line; never a downloaded file |",
        "| `.npz` datasets | `numpy.load(allow_pickle=False)` | unpickles object arrays (refused) |",
        "| image folders | Pillow, size checked before decoding | decodes images over the limit |",
        "",
        "`--trust-source` is a command-line flag only (a config file cannot set it). It allows",
        "exactly one thing: reading a `.pt2` program with `torch.export.load`, which can run code",
        "stored in the file. Pass it only for programs you saved yourself.",
        "",
        "## Limits",
        "",
        f"- The reference runtime refuses blobs of more than {limits.MAX_BLOB_ELEMENTS:,} values "
        "per example: declared inputs/outputs at `load`, layer outputs (and the parameters of "
        "layers that grow their input: padding, upsample, resize, repeat, transposed convolution, "
        "broadcasting) before each layer runs. Raise "
        "`updatable_coreml.runtime.limits.MAX_BLOB_ELEMENTS` for a model that needs more.",
        f"- `simulate` refuses images of more than {simulate.MAX_IMAGE_PIXELS:,} pixels before "
        "decoding them (Pillow also refuses decompression bombs).",
    ]
    return "\n".join(lines) + "\n"


PAGES = {
    "validator-findings.md": findings_page,
    "supported-ops.md": supported_ops_page,
    "failure-modes.md": failure_modes_page,
}


def stale_pages() -> list[str]:
    return [
        name
        for name, render in PAGES.items()
        if not (DOCS / name).exists() or (DOCS / name).read_text(encoding="utf-8") != render()
    ]


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
            print(
                f"stale generated docs: {', '.join(stale)}; run python docs/gen_docs.py",
                file=sys.stderr,
            )
        sys.exit(1 if stale else 0)
    for page in write_pages():
        print(f"wrote docs/{page}")
