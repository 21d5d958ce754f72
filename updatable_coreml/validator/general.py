"""Core ML's general model rules: what every model must satisfy, updatable or not.

Ported (our own code) from Apple's ``mlmodel/src/Model.cpp`` (``validateGeneric``),
``Validation/InterfaceValidators.cpp`` (feature descriptions, classifier and regressor
interfaces, optional features), ``Validation/Validators.hpp`` (``validateFeatureDescriptions``,
``validateClassifierInterface``) and ``Validation/NeuralNetwork/NeuralNetworkValidator.cpp``
(``validateNeuralNetworkTopLevel``, ``validateNeuralNetwork``), as in release tags 3.0 to 9.0.
Apple stops at its first error; we report every one we find.

Not ported (each would need Apple's shape engine or is not met by files we write or read):
most per-layer parameter checks beyond counts and ranks (layer_params.py has the common
ones; convolution weight sizes, axes and the like are not checked), the rank-5
shape propagation of iOS 12 networks, nested networks of ``branch``/``loop`` layers (whose
blobs we do not track: such networks skip the blob checks), multi-function descriptions.
"""

from __future__ import annotations

from ..spec_io import NEURAL_NETWORK_TYPES, Spec, model_type
from .findings import Finding
from .layer_params import layer_param_findings
from .layers import LAYER_IO_COUNTS, is_ios12_layer, rank_limits
from .quantization import quantization_findings

#: Specification versions that gate feature types (MLMODEL_SPECIFICATION_VERSION_IOS*).
SPEC_IOS12, SPEC_IOS14, SPEC_IOS16 = 3, 5, 7

_ARRAY_TYPES = ("DOUBLE", "FLOAT32", "INT32", "FLOAT16")
_COLOR_SPACES = ("GRAYSCALE", "RGB", "BGR", "GRAYSCALE_FLOAT16")


def general_findings(spec: Spec) -> list[Finding]:
    """Every general rule that applies to ``spec`` (not its contained models): Apple's
    ``validateGeneric`` (version, interface) and then its model-type validator."""
    if spec.specificationVersion == 0:
        return [Finding("MODEL_INTERFACE", None, "specificationVersion is missing (0).")]
    return interface_findings(spec) + _type_findings(spec)


def type_findings(spec: Spec) -> list[Finding]:
    """What Apple's model-type validator (``validate<MLModelType_...>``) checks alone, without
    ``validateGeneric``: classifiers and regressors re-check their feature descriptions, plain
    networks do not. Apple's unit tests call it this way."""
    kind = model_type(spec)
    described = (
        interface_findings(spec)
        if kind in ("neuralNetworkClassifier", "neuralNetworkRegressor")
        else []
    )
    return described + _type_findings(spec)


def _type_findings(spec: Spec) -> list[Finding]:
    kind = model_type(spec)
    findings = []
    if kind == "neuralNetworkClassifier":
        findings += classifier_findings(
            spec, spec.neuralNetworkClassifier, allow_empty_labels=False
        )
    elif kind == "neuralNetworkRegressor":
        findings += regressor_findings(spec)
    if kind in NEURAL_NETWORK_TYPES:
        findings += network_findings(spec)
    return findings


# -- feature descriptions -------------------------------------------------------------------


def interface_findings(spec: Spec) -> list[Finding]:
    """``validateFeatureDescriptions`` + ``validateOptional`` for a single-function model."""
    description = spec.description
    version = spec.specificationVersion
    findings = []
    if model_type(spec) != "mlProgram" and not description.input:
        findings.append(Finding("MODEL_INTERFACE", None, "The model has no inputs."))
    if not description.output:
        findings.append(Finding("MODEL_INTERFACE", None, "The model has no outputs."))
    for feature in description.input:
        findings += feature_findings(feature, version, is_input=True)
    for feature in description.output:
        findings += feature_findings(feature, version, is_input=False)
        if feature.type.isOptional:
            findings.append(
                Finding("MODEL_INTERFACE", feature.name, f"Output {feature.name!r} is optional.")
            )
    return findings


