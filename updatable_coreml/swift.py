"""Generate the app-side Swift glue for an updatable model: ``updatable-coreml swift``.

Core ML's own generated class does not cover training: the app must know the exact training
input names and types, build an ``MLBatchProvider``, drive ``MLUpdateTask``, checkpoint,
change the learning rate between tasks, and save the result without ever leaving half a
model behind. Every one of those steps is easy to get subtly wrong, so we emit them from the
spec itself: the names, shapes and allowed values in the Swift file are the model's own.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional, Union

from .errors import ConfigError, NotUpdatableError, UnsupportedError

if TYPE_CHECKING:  # the real imports are deferred: the CLI registers this command on every run
    from .spec_io import Spec, SpecLike
    from .training import FloatParam, IntParam, TrainingConfig

PIPELINE_TYPES = ("pipeline", "pipelineClassifier", "pipelineRegressor")

#: Swift keywords that cannot be used as plain identifiers (they would need backticks).
SWIFT_KEYWORDS = frozenset("""
    associatedtype class deinit enum extension fileprivate func import init inout internal let
    open operator private precedencegroup protocol public rethrows static struct subscript
    typealias var break case catch continue default defer do else fallthrough for guard if in
    repeat return throw switch where while Any as await false is nil self Self super throws true
    try async
""".split())

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
    shape: Optional[tuple[int, ...]] = None
    array_type: Optional[str] = None

    @property
    def literal(self) -> str:
        return _string_literal(self.name)


def generate_swift(model: SpecLike, *, class_name: Optional[str] = None,
                   source_name: Optional[str] = None) -> str:
    """Return the Swift source for ``model`` (path, bytes or spec).

    ``class_name`` names the trainer class (default: the file stem + ``Trainer``);
    ``source_name`` is the model's file name shown in the header (default: the path's name).
    Raises ``NotUpdatableError`` for a model Core ML could not update, ``UnsupportedError`` for
    a training input type the glue cannot build.
    """
    from .spec_io import load_spec
    from .training import TrainingConfig
    from .validator import validate

    spec = load_spec(model)
    if source_name is None:
        source_name = Path(model).name if isinstance(model, (str, os.PathLike)) else "Model.mlmodel"
    if class_name is None:
        class_name = _upper_camel(Path(source_name).stem) + "Trainer"
    elif not _IDENTIFIER.match(class_name) or class_name in SWIFT_KEYWORDS:
        raise ConfigError(f"--class-name {class_name!r} is not a Swift type name; use letters, "
                          "digits and _ (not starting with a digit)")
    if spec.WhichOneof("Type") == "mlProgram":
        from .spec_io import ML_PROGRAM_FIX
        raise NotUpdatableError(f"{source_name} is an ML Program, which cannot be updated on "
                                f"device; {ML_PROGRAM_FIX}")
    if not spec.isUpdatable:
        raise NotUpdatableError(f"{source_name} is not updatable; run 'updatable-coreml "
                                "make-updatable' or export it with updatable-coreml first")
    errors = [f for f in validate(spec) if f.severity == "error"]
    if errors:
        raise NotUpdatableError(f"{source_name} is not a valid updatable model ({errors[0].code}: "
                                f"{errors[0].message}); see 'updatable-coreml validate'")
    trainee = _updatable_model(spec)
    inputs = _training_inputs(spec)
    is_knn = _kind(trainee) == "kNearestNeighborsClassifier"
    config = None if is_knn else TrainingConfig.from_spec(trainee)
    lines = _header(class_name, source_name, spec, trainee, inputs, config)
    lines += _usage(class_name, inputs)
    lines += _imports(inputs)
    lines += [f"/// Trains {_comment_text(source_name)} on device with MLUpdateTask and saves the result atomically.",
              f"final class {class_name} {{"]
    lines += _events(is_knn) + _trainer_error(inputs, is_knn) + _builder(inputs)
    lines += _network_trainer(class_name, config) if config is not None else _knn_trainer()
    lines += ["}"]
    return "\n".join(lines) + "\n"


def write_swift(model: Union[str, os.PathLike], output: Union[str, os.PathLike], *,
                class_name: Optional[str] = None) -> Path:
    """Generate the Swift glue for the model file ``model`` and write it atomically."""
    from .spec_io import atomic_write_bytes

    text = generate_swift(model, class_name=class_name)
    return atomic_write_bytes(text.encode("utf-8"), output, not_same_as=model)


# -- reading the spec --------------------------------------------------------------------


def _updatable_model(spec: Spec) -> Spec:
    """The model MLUpdateTask trains: the spec itself, or a pipeline's last model."""
    from .spec_io import NEURAL_NETWORK_TYPES

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
        raise NotUpdatableError("the model lists no training inputs; re-export it or run "
                                "'updatable-coreml make-updatable'")
    used: set[str] = set()
    inputs = []
    for feature in features:
        ident = _unique(_identifier(feature.name), used)
        inputs.append(_describe_input(feature, ident))
    return inputs


