"""k-NN classifier rules (``mlmodel/src/Validation/KNearestNeighborsClassifierValidator.cpp``
and the classifier interface rules it calls, same in every release tag 3.0 to 9.0).

Apple checks no training input of a k-NN model; we warn when the training label is typed
unlike the class labels (what an update task does with it is unknown).
"""

from __future__ import annotations

from ..spec_io import Spec
from .findings import Finding
from .general import classifier_findings
from .params import int_param_findings


def label_type(knn) -> str:
    """The feature type (``int64Type``/``stringType``) of a k-NN classifier's labels."""
    labels = knn.WhichOneof("ClassLabels")
    integer = labels == "int64ClassLabels" or (
        labels is None and knn.WhichOneof("DefaultClassLabel") == "defaultInt64Label"
    )
    return "int64Type" if integer else "stringType"


def knn_findings(spec: Spec) -> list[Finding]:
    knn = spec.kNearestNeighborsClassifier
    findings = int_param_findings(
        "numberOfNeighbors", knn.numberOfNeighbors, positive=True, code="KNN_INVALID"
    )
    if knn.WhichOneof("WeightingScheme") is None:
        findings.append(Finding("KNN_INVALID", None, "No weighting scheme is set."))
    labels = knn.WhichOneof("ClassLabels")
    default = knn.WhichOneof("DefaultClassLabel")
    count = len(getattr(knn, labels).vector) if labels else 0
    if default is None and count == 0:
        findings.append(
            Finding("KNN_INVALID", None, "Neither class labels nor a default label is set.")
        )
    if default and labels and (default == "defaultStringLabel") != (labels == "stringClassLabels"):
        findings.append(
            Finding("KNN_INVALID", None, "Class labels and the default label differ in type.")
        )
    findings += classifier_findings(
        spec,
        knn,
        allow_empty_labels=True,
        default_is_int64=knn.WhichOneof("DefaultClassLabel") == "defaultInt64Label",
    )
    findings += [
        Finding(
            "MODEL_INTERFACE",
            f.name,
            f"Input {f.name!r} is optional; a k-NN classifier's inputs cannot be.",
        )
        for f in spec.description.input
        if f.type.isOptional
    ]
    index = knn.nearestNeighborsIndex
    if len(index.floatSamples) != count:
        findings.append(
            Finding("KNN_INVALID", None, f"{len(index.floatSamples)} examples but {count} labels.")
        )
    if any(len(s.vector) != index.numberOfDimensions for s in index.floatSamples):
        findings.append(
            Finding(
                "KNN_INVALID",
                None,
                f"An example's length differs from numberOfDimensions={index.numberOfDimensions}.",
            )
        )
    backend = index.WhichOneof("IndexType")
    if backend is None:
        findings.append(Finding("KNN_INVALID", None, "No index type (linear or kd-tree) is set."))
    elif backend == "singleKdTreeIndex" and index.singleKdTreeIndex.leafSize <= 0:
        findings.append(Finding("KNN_INVALID", None, "kd-tree leaf size must be positive."))
    if index.WhichOneof("DistanceFunction") is None:
        findings.append(Finding("KNN_INVALID", None, "No distance function is set."))
    return findings + training_label_findings(spec, label_type(knn))


def training_label_findings(spec: Spec, wanted: str) -> list[Finding]:
    """Our warning: the training label, when given, is typed like the class labels."""
    description = spec.description
    name = description.predictedFeatureName
    training = next((t for t in description.trainingInput if t.name == name), None)
    if training is not None and training.type.WhichOneof("Type") != wanted:
        return [
            Finding(
                "KNN_TRAINING_LABEL_TYPE",
                None,
                f"Training input {name!r} is "
                f"{training.type.WhichOneof('Type')}, the class labels are {wanted}.",
            )
        ]
    return []