def feature_findings(feature, version: int, is_input: bool) -> list[Finding]:
    """``validateFeatureDescription``: one feature's name and type."""
    name = feature.name
    if not name:
        return [Finding("MODEL_INTERFACE", None, "A feature description has an empty name.")]
    kind = feature.type.WhichOneof("Type")
    if kind is None:
        return [Finding("MODEL_INTERFACE", name, f"Feature {name!r} has no type.")]
    if kind == "multiArrayType":
        return _array_findings(name, feature.type.multiArrayType, version, is_input)
    if kind == "imageType":
        return _image_findings(name, feature.type.imageType, version)
    if kind == "dictionaryType" and feature.type.dictionaryType.WhichOneof("KeyType") is None:
        return [Finding("MODEL_INTERFACE", name, f"Dictionary feature {name!r} has no key type.")]
    if kind == "sequenceType":
        if version < SPEC_IOS12:
            return [
                Finding(
                    "MODEL_INTERFACE",
                    name,
                    f"Sequence feature {name!r} needs specificationVersion {SPEC_IOS12} or later.",
                )
            ]
        if feature.type.sequenceType.WhichOneof("Type") is None:
            return [
                Finding("MODEL_INTERFACE", name, f"Sequence feature {name!r} has no element type.")
            ]
    return []


def _size_range_ok(size_range) -> bool:
    return not (size_range.upperBound > 0 and size_range.lowerBound > size_range.upperBound)


def _array_findings(name: str, array, version: int, is_input: bool) -> list[Finding]:
    shape = list(array.shape)
    flexible = False
    problems = []
    if version >= SPEC_IOS12:
        flexibility = array.WhichOneof("ShapeFlexibility")
        if flexibility == "enumeratedShapes":
            flexible = True
            shapes = [list(s.shape) for s in array.enumeratedShapes.shapes]
            if not shapes or any(not s for s in shapes):
                problems.append("has an empty enumerated shape list or an empty enumerated shape")
            elif shape and shape not in shapes:
                problems.append(f"default shape {shape} is not among its enumerated shapes")
        elif flexibility == "shapeRange":
            flexible = True
            ranges = list(array.shapeRange.sizeRanges)
            if not all(_size_range_ok(r) for r in ranges):
                problems.append("has an invalid size range")
            elif shape and len(shape) != len(ranges):
                problems.append(f"default shape {shape} and its shape range differ in rank")
            elif shape and any(
                d < r.lowerBound or (r.upperBound >= 0 and d > r.upperBound)
                for d, r in zip(shape, ranges, strict=True)
            ):
                problems.append(f"default shape {shape} is outside its shape range")
    if is_input and not shape and not flexible:
        problems.append("has no shape")
    if any(d < 0 for d in shape):
        problems.append(f"has a negative dimension in {shape}")
    dtype = (
        type(array).ArrayDataType.Name(array.dataType)
        if array.dataType in type(array).ArrayDataType.values()
        else "INVALID"
    )
    if dtype not in _ARRAY_TYPES and not (dtype == "INT8" and version >= 10):
        problems.append(f"has data type {dtype}; use DOUBLE, FLOAT32, FLOAT16 or INT32")
    elif dtype == "FLOAT16" and version < SPEC_IOS16:
        problems.append(f"is FLOAT16, which needs specificationVersion {SPEC_IOS16} or later")
    return [Finding("MODEL_INTERFACE", name, f"MultiArray feature {name!r} {p}.") for p in problems]


def _image_findings(name: str, image, version: int) -> list[Finding]:
    width, height = image.width, image.height
    problems = []
    if version >= SPEC_IOS12:
        flexibility = image.WhichOneof("SizeFlexibility")
        if flexibility == "enumeratedSizes":
            sizes = [(s.width, s.height) for s in image.enumeratedSizes.sizes]
            if not sizes:
                problems.append("has an empty enumerated size list")
            elif width > 0 and height > 0:
                if (width, height) not in sizes:
                    problems.append(
                        f"default size {width}x{height} is not among its enumerated sizes"
                    )
            else:
                width, height = sizes[0]
        elif flexibility == "imageSizeRange":
            ranges = image.imageSizeRange
            if not (_size_range_ok(ranges.widthRange) and _size_range_ok(ranges.heightRange)):
                problems.append("has an invalid size range")
            elif width > 0 and height > 0:
                for value, bounds, what in (
                    (width, ranges.widthRange, "width"),
                    (height, ranges.heightRange, "height"),
                ):
                    if value < bounds.lowerBound or (
                        bounds.upperBound >= 0 and value > bounds.upperBound
                    ):
                        problems.append(f"default {what} {value} is outside its range")
            else:
                width, height = ranges.widthRange.lowerBound, ranges.heightRange.lowerBound
    if width <= 0 or height <= 0:
        problems.append("has a missing or non-positive width or height")
    space = (
        type(image).ColorSpace.Name(image.colorSpace)
        if image.colorSpace in type(image).ColorSpace.values()
        else "INVALID"
    )
    if space not in _COLOR_SPACES:
        problems.append("has no valid color space (RGB, BGR or GRAYSCALE)")
    elif space == "GRAYSCALE_FLOAT16" and version < SPEC_IOS16:
        problems.append(
            f"is GRAYSCALE_FLOAT16, which needs specificationVersion {SPEC_IOS16} or later"
        )
    return [Finding("MODEL_INTERFACE", name, f"Image feature {name!r} {p}.") for p in problems]