def _describe_input(feature, ident: str) -> _Input:
    from .inspection import feature_type

    kind = feature.type.WhichOneof("Type")
    doc = _one_line(f"{feature_type(feature)}"
                    + (f" ({feature.shortDescription})" if feature.shortDescription else ""))
    if kind == "multiArrayType":
        array = feature.type.multiArrayType
        dtype = type(array).ArrayDataType.Name(array.dataType)
        if dtype not in _ARRAY_TYPES:
            raise UnsupportedError(f"training input {feature.name!r} has array type {dtype}; "
                                   "expected FLOAT32, DOUBLE, INT32 or FLOAT16")
        flexible = array.WhichOneof("ShapeFlexibility") is not None or not array.shape
        return _Input(feature.name, ident, "array", doc,
                      None if flexible else tuple(int(d) for d in array.shape), dtype)
    if kind in ("imageType", "stringType", "int64Type", "doubleType"):
        return _Input(feature.name, ident, kind, doc)
    raise UnsupportedError(f"training input {feature.name!r} is a {kind}; the Swift glue builds "
                           "MultiArray, Image, String, Int64 and Double inputs")


# -- Swift text --------------------------------------------------------------------------


def _header(class_name: str, source_name: str, spec: Spec, trainee: Spec,
            inputs: list[_Input], config: Optional[TrainingConfig]) -> list[str]:
    lines = [
        f"// {class_name}.swift: on-device training for {_comment_text(source_name)}.",
        f"// Generated by `updatable-coreml swift {_comment_text(source_name)}`; regenerate it when the model",
        "// changes rather than editing it.",
        "//",
        f"// Model: {_kind(spec)}"
        + (f" (updatable stage: {_kind(trainee)})" if trainee is not spec else ""),
        "// Training inputs:",
    ]
    lines += [f"//   {_comment_text(i.name)}: {i.doc}" for i in inputs]
    if config is not None:
        lines += ["// Update parameters:"] + [f"//   {row}" for row in config.summary_lines()]
    else:
        knn = trainee.kNearestNeighborsClassifier
        lines += [f"// k-NN: k = {knn.numberOfNeighbors.defaultValue}; each update adds the "
                  "examples to the index (no epochs, no loss)."]
    return lines + ["//"]


def _usage(class_name: str, inputs: list[_Input]) -> list[str]:
    if any(i.kind == "imageType" for i in inputs):
        builder = (f"{class_name}.InputBuilder(modelDescription: try MLModel(contentsOf: bundledURL)"
                   ".modelDescription)")
    else:
        builder = f"{class_name}.InputBuilder()"
    arguments = ", ".join(f"{i.ident}: {i.ident}" for i in inputs)
    return [
        "// Usage (bundledURL: the app's compiled .mlmodelc; updatedURL: a file URL in Application",
        "// Support; start from updatedURL once it exists to keep earlier personalization):",
        f"//   let builder = {builder}",
        f"//   let examples = builder.batch([try builder.example({arguments})])",
        f"//   let trainer = {class_name}(modelURL: bundledURL, outputURL: updatedURL) {{ event in print(event) }}",
        "//   try trainer.start(examples)",
        "",
    ]


