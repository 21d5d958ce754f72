"""Generate the app-side Swift glue for an updatable model: ``updatable-coreml swift``.

Core ML's own generated class does not cover training: the app must know the exact training
input names and types, build an ``MLBatchProvider``, drive ``MLUpdateTask``, checkpoint,
change the learning rate between tasks, and save the result without ever leaving half a
model behind. Every one of those steps is easy to get subtly wrong, so we emit them from the
spec itself: the names, shapes and allowed values in the Swift file are the model's own.

The Swift text lives in ``templates/*.swift.tmpl`` (package data, ``${name}`` placeholders,
see ``render.py``); this module reads the spec and fills them in.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..errors import ConfigError, NotUpdatableError, UnsupportedError
from .render import render

if TYPE_CHECKING:  # the real imports are deferred: the CLI imports this package on every run
    from ..spec_io import Spec, SpecLike
    from ..training import FloatParam, IntParam, TrainingConfig

PIPELINE_TYPES = ("pipeline", "pipelineClassifier", "pipelineRegressor")

#: Swift keywords that cannot be used as plain identifiers (they would need backticks).
SWIFT_KEYWORDS = frozenset(
    """
    associatedtype class deinit enum extension fileprivate func import init inout internal let
    open operator private precedencegroup protocol public rethrows static struct subscript
    typealias var break case catch continue default defer do else fallthrough for guard if in
    repeat return throw switch where while Any as await false is nil self Self super throws true
    try async
""".split()
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: MultiArray data type -> (Swift element type for the convenience factory, MLMultiArrayDataType).
_ARRAY_TYPES = {
    "FLOAT32": ("Float", ".float32"),
    "DOUBLE": ("Double", ".double"),
    "INT32": ("Int32", ".int32"),
    "FLOAT16": ("Float", ".float16"),
}


class _Input(NamedTuple):
    """One training input: its real name, its Swift parameter name, and its feature type."""

    name: str
    ident: str
    kind: str
    doc: str
    shape: tuple[int, ...] | None = None
    array_type: str | None = None

    @property
    def literal(self) -> str:
        return _string_literal(self.name)


def generate_swift(
    model: SpecLike, *, class_name: str | None = None, source_name: str | None = None
) -> str:
    """Return the Swift source for ``model`` (path, bytes or spec).

    ``class_name`` names the trainer class (default: the file stem + ``Trainer``);
    ``source_name`` is the model's file name shown in the header (default: the path's name).
    Raises ``NotUpdatableError`` for a model Core ML could not update, ``UnsupportedError`` for
    a training input type the glue cannot build.
    """
    from ..spec_io import load_spec
    from ..training import TrainingConfig
    from ..validator import validate

    spec = load_spec(model)
    if source_name is None:
        source_name = Path(model).name if isinstance(model, (str, os.PathLike)) else "Model.mlmodel"
    if class_name is None:
        class_name = _upper_camel(Path(source_name).stem) + "Trainer"
    elif not _IDENTIFIER.match(class_name) or class_name in SWIFT_KEYWORDS:
        raise ConfigError(
            f"--class-name {class_name!r} is not a Swift type name; use letters, "
            "digits and _ (not starting with a digit)"
        )
    if spec.WhichOneof("Type") == "mlProgram":
        from ..spec_io import ML_PROGRAM_FIX

        raise NotUpdatableError(
            f"{source_name} is an ML Program, which cannot be updated on device; {ML_PROGRAM_FIX}"
        )
    if not spec.isUpdatable:
        raise NotUpdatableError(
            f"{source_name} is not updatable; run 'updatable-coreml "
            "make-updatable' or export it with updatable-coreml first"
        )
    errors = [f for f in validate(spec) if f.severity == "error"]
    if errors:
        raise NotUpdatableError(
            f"{source_name} is not a valid updatable model ({errors[0].code}: "
            f"{errors[0].message}); see 'updatable-coreml validate'"
        )
    trainee = _updatable_model(spec)
    inputs = _training_inputs(spec)
    is_knn = _kind(trainee) == "kNearestNeighborsClassifier"
    config = None if is_knn else TrainingConfig.from_spec(trainee)
    return render(
        "file.swift.tmpl", **_file_values(class_name, source_name, spec, trainee, inputs, config)
    )


def write_swift(
    model: str | os.PathLike, output: str | os.PathLike, *, class_name: str | None = None
) -> Path:
    """Generate the Swift glue for the model file ``model`` and write it atomically."""
    from ..spec_io import atomic_write_bytes

    text = generate_swift(model, class_name=class_name)
    return atomic_write_bytes(text.encode("utf-8"), output, not_same_as=model)


# -- reading the spec --------------------------------------------------------------------


def _updatable_model(spec: Spec) -> Spec:
    """The model MLUpdateTask trains: the spec itself, or a pipeline's last model."""
    from ..spec_io import NEURAL_NETWORK_TYPES

    while _kind(spec) in PIPELINE_TYPES:
        kind = _kind(spec)
        pipeline = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        spec = pipeline.models[-1]
    kind = _kind(spec)
    if kind not in NEURAL_NETWORK_TYPES and kind != "kNearestNeighborsClassifier":
        raise NotUpdatableError(f"cannot generate training glue for a {kind!r} model")
    return spec