# -- classifier and regressor interfaces ----------------------------------------------------


def classifier_findings(
    spec: Spec, params, allow_empty_labels: bool, default_is_int64: bool = False
) -> list[Finding]:
    """``validateClassifierInterface``: class labels of one type, and ``predictedFeatureName``
    naming an output of that type (Int64 or String); a probabilities output, when named, is a
    dictionary (or MultiArray)."""
    labels = params.WhichOneof("ClassLabels")
    if labels is None and not allow_empty_labels:
        return [Finding("CLASSIFIER_INTERFACE", None, "The classifier has no class labels.")]
    if labels is not None and not allow_empty_labels and not getattr(params, labels).vector:
        return [Finding("CLASSIFIER_INTERFACE", None, f"The classifier's {labels} are empty.")]
    wanted = {"int64ClassLabels": "int64Type", "stringClassLabels": "stringType"}.get(
        labels or "", "int64Type" if default_is_int64 else "stringType"
    )
    description = spec.description
    name = description.predictedFeatureName
    if not name:
        return [
            Finding("CLASSIFIER_INTERFACE", None, "The classifier has no predictedFeatureName.")
        ]
    output = next((o for o in description.output if o.name == name), None)
    if output is None:
        return [
            Finding(
                "CLASSIFIER_INTERFACE",
                None,
                f"predictedFeatureName {name!r} is not a model output.",
            )
        ]
    if output.type.WhichOneof("Type") != wanted:
        return [
            Finding(
                "CLASSIFIER_INTERFACE",
                name,
                f"The predicted label {name!r} is "
                f"{output.type.WhichOneof('Type')}; the class labels need {wanted}.",
            )
        ]
    probabilities = description.predictedProbabilitiesName
    if probabilities:
        output = next((o for o in description.output if o.name == probabilities), None)
        if output is None:
            return [
                Finding(
                    "CLASSIFIER_INTERFACE",
                    None,
                    f"predictedProbabilitiesName {probabilities!r} is not a model output.",
                )
            ]
        if output.type.WhichOneof("Type") not in ("dictionaryType", "multiArrayType"):
            return [
                Finding(
                    "CLASSIFIER_INTERFACE",
                    probabilities,
                    f"The probabilities output {probabilities!r} is not a dictionary.",
                )
            ]
    return []


def regressor_findings(spec: Spec) -> list[Finding]:
    """``validateRegressorInterface``: predictedFeatureName names a Double or MultiArray output."""
    name = spec.description.predictedFeatureName
    if not name:
        return [
            Finding(
                "REGRESSOR_PREDICTED_FEATURE",
                None,
                "Specification is missing regressor predictedFeatureName.",
            )
        ]
    output = next((o for o in spec.description.output if o.name == name), None)
    if output is None or output.type.WhichOneof("Type") not in ("doubleType", "multiArrayType"):
        return [
            Finding(
                "REGRESSOR_PREDICTED_FEATURE",
                None,
                f"predictedFeatureName {name!r} is not a Double or MultiArray model output.",
            )
        ]
    return []


# -- neural networks ------------------------------------------------------------------------


def nd_semantics(spec: Spec, nn) -> bool:
    """Apple's ``ndArrayInterpretation``: any layer outside the iOS 12 set, or a non-rank-5
    input shape mapping, makes Core ML read the network with N-d semantics."""
    return (
        nn.arrayInputShapeMapping != 0
        or nn.imageInputShapeMapping != 0
        or not all(is_ios12_layer(layer) for layer in nn.layers)
    )


def io_ranks(spec: Spec, nn) -> dict[str, int]:
    """Ranks Core ML knows from the description under N-d semantics (``ioBlobNameToRank``)."""
    ranks: dict[str, int] = {}
    for feature in spec.description.input:
        kind = feature.type.WhichOneof("Type")
        if kind == "multiArrayType":
            ranks[feature.name] = (
                5 if nn.arrayInputShapeMapping == 0 else len(feature.type.multiArrayType.shape)
            )
        elif kind == "imageType":
            ranks[feature.name] = 5 if nn.imageInputShapeMapping == 0 else 4
    for feature in spec.description.output:
        if (
            feature.type.WhichOneof("Type") == "multiArrayType"
            and feature.type.multiArrayType.shape
        ):
            ranks[feature.name] = len(feature.type.multiArrayType.shape)
    return ranks