def _imports(inputs: list[_Input]) -> list[str]:
    modules = ["CoreML", "Foundation"]
    if any(i.kind == "imageType" for i in inputs):
        modules.insert(0, "CoreGraphics")
    return [f"import {m}" for m in modules] + [""]


def _events(is_knn: bool) -> list[str]:
    if is_knn:
        return [
            "    /// What the trainer reports, on its callback queue.",
            "    enum Event {",
            "        /// The examples were added and the updated model is at `outputURL`.",
            "        case finished",
            "        /// `cancel()` was called; Core ML runs no completion handler, nothing was saved.",
            "        case cancelled",
            "        case failed(Error)",
            "    }",
            "",
        ]
    return [
        "    /// What the trainer reports, on its callback queue.",
        "    enum Event {",
        "        /// A task started after `epoch` epochs, with this learning rate (nil: the model's).",
        "        case trainingBegan(epoch: Int, learningRate: Double?)",
        "        /// Epoch `epoch` (1-based, over all tasks) ended; `loss` is Core ML's",
        "        /// `MLMetricKey.lossValue`.",
        "        case epochEnded(epoch: Int, loss: Double?)",
        "        /// The model after `epoch` epochs is now at `outputURL`.",
        "        case checkpointSaved(epoch: Int)",
        "        /// All epochs ran; the updated model is at `outputURL`.",
        "        case finished(epochs: Int)",
        "        /// `cancel()` was called. Core ML runs no completion handler for a cancelled task, so",
        "        /// the work since the last checkpoint is lost; `outputURL` holds the model after",
        "        /// `lastCheckpoint` epochs (nil: nothing was written).",
        "        case cancelled(lastCheckpoint: Int?)",
        "        case failed(Error)",
        "    }",
        "",
    ]


def _trainer_error(inputs: list[_Input], is_knn: bool) -> list[str]:
    cases: list[tuple[str, str]] = []
    if any(i.kind == "imageType" for i in inputs):
        cases.append(("case missingImageConstraint(input: String)",
                      'case .missingImageConstraint(let input): return "the model describes no image '
                      'constraint for \\(input)"'))
    if any(i.kind == "array" and i.shape is not None for i in inputs):
        cases.append(("case wrongShape(input: String, expected: [Int], got: [Int])",
                      'case .wrongShape(let input, let expected, let got): return "\\(input) must have '
                      'shape \\(expected), got \\(got)"'))
        cases.append(("case wrongCount(input: String, expected: Int, got: Int)",
                      'case .wrongCount(let input, let expected, let got): return "\\(input) needs '
                      '\\(expected) values, got \\(got)"'))
    if not is_knn:
        cases.append(("case notAllowed(parameter: String, value: String)",
                      'case .notAllowed(let parameter, let value): return "\\(parameter) \\(value) is '
                      'outside what the model allows; Core ML would throw"'))
    cases.append(("case alreadyRunning", 'case .alreadyRunning: return "a training task is already running"'))
    cases.append(("case updateFailed", 'case .updateFailed: return "MLUpdateTask failed without an error"'))
    lines = ["    enum TrainerError: Error, CustomStringConvertible {"]
    lines += [f"        {declaration}" for declaration, _ in cases]
    lines += ["", "        var description: String {", "            switch self {"]
    lines += [f"            {text}" for _, text in cases]
    lines += ["            }", "        }", "    }", ""]
    return lines


