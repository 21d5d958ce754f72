"""Pipeline rules (``mlmodel/src/Validation/PipelineValidator.cpp``, same logic in every
release tag 3.0 to 9.0; the model-name checks exist from 4.0 on).

Every model of a pipeline is validated as a model of its own; inputs are wired by name and
type (features.equivalent, which ignores the optional flag and flexible shapes); only the
last model of an updatable pipeline is updatable, and it must be.
"""

from __future__ import annotations

from collections.abc import Callable

from ..coreml_rules import MIN_UPDATABLE_SPEC_VERSION, PIPELINE_MODEL_TYPES
from ..spec_io import Spec, model_type
from .features import equivalent
from .findings import Finding
from .knn import label_type, training_label_findings

ValidateModel = Callable[[Spec, bool], list]


def pipeline_body(spec: Spec):
    kind = model_type(spec)
    return spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline


def pipeline_findings(spec: Spec, validate_model: ValidateModel) -> list[Finding]:
    """``validate_model(sub_spec, top_level)`` validates one contained model."""
    body = pipeline_body(spec)
    models = list(body.models)
    if not models:
        return [Finding("PIPELINE_WIRING", None, "The pipeline has no models.")]
    findings = []
    known = {i.name: i for i in spec.description.input}
    for position, model in enumerate(models):
        for needed in model.description.input:
            if needed.name not in known:
                findings.append(
                    Finding(
                        "PIPELINE_WIRING",
                        f"model {position}",
                        f"Input {needed.name!r} is not produced before model {position}.",
                    )
                )
            elif not equivalent(needed, known[needed.name]):
                findings.append(
                    Finding(
                        "PIPELINE_WIRING",
                        f"model {position}",
                        f"Input {needed.name!r} of model {position} has another type than "
                        "what feeds it.",
                    )
                )
        findings += [_prefixed(f, position) for f in validate_model(model, False)]
        known.update({o.name: o for o in model.description.output})
    for output in spec.description.output:
        if output.name not in known or not equivalent(output, known[output.name]):
            findings.append(
                Finding(
                    "PIPELINE_WIRING",
                    None,
                    f"Pipeline output {output.name!r} is not "
                    "produced by a model (or has another type than the model's).",
                )
            )
    if spec.isUpdatable:
        early = [i for i, m in enumerate(models[:-1]) if m.isUpdatable]
        if early:
            findings.append(
                Finding(
                    "PIPELINE_UPDATABLE_POSITION",
                    f"model {early[0]}",
                    f"Model {early[0]} is updatable but is not the last model.",
                )
            )
        if not models[-1].isUpdatable:
            findings.append(
                Finding(
                    "PIPELINE_UPDATABLE_POSITION",
                    f"model {len(models) - 1}",
                    "The pipeline is updatable but its last model is not.",
                )
            )
        if spec.specificationVersion < MIN_UPDATABLE_SPEC_VERSION:
            findings.append(
                Finding(
                    "SPEC_VERSION", None, f"specificationVersion is {spec.specificationVersion}."
                )
            )
        if model_type(models[-1]) == "kNearestNeighborsClassifier":
            findings += training_label_findings(
                spec, label_type(models[-1].kNearestNeighborsClassifier)
            )
    else:
        marked = [i for i, m in enumerate(models) if m.isUpdatable]
        if marked:
            findings.append(
                Finding(
                    "PIPELINE_UPDATABLE_POSITION",
                    f"model {marked[0]}",
                    f"Model {marked[0]} is updatable inside a pipeline not marked updatable.",
                )
            )
    names = list(body.names)
    if names and (len(names) != len(models) or len(set(names)) != len(names)):
        findings.append(
            Finding(
                "PIPELINE_WIRING",
                None,
                f"The pipeline's {len(names)} model names must be unique and one per model "
                f"({len(models)}).",
            )
        )
    return findings


def is_pipeline(spec: Spec) -> bool:
    return model_type(spec) in PIPELINE_MODEL_TYPES


def _prefixed(finding: Finding, position: int) -> Finding:
    return Finding(
        finding.code,
        finding.layer or f"model {position}",
        f"(pipeline model {position}) {finding.message}",
    )
