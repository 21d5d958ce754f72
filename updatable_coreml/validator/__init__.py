"""Validate updatable models with the rules Core ML applies, plus known on-device pitfalls.

The rules are ported (in our own code) from Apple's open validator in apple/coremltools
``mlmodel/src/Validation/`` and hold for every release tag 3.0 to 9.0; Core ML's facts that
other modules share live in ``updatable_coreml.coreml_rules``. Each finding carries a stable
code (``CODES``: severity, meaning, fix), the layer it concerns and a message.

Layout: ``findings`` (codes), ``features`` (Apple's type equality), ``graph`` (Apple's layer
graph and backprop walk), ``params`` (update parameters), ``updatable`` (updatable network
rules), ``pitfalls`` (device warnings), ``knn``, ``pipeline``.
"""

from __future__ import annotations

from ..coreml_rules import MIN_UPDATABLE_SPEC_VERSION, UPDATABLE_MODEL_TYPES
from ..spec_io import NEURAL_NETWORK_TYPES, Spec, SpecLike, load_spec, model_type
from .findings import CODES, Finding, is_valid
from .general import general_findings
from .graph import backpropagable, build_graph, trainable_path
from .knn import knn_findings
from .pipeline import is_pipeline, pipeline_findings
from .pitfalls import pitfall_findings
from .updatable import (
    backprop_findings,
    layer_findings,
    loss_findings,
    training_input_findings,
    update_param_findings,
)

__all__ = ["CODES", "Finding", "is_valid", "validate", "backpropagable", "trainable_path"]


def validate(model: SpecLike) -> list[Finding]:
    """All findings for a model (path, bytes or spec); empty means valid with no warnings."""
    return _validate_model(load_spec(model), True)


def _validate_model(spec: Spec, top_level: bool) -> list[Finding]:
    """Apple's ``Model::validate`` (general rules, then the model type's), plus, for an
    updatable model, the updatable rules and device pitfalls. A contained model of a pipeline
    is checked like Apple checks it; ``NOT_UPDATABLE`` is reported only at the top."""
    kind = model_type(spec)
    if kind == "mlProgram":
        return [
            Finding("ML_PROGRAM", None, "This file is an ML Program; Core ML cannot update it.")
        ]
    findings = general_findings(spec)
    if is_pipeline(spec):
        findings += pipeline_findings(spec, _validate_model)
        if top_level and not spec.isUpdatable:
            findings.append(Finding("NOT_UPDATABLE", None, "The pipeline is not marked updatable."))
        return findings
    if kind == "kNearestNeighborsClassifier":
        findings += knn_findings(spec)
    if not spec.isUpdatable:
        if top_level:
            findings.append(Finding("NOT_UPDATABLE", None, "isUpdatable is false."))
        return findings
    if spec.specificationVersion < MIN_UPDATABLE_SPEC_VERSION:
        findings.append(
            Finding("SPEC_VERSION", None, f"specificationVersion is {spec.specificationVersion}.")
        )
    if kind in NEURAL_NETWORK_TYPES:
        findings += _network_findings(spec, findings)
    elif kind not in UPDATABLE_MODEL_TYPES:
        findings.append(
            Finding("WRONG_MODEL_TYPE", None, f"Model type {kind!r} cannot be updatable.")
        )
    return findings


def _network_findings(spec: Spec, general: list[Finding]) -> list[Finding]:
    """The updatable rules; the pitfalls only when nothing else (``general`` included) failed."""
    nn = getattr(spec, model_type(spec))
    graph = build_graph(nn)
    findings = layer_findings(nn)
    findings += loss_findings(nn, graph)
    findings += update_param_findings(nn)
    if nn.updateParams.lossLayers:
        findings += backprop_findings(graph)
        findings += training_input_findings(spec, nn)
        if is_valid(findings) and is_valid(general):
            findings += pitfall_findings(spec, nn, graph)
    return findings