def _builder(inputs: list[_Input]) -> list[str]:
    images = [i for i in inputs if i.kind == "imageType"]
    arrays = [i for i in inputs if i.kind == "array"]
    lines = [
        "    /// Builds training examples with the model's training input names and types.",
        "    struct InputBuilder {",
    ]
    if images:
        lines += [f"        private let {i.ident}Constraint: MLImageConstraint" for i in images]
        lines += [
            "",
            "        /// Reads the image constraints (size, pixel format) from the model, e.g.",
            "        /// `try MLModel(contentsOf: modelURL).modelDescription`.",
            "        init(modelDescription: MLModelDescription) throws {",
        ]
        lines += [f"            {i.ident}Constraint = try InputBuilder.constraint({i.literal}, in: modelDescription)"
                  for i in images]
        lines += ["        }", ""]
    lines += ["        /// One training example:"]
    lines += [f"        /// - {i.ident}: {i.doc}" for i in inputs]
    params = ", ".join(f"{i.ident}: {_swift_param_type(i)}" for i in inputs)
    lines += [
        f"        func example({params}) throws -> MLFeatureProvider {{",
        "            return try MLDictionaryFeatureProvider(dictionary: [",
    ]
    lines += [f"                {i.literal}: {_feature_value(i)}," for i in inputs]
    lines += [
        "            ])",
        "        }",
        "",
        "        /// The examples as the batch provider MLUpdateTask reads.",
        "        func batch(_ examples: [MLFeatureProvider]) -> MLBatchProvider {",
        "            return MLArrayBatchProvider(array: examples)",
        "        }",
    ]
    fixed = [i for i in arrays if i.shape is not None]
    for item in fixed:
        element, data_type = _ARRAY_TYPES[item.array_type or ""]
        count = math.prod(item.shape or ())
        lines += [
            "",
            f"        /// The `{_comment_text(item.name)}` array ({item.array_type} {list(item.shape or ())}) from {count} "
            "values in row-major order.",
            f"        static func make{_upper_camel(item.ident)}(_ values: [{element}]) throws -> MLMultiArray {{",
            f"            return try makeArray(values.map {{ NSNumber(value: $0) }}, input: {item.literal},",
            f"                                 shape: {_swift_ints(item.shape or ())}, dataType: {data_type})",
            "        }",
        ]
    if fixed:
        lines += [
            "",
            "        private static func makeArray(_ values: [NSNumber], input: String, shape: [Int],",
            "                                      dataType: MLMultiArrayDataType) throws -> MLMultiArray {",
            "            let count = shape.reduce(1, *)",
            "            guard values.count == count else {",
            "                throw TrainerError.wrongCount(input: input, expected: count, got: values.count)",
            "            }",
            "            let array = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: dataType)",
            "            for (index, value) in values.enumerated() {",
            "                array[index] = value",
            "            }",
            "            return array",
            "        }",
            "",
            "        /// Refuses an array whose shape differs from the model's: Core ML's failures for",
            "        /// that happen late and say little.",
            "        private static func checked(_ array: MLMultiArray, input: String, shape: [Int]) throws -> MLFeatureValue {",
            "            let got = array.shape.map { $0.intValue }",
            "            guard got == shape else {",
            "                throw TrainerError.wrongShape(input: input, expected: shape, got: got)",
            "            }",
            "            return MLFeatureValue(multiArray: array)",
            "        }",
        ]
    if images:
        lines += [
            "",
            "        private static func constraint(_ input: String, in description: MLModelDescription) throws -> MLImageConstraint {",
            "            guard let constraint = description.trainingInputDescriptionsByName[input]?.imageConstraint else {",
            "                throw TrainerError.missingImageConstraint(input: input)",
            "            }",
            "            return constraint",
            "        }",
        ]
    return lines + ["    }", ""]


def _swift_param_type(item: _Input) -> str:
    return {"array": "MLMultiArray", "imageType": "CGImage", "stringType": "String",
            "int64Type": "Int64", "doubleType": "Double"}[item.kind]