def network_findings(spec: Spec) -> list[Finding]:
    """``validateNeuralNetworkTopLevel`` and ``validateNeuralNetwork``."""
    kind = model_type(spec)
    nn = getattr(spec, kind)
    description = spec.description
    findings = []
    if not description.input:
        findings.append(
            Finding("MODEL_INTERFACE", None, "Neural networks require at least one input.")
        )
    if not description.output:
        findings.append(
            Finding("MODEL_INTERFACE", None, "Neural networks produce at least one output.")
        )
    nd = nd_semantics(spec, nn)
    has_array_input = any(f.type.WhichOneof("Type") == "multiArrayType" for f in description.input)
    if has_array_input and nn.arrayInputShapeMapping == 0:
        if any(not is_ios12_layer(layer) for layer in nn.layers):
            findings.append(
                Finding(
                    "SHAPE_MAPPING",
                    None,
                    "MultiArray input shape mapping is "
                    "RANK5_ARRAY_MAPPING but the network has a layer added in iOS 13 or later.",
                )
            )
        elif nn.imageInputShapeMapping != 0:
            findings.append(
                Finding(
                    "SHAPE_MAPPING",
                    None,
                    "MultiArray input shape mapping is "
                    "RANK5_ARRAY_MAPPING but the image input shape mapping is not RANK5.",
                )
            )
    if (
        description.input
        and all(
            f.type.isOptional for f in description.input if f.type.WhichOneof("Type") != "stateType"
        )
        and any(f.type.WhichOneof("Type") != "stateType" for f in description.input)
    ):
        findings.append(
            Finding(
                "MODEL_INTERFACE",
                None,
                "Every input is optional; a neural network needs at least one that is not.",
            )
        )
    for feature in description.input:
        if feature.type.WhichOneof("Type") not in ("imageType", "multiArrayType", "stateType"):
            findings.append(
                Finding(
                    "MODEL_INTERFACE",
                    feature.name,
                    f"Input {feature.name!r} is "
                    f"{feature.type.WhichOneof('Type')}; neural network inputs are "
                    "images or MultiArrays.",
                )
            )
        elif feature.type.WhichOneof("Type") == "multiArrayType" and not nd:
            array = feature.type.multiArrayType
            ranks = {len(array.shape)} if array.shape else set()
            if array.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
                ranks |= {len(s.shape) for s in array.enumeratedShapes.shapes}
            elif array.WhichOneof("ShapeFlexibility") == "shapeRange":
                ranks.add(len(array.shapeRange.sizeRanges))
            if not ranks or not ranks <= {1, 3}:
                findings.append(
                    Finding(
                        "MODEL_INTERFACE",
                        feature.name,
                        f"Input {feature.name!r}: "
                        "without N-d layers, MultiArray inputs must have rank 1 or 3.",
                    )
                )
    if kind == "neuralNetwork":
        for feature in description.output:
            if feature.type.WhichOneof("Type") not in ("imageType", "multiArrayType", "stateType"):
                findings.append(
                    Finding(
                        "MODEL_INTERFACE",
                        feature.name,
                        f"Output {feature.name!r} is "
                        f"{feature.type.WhichOneof('Type')}; a neural network's outputs are "
                        "images or MultiArrays (use a classifier for labels).",
                    )
                )
    if not nn.layers:
        findings.append(Finding("NO_LAYERS", None, "The neural network has no layers."))
        return findings
    producers, layer_findings = _layer_findings(
        nn, description, nd, io_ranks(spec, nn) if nd else {}
    )
    findings += layer_findings
    if producers is not None:
        findings += _output_findings(spec, kind, nn, producers)
    return findings