def _training_inputs(spec: Spec) -> list[_Input]:
    """The top-level description's training inputs (a pipeline's own, which is what the app
    feeds), with Swift names that are valid, unique, and close to the real ones."""
    features = list(spec.description.trainingInput)
    if not features:
        raise NotUpdatableError(
            "the model lists no training inputs; re-export it or run "
            "'updatable-coreml make-updatable'"
        )
    used: set[str] = set()
    inputs = []
    for feature in features:
        ident = _unique(_identifier(feature.name), used)
        inputs.append(_describe_input(feature, ident))
    return inputs


def _describe_input(feature, ident: str) -> _Input:
    from ..inspection import feature_type

    kind = feature.type.WhichOneof("Type")
    doc = _one_line(
        f"{feature_type(feature)}"
        + (f" ({feature.shortDescription})" if feature.shortDescription else "")
    )
    if kind == "multiArrayType":
        array = feature.type.multiArrayType
        dtype = type(array).ArrayDataType.Name(array.dataType)
        if dtype not in _ARRAY_TYPES:
            raise UnsupportedError(
                f"training input {feature.name!r} has array type {dtype}; "
                "expected FLOAT32, DOUBLE, INT32 or FLOAT16"
            )
        flexible = array.WhichOneof("ShapeFlexibility") is not None or not array.shape
        return _Input(
            feature.name,
            ident,
            "array",
            doc,
            None if flexible else tuple(int(d) for d in array.shape),
            dtype,
        )
    if kind in ("imageType", "stringType", "int64Type", "doubleType"):
        return _Input(feature.name, ident, kind, doc)
    raise UnsupportedError(
        f"training input {feature.name!r} is a {kind}; the Swift glue builds "
        "MultiArray, Image, String, Int64 and Double inputs"
    )


# -- Swift text: the values for the templates --------------------------------------------


def _file_values(
    class_name: str,
    source_name: str,
    spec: Spec,
    trainee: Spec,
    inputs: list[_Input],
    config: TrainingConfig | None,
) -> dict[str, str]:
    has_image = any(i.kind == "imageType" for i in inputs)
    if has_image:
        builder = (
            f"{class_name}.InputBuilder(modelDescription: try MLModel(contentsOf: bundledURL)"
            ".modelDescription)"
        )
    else:
        builder = f"{class_name}.InputBuilder()"
    modules = (["CoreGraphics"] if has_image else []) + ["CoreML", "Foundation"]
    if config is not None:
        events = render("events_network.swift.tmpl")
        trainer = render(
            "network_trainer.swift.tmpl",
            class_name=class_name,
            allowed_epochs=_int_allowed(config.epochs),
            allowed_learning_rates=_float_allowed(config.optimizer.learning_rate),
            default_epochs=str(config.epochs.default),
        )
    else:
        events, trainer = render("events_knn.swift.tmpl"), render("knn_trainer.swift.tmpl")
    return {
        "header": "\n".join(_header(class_name, source_name, spec, trainee, inputs, config)),
        "builder": builder,
        "class_name": class_name,
        "source_name": _comment_text(source_name),
        "arguments": ", ".join(f"{i.ident}: {i.ident}" for i in inputs),
        "imports": "".join(f"import {m}\n" for m in modules),
        "events": events,
        "errors": _trainer_error(inputs, config is None),
        "builder_struct": _builder(inputs),
        "trainer": trainer,
        "save_and_emit": render("save_and_emit.swift.tmpl"),
    }