def _feature_value(item: _Input) -> str:
    value = item.ident
    if item.kind == "array":
        if item.shape is None:
            return f"MLFeatureValue(multiArray: {value})"
        return f"try InputBuilder.checked({value}, input: {item.literal}, shape: {_swift_ints(item.shape)})"
    if item.kind == "imageType":
        return f"try MLFeatureValue(cgImage: {value}, constraint: self.{item.ident}Constraint, options: nil)"
    return {"stringType": f"MLFeatureValue(string: {value})",
            "int64Type": f"MLFeatureValue(int64: {value})",
            "doubleType": f"MLFeatureValue(double: {value})"}[item.kind]


def _members(saved: str, public: list[str], private: list[str]) -> list[str]:
    """The stored properties both trainers share, with each trainer's own in between."""
    return [
        "    /// The compiled model (.mlmodelc) training starts from; never modified.",
        "    let modelURL: URL",
        f"    /// Where {saved} goes: a .mlmodelc folder,",
        "    /// replaced atomically; load it with `MLModel(contentsOf:)`.",
        "    let outputURL: URL",
    ] + public + [
        "    private let callbackQueue: DispatchQueue",
        "    private let onEvent: (Event) -> Void",
        "    private let lock = NSLock()",
        "    private var task: MLUpdateTask?",
    ] + private


def _init(extra_params: str, extra_assignments: list[str]) -> list[str]:
    return [
        "",
        f"    init(modelURL: URL, outputURL: URL,{extra_params}",
        "         callbackQueue: DispatchQueue = .main, onEvent: @escaping (Event) -> Void) {",
        "        self.modelURL = modelURL",
        "        self.outputURL = outputURL",
    ] + extra_assignments + [
        "        self.callbackQueue = callbackQueue",
        "        self.onEvent = onEvent",
        "    }",
    ]


#: The start of every completion handler: ignore a stale task, report a failed one.
_FINISH_GUARD = [
    "        lock.lock()",
    "        defer { lock.unlock() }",
    "        guard context.task === task else { return }",
    "        task = nil",
    "        if context.task.state == .failed {",
    "            emit(.failed(context.task.error ?? TrainerError.updateFailed))",
    "            return",
    "        }",
]

_SAVE_AND_EMIT = [
    "",
    "    /// Writes the model into a scratch folder on the same volume, then swaps it in: a crash or",
    "    /// a full disk leaves the previous model or the new one, never part of one.",
    "    private func save(_ model: MLModel & MLWritable) throws {",
    "        let files = FileManager.default",
    "        let scratch = try files.url(for: .itemReplacementDirectory, in: .userDomainMask,",
    "                                    appropriateFor: outputURL, create: true)",
    "        defer { try? files.removeItem(at: scratch) }",
    "        let written = scratch.appendingPathComponent(outputURL.lastPathComponent)",
    "        try model.write(to: written)",
    "        if files.fileExists(atPath: outputURL.path) {",
    "            _ = try files.replaceItemAt(outputURL, withItemAt: written)",
    "        } else {",
    "            try files.moveItem(at: written, to: outputURL)",
    "        }",
    "    }",
    "",
    "    private func emit(_ event: Event) {",
    "        let onEvent = self.onEvent",
    "        callbackQueue.async { onEvent(event) }",
    "    }",
]