def _layer_findings(nn, description, nd: bool, ranks: dict[str, int]):
    """Counts, ranks, and the blob rules: every input produced before, every output once
    (a ``copy`` may rewrite a blob). Returns (blob -> producers or None, findings)."""
    findings = []
    track = not any(layer.WhichOneof("layer") in ("branch", "loop") for layer in nn.layers)
    producers: dict[str, list[str]] = {feature.name: ["__input"] for feature in description.input}
    ranks = dict(ranks)
    for layer in nn.layers:
        kind = layer.WhichOneof("layer")
        if kind is None:
            findings.append(
                Finding("LAYER_IO_COUNT", layer.name, f"Layer {layer.name!r} has no type.")
            )
            continue
        lo_in, hi_in, lo_out, hi_out = LAYER_IO_COUNTS.get(kind, (0, -1, 0, -1))
        for count, lo, hi, what in (
            (len(layer.input), lo_in, hi_in, "inputs"),
            (len(layer.output), lo_out, hi_out, "outputs"),
        ):
            if count < lo or (hi >= 0 and count > hi):
                expected = (
                    f"exactly {lo}"
                    if lo == hi
                    else f"at least {lo}"
                    if count < lo
                    else f"at most {hi}"
                )
                findings.append(
                    Finding(
                        "LAYER_IO_COUNT",
                        layer.name,
                        f"Layer {layer.name!r} ({kind}) has {count} {what} but expects {expected}.",
                    )
                )
        findings += layer_param_findings(layer) or quantization_findings(layer)
        if nd:
            findings += _rank_findings(layer, kind, ranks)
        if not track:
            continue
        for blob in layer.input:
            if blob not in producers:
                findings.append(
                    Finding(
                        "BLOB_NOT_PRODUCED",
                        layer.name,
                        f"Layer {layer.name!r} reads "
                        f"{blob!r}, which no model input or earlier layer produces.",
                    )
                )
        for blob in layer.output:
            if blob in producers and kind != "copy":
                findings.append(
                    Finding(
                        "BLOB_PRODUCED_TWICE",
                        layer.name,
                        f"Layer {layer.name!r} "
                        f"produces {blob!r}, which {producers[blob][0]!r} also produces.",
                    )
                )
            producers.setdefault(blob, []).append(layer.name)
    return (producers if track else None), findings


def _rank_findings(layer, kind: str, ranks: dict[str, int]) -> list[Finding]:
    """Tensor annotations must agree with the description and with each other; the layer's
    rank limits hold where ranks are known (``validateRankCount``)."""
    findings = []
    for blobs, tensors in ((layer.input, layer.inputTensor), (layer.output, layer.outputTensor)):
        if not tensors:
            continue
        if len(tensors) != len(blobs):
            findings.append(
                Finding(
                    "LAYER_RANK",
                    layer.name,
                    f"Layer {layer.name!r} annotates "
                    f"{len(tensors)} tensors for {len(blobs)} blobs.",
                )
            )
            continue
        for blob, tensor in zip(blobs, tensors, strict=True):
            if blob in ranks and ranks[blob] != tensor.rank:
                findings.append(
                    Finding(
                        "LAYER_RANK",
                        layer.name,
                        f"Layer {layer.name!r} annotates "
                        f"{blob!r} with rank {tensor.rank}, elsewhere it has rank {ranks[blob]}.",
                    )
                )
            ranks.setdefault(blob, tensor.rank)
    limits = rank_limits(layer)
    if limits is None or not layer.input or not layer.output:
        return findings
    lo, hi = limits
    for what, blob in (("input", layer.input[0]), ("output", layer.output[0])):
        rank = ranks.get(blob)
        if rank is not None and (rank < lo or (hi >= 0 and rank > hi)):
            bound = f"{lo}" if lo == hi else f"at least {lo}" if hi < 0 else f"{lo} to {hi}"
            findings.append(
                Finding(
                    "LAYER_RANK",
                    layer.name,
                    f"Layer {layer.name!r} ({kind}) needs "
                    f"{what} rank {bound}; {blob!r} has rank {rank}.",
                )
            )
            break
    return findings


def _output_findings(spec: Spec, kind: str, nn, producers: dict[str, list[str]]) -> list[Finding]:
    """Model outputs come from layers (a classifier's label and probabilities outputs are made
    by Core ML itself); a classifier's labelProbabilityLayerName names a layer output."""
    inputs = {f.name for f in spec.description.input}
    made = {blob for blob, by in producers.items() if blob not in inputs or len(by) > 1}
    findings: list[Finding] = []
    if kind == "neuralNetworkRegressor":
        return findings
    extra = set()
    if kind == "neuralNetworkClassifier":
        extra = {spec.description.predictedFeatureName, spec.description.predictedProbabilitiesName}
        probabilities = nn.labelProbabilityLayerName
        if probabilities and probabilities not in made:
            findings.append(
                Finding(
                    "OUTPUT_NOT_PRODUCED",
                    None,
                    f"labelProbabilityLayerName {probabilities!r} is not produced by any layer.",
                )
            )
    for output in spec.description.output:
        if output.name not in made and output.name not in extra:
            findings.append(
                Finding(
                    "OUTPUT_NOT_PRODUCED",
                    output.name,
                    f"Output {output.name!r} is not produced by any layer.",
                )
            )
    return findings