def _header(
    class_name: str,
    source_name: str,
    spec: Spec,
    trainee: Spec,
    inputs: list[_Input],
    config: TrainingConfig | None,
) -> list[str]:
    lines = [
        f"// {class_name}.swift: on-device training for {_comment_text(source_name)}.",
        f"// Generated by `updatable-coreml swift {_comment_text(source_name)}`; regenerate it "
        "when the model",
        "// changes rather than editing it.",
        "//",
        f"// Model: {_kind(spec)}"
        + (f" (updatable stage: {_kind(trainee)})" if trainee is not spec else ""),
        "// Training inputs:",
    ]
    lines += [f"//   {_comment_text(i.name)}: {i.doc}" for i in inputs]
    if config is not None:
        lines += ["// Update parameters:"] + [f"//   {row}" for row in config.summary_lines()]
        lines += [
            "// A task's epochs, batch size and optimizer settings are fixed when it starts;",
            "// only the learning rate can change while it runs (resume(withParameters:)).",
        ]
    else:
        knn = trainee.kNearestNeighborsClassifier
        lines += [
            f"// k-NN: k = {knn.numberOfNeighbors.defaultValue}; each update adds the "
            "examples to the index (no epochs, no loss)."
        ]
    return lines + ["//"]


def _trainer_error(inputs: list[_Input], is_knn: bool) -> str:
    cases: list[tuple[str, str]] = []
    if any(i.kind == "imageType" for i in inputs):
        cases.append(
            (
                "case missingImageConstraint(input: String)",
                'case .missingImageConstraint(let input): return "the model describes no image '
                'constraint for \\(input)"',
            )
        )
    if any(i.kind == "array" and i.shape is not None for i in inputs):
        cases.append(
            (
                "case wrongShape(input: String, expected: [Int], got: [Int])",
                'case .wrongShape(let input, let expected, let got): return "\\(input) must have '
                'shape \\(expected), got \\(got)"',
            )
        )
        cases.append(
            (
                "case wrongCount(input: String, expected: Int, got: Int)",
                'case .wrongCount(let input, let expected, let got): return "\\(input) needs '
                '\\(expected) values, got \\(got)"',
            )
        )
    if not is_knn:
        cases.append(
            (
                "case notAllowed(parameter: String, value: String)",
                'case .notAllowed(let parameter, let value): return "\\(parameter) \\(value) is '
                'outside what the model allows; Core ML would throw"',
            )
        )
    cases.append(
        ("case alreadyRunning", 'case .alreadyRunning: return "a training task is already running"')
    )
    cases.append(
        ("case updateFailed", 'case .updateFailed: return "MLUpdateTask failed without an error"')
    )
    return render(
        "errors.swift.tmpl",
        cases="\n".join(f"        {declaration}" for declaration, _ in cases),
        descriptions="\n".join(f"            {text}" for _, text in cases),
    )