def _network_trainer(class_name: str, config: TrainingConfig) -> list[str]:
    lr = config.optimizer.learning_rate
    lines = [
        "    /// What this model lets the app override; Core ML throws for anything else, so",
        "    /// `start` checks first.",
        f"    static let allowedEpochs: {_int_allowed(config.epochs)}",
        f"    static let allowedLearningRates: {_float_allowed(lr)}",
        f"    static let defaultEpochs = {config.epochs.default}",
        "",
    ]
    lines += _members("each checkpoint and the updated model", [
        "    /// Save a checkpoint to `outputURL` every this many epochs (0: only at the end).",
        "    let checkpointEvery: Int",
        "    /// Learning-rate annealing hook: the rate for the task that starts after `epoch` epochs.",
        "    /// Unset, the whole run uses the model's default rate in one task. Set, training runs",
        "    /// as tasks of `annealEvery` epochs, each resumed from the previous one's model with the",
        "    /// new rate; a new task starts with fresh optimizer state (momentum, Adam moments).",
        "    var learningRate: ((_ epoch: Int) -> Double)?",
        "    var annealEvery: Int",
    ], [
        "    private var lastCheckpoint: Int?",
        "",
        "    private struct Step {",
        "        let epochs: Int",
        "        let learningRate: Double?",
        "    }",
    ])
    lines += _init(" checkpointEvery: Int = 1, annealEvery: Int = 1,",
                   ["        self.checkpointEvery = checkpointEvery",
                    "        self.annealEvery = annealEvery"])
    lines += [
        "",
        "    /// Trains on `examples` for `epochs` epochs; events arrive on the callback queue. Throws",
        "    /// before starting when an epoch count or learning rate is outside the model's allowed",
        "    /// values, or when a training task is already running.",
        f"    func start(_ examples: MLBatchProvider, epochs: Int = {class_name}.defaultEpochs) throws {{",
        "        let steps = try plan(epochs: epochs)",
        "        lock.lock()",
        "        defer { lock.unlock() }",
        "        guard task == nil else { throw TrainerError.alreadyRunning }",
        "        lastCheckpoint = nil",
        "        try run(steps[...], examples: examples, from: modelURL, done: 0)",
        "    }",
        "",
        "    /// Stops training. Core ML runs no completion handler for a cancelled task: the work",
        "    /// since the last checkpoint is lost and `outputURL` keeps that checkpoint.",
        "    func cancel() {",
        "        lock.lock()",
        "        guard let running = task else {",
        "            lock.unlock()",
        "            return",
        "        }",
        "        task = nil",
        "        let checkpoint = lastCheckpoint",
        "        lock.unlock()",
        "        running.cancel()",
        "        emit(.cancelled(lastCheckpoint: checkpoint))",
        "    }",
        "",
        "    /// One task, or one per `annealEvery` epochs when annealing, all checked up front",
        "    /// (Core ML would throw only when the task starts, after earlier tasks ran).",
        "    private func plan(epochs: Int) throws -> [Step] {",
        "        guard epochs > 0 else { throw TrainerError.notAllowed(parameter: \"epochs\", value: \"\\(epochs)\") }",
        "        let length = learningRate == nil ? epochs : max(1, annealEvery)",
        "        var steps: [Step] = []",
        "        var done = 0",
        "        while done < epochs {",
        "            let count = min(length, epochs - done)",
        "            let rate = learningRate?(done)",
        f"            guard {class_name}.allowedEpochs.contains(count) else {{",
        "                throw TrainerError.notAllowed(parameter: \"epochs\", value: \"\\(count)\")",
        "            }",
        f"            if let rate = rate, !{class_name}.allowedLearningRates.contains(rate) {{",
        "                throw TrainerError.notAllowed(parameter: \"learningRate\", value: \"\\(rate)\")",
        "            }",
        "            steps.append(Step(epochs: count, learningRate: rate))",
        "            done += count",
        "        }",
        "        return steps",
        "    }",
        "",
        "    /// Starts the first of `steps` from the model at `url`; called with `lock` held.",
        "    private func run(_ steps: ArraySlice<Step>, examples: MLBatchProvider, from url: URL, done: Int) throws {",
        "        guard let step = steps.first else { return }",
        "        let configuration = MLModelConfiguration()",
        "        var parameters: [MLParameterKey: Any] = [.epochs: step.epochs]",
        "        if let rate = step.learningRate {",
        "            parameters[.learningRate] = rate",
        "        }",
        "        configuration.parameters = parameters",
        "        var epoch = done",
        "        let handlers = MLUpdateProgressHandlers(",
        "            forEvents: [.trainingBegin, .epochEnd],",
        "            progressHandler: { [weak self] context in",
        "                guard let self = self else { return }",
        "                if context.event.contains(.trainingBegin) {",
        "                    self.emit(.trainingBegan(epoch: done, learningRate: step.learningRate))",
        "                    return",
        "                }",
        "                epoch += 1",
        "                self.emit(.epochEnded(epoch: epoch, loss: context.metrics[.lossValue] as? Double))",
        "                if self.checkpointEvery > 0, epoch % self.checkpointEvery == 0, epoch < done + step.epochs {",
        "                    self.checkpoint(context, epoch: epoch)",
        "                }",
        "            },",
        "            completionHandler: { [weak self] context in",
        "                self?.finish(context, remaining: steps.dropFirst(), examples: examples,",
        "                             done: done + step.epochs)",
        "            })",
        "        let next = try MLUpdateTask(forModelAt: url, trainingData: examples,",
        "                                    configuration: configuration, progressHandlers: handlers)",
        "        task = next",
        "        next.resume()",
        "    }",
        "",
        "    private func checkpoint(_ context: MLUpdateContext, epoch: Int) {",
        "        lock.lock()",
        "        defer { lock.unlock() }",
        "        guard context.task === task else { return }",
        "        do {",
        "            try save(context.model)",
        "            lastCheckpoint = epoch",
        "            emit(.checkpointSaved(epoch: epoch))",
        "        } catch {",
        "            emit(.failed(error))",
        "        }",
        "    }",
        "",
        "    private func finish(_ context: MLUpdateContext, remaining: ArraySlice<Step>,",
        "                        examples: MLBatchProvider, done: Int) {",
        *_FINISH_GUARD,
        "        do {",
        "            try save(context.model)",
        "            lastCheckpoint = done",
        "            if remaining.isEmpty {",
        "                emit(.finished(epochs: done))",
        "            } else {",
        "                emit(.checkpointSaved(epoch: done))",
        "                try run(remaining, examples: examples, from: outputURL, done: done)",
        "            }",
        "        } catch {",
        "            emit(.failed(error))",
        "        }",
        "    }",
    ]
    return lines + _SAVE_AND_EMIT