def _builder(inputs: list[_Input]) -> str:
    images = [i for i in inputs if i.kind == "imageType"]
    fixed = [i for i in inputs if i.kind == "array" and i.shape is not None]
    image_setup = (
        ""
        if not images
        else render(
            "image_setup.swift.tmpl",
            constraint_members="\n".join(
                f"        private let {i.ident}Constraint: MLImageConstraint" for i in images
            ),
            constraint_inits="\n".join(
                f"            {i.ident}Constraint = try InputBuilder.constraint("
                f"{i.literal}, in: modelDescription)"
                for i in images
            ),
        )
    )
    factories = ""
    for item in fixed:
        element, data_type = _ARRAY_TYPES[item.array_type or ""]
        factories += render(
            "array_factory.swift.tmpl",
            name=_comment_text(item.name),
            array_type=item.array_type or "",
            shape_list=str(list(item.shape or ())),
            count=str(math.prod(item.shape or ())),
            function=_upper_camel(item.ident),
            element=element,
            literal=item.literal,
            shape=_swift_ints(item.shape or ()),
            data_type=data_type,
        )
    return render(
        "builder.swift.tmpl",
        image_setup=image_setup,
        example_docs="\n".join(f"        /// - {i.ident}: {i.doc}" for i in inputs),
        example_params=", ".join(f"{i.ident}: {_swift_param_type(i)}" for i in inputs),
        example_values="\n".join(
            f"                {i.literal}: {_feature_value(i)}," for i in inputs
        ),
        array_factories=factories,
        array_helpers=render("array_helpers.swift.tmpl") if fixed else "",
        image_helpers=render("image_helpers.swift.tmpl") if images else "",
    )


def _swift_param_type(item: _Input) -> str:
    return {
        "array": "MLMultiArray",
        "imageType": "CGImage",
        "stringType": "String",
        "int64Type": "Int64",
        "doubleType": "Double",
    }[item.kind]


def _feature_value(item: _Input) -> str:
    value = item.ident
    if item.kind == "array":
        if item.shape is None:
            return f"MLFeatureValue(multiArray: {value})"
        shape = _swift_ints(item.shape)
        return f"try InputBuilder.checked({value}, input: {item.literal}, shape: {shape})"
    if item.kind == "imageType":
        constraint = f"self.{item.ident}Constraint"
        return f"try MLFeatureValue(cgImage: {value}, constraint: {constraint}, options: nil)"
    return {
        "stringType": f"MLFeatureValue(string: {value})",
        "int64Type": f"MLFeatureValue(int64: {value})",
        "doubleType": f"MLFeatureValue(double: {value})",
    }[item.kind]


# -- small helpers -----------------------------------------------------------------------


def _int_allowed(param: IntParam) -> str:
    if param.range is not None:
        return f"ClosedRange<Int> = {param.range[0]}...{param.range[1]}"
    values = sorted(param.values) if param.values is not None else [param.default]
    return f"Set<Int> = {_swift_ints(values)}"


def _float_allowed(param: FloatParam) -> str:
    lo, hi = param.range if param.range is not None else (param.default, param.default)
    return f"ClosedRange<Double> = {_swift_double(lo)}...{_swift_double(hi)}"


def _kind(spec: Spec) -> str:
    return spec.WhichOneof("Type") or ""


def _swift_double(value: float) -> str:
    text = repr(float(value))
    return text if any(c in text for c in ".e") else text + ".0"


def _swift_ints(values) -> str:
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^0-9A-Za-z]+", name) if w]


def _upper_camel(name: str) -> str:
    text = "".join(w[:1].upper() + w[1:] for w in _words(name)) or "Model"
    return "_" + text if text[0].isdigit() else text


def _identifier(name: str) -> str:
    """A lowerCamel Swift name for a feature: ``input.1`` -> ``input1``, ``y_true`` -> ``yTrue``,
    a keyword gets a ``Value`` suffix so no backticks are needed anywhere."""
    words = _words(name) or ["input"]
    text = words[0][:1].lower() + words[0][1:] + "".join(w[:1].upper() + w[1:] for w in words[1:])
    text = "_" + text if text[0].isdigit() else text
    return text + "Value" if text in SWIFT_KEYWORDS else text


def _unique(ident: str, used: set[str]) -> str:
    candidate, suffix = ident, 2
    while candidate in used:
        candidate, suffix = f"{ident}{suffix}", suffix + 1
    used.add(candidate)
    return candidate


def _string_literal(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _comment_text(text: str) -> str:
    """``text`` safe inside a ``//`` comment: a line break in a (untrusted) feature or file name
    would otherwise end the comment and turn the rest of the name into Swift code."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())