def _knn_trainer() -> list[str]:
    lines = _members("the updated model", [], []) + _init("", [])
    lines += [
        "",
        "    /// Adds `examples` to the k-NN index; events arrive on the callback queue.",
        "    func start(_ examples: MLBatchProvider) throws {",
        "        lock.lock()",
        "        defer { lock.unlock() }",
        "        guard task == nil else { throw TrainerError.alreadyRunning }",
        "        let next = try MLUpdateTask(forModelAt: modelURL, trainingData: examples,",
        "                                    configuration: nil) { [weak self] context in",
        "            self?.finish(context)",
        "        }",
        "        task = next",
        "        next.resume()",
        "    }",
        "",
        "    /// Stops the update; Core ML runs no completion handler, so nothing is saved.",
        "    func cancel() {",
        "        lock.lock()",
        "        guard let running = task else {",
        "            lock.unlock()",
        "            return",
        "        }",
        "        task = nil",
        "        lock.unlock()",
        "        running.cancel()",
        "        emit(.cancelled)",
        "    }",
        "",
        "    private func finish(_ context: MLUpdateContext) {",
        *_FINISH_GUARD,
        "        do {",
        "            try save(context.model)",
        "            emit(.finished)",
        "        } catch {",
        "            emit(.failed(error))",
        "        }",
        "    }",
    ]
    return lines + _SAVE_AND_EMIT


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
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def _comment_text(text: str) -> str:
    """``text`` safe inside a ``//`` comment: a line break in a (untrusted) feature or file name
    would otherwise end the comment and turn the rest of the name into Swift code."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())


