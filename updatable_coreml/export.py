"""The export pipeline every frontend ends in, and the report it returns.

``export_graph``: passes -> backend -> training configuration -> validation -> atomic save.
Nothing is written unless the validator finds no error, so a refused export never leaves a
file behind.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

from .backend import Label, Metadata, build_spec
from .errors import ConfigError, NotUpdatableError
from .ir import Graph
from .passes import run_frozen_passes, run_passes
from .spec_io import Spec, atomic_write_bytes, neural_network
from .training import SGD, Adam, FloatParam, Loss, Optimizer, TrainingConfig, apply_training_config

if TYPE_CHECKING:
    from .backbone import Backbone

PathLike = Union[str, os.PathLike]


@dataclass
class ExportReport:
    """What an export produced and everything the user should know about it."""

    path: str
    sha256: str
    size_bytes: int
    model_type: str
    source: str
    inputs: dict[str, list[int]]
    outputs: list[str]
    trainable: list[str]
    frozen: list[str]
    changes: list[str]           # removed / folded / added by the passes
    training: list[str]          # the update parameters, as written
    assumptions: list[str]       # choices made for the user (defaults, mapped values)
    warnings: list[str]          # things that will behave differently on device
    findings: list[str] = field(default_factory=list)  # validator warnings
    #: how the frozen stage of a pipeline was made: "frontend" (our translation, cut at the
    #: first trainable layer) or "coremltools" (ct.convert); "" for a single network
    backbone: str = ""

    def summary(self) -> str:
        lines = [f"exported {self.model_type} from {self.source or 'the model'} to {self.path} "
                 f"({self.size_bytes / 1e6:.2f} MB, sha256 {self.sha256[:12]})",
                 f"trains on device: {', '.join(self.trainable)}",
                 f"frozen: {len(self.frozen)} layer(s)"
                 + (f" (pipeline backbone made by {self.backbone})" if self.backbone else "")]
        lines += [f"  {line}" for line in self.training]
        sections = (("changes", self.changes), ("assumptions", self.assumptions),
                    ("warnings", self.warnings), ("validator", self.findings))
        for title, items in sections:
            if items:
                lines.append(f"{title}:")
                lines += [f"  - {item}" for item in items]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def with_lr_range(optimizer: Optimizer, lr_range: Optional[tuple[float, float]]) -> Optimizer:
    """The optimizer with the learning rate's allowed range replaced (None keeps it)."""
    if lr_range is None:
        return optimizer
    lr = FloatParam(optimizer.learning_rate.default, tuple(lr_range), "learning rate")
    if isinstance(optimizer, SGD):
        return SGD(lr, optimizer.momentum)
    return Adam(lr, optimizer.beta1, optimizer.beta2, optimizer.eps)


def class_labels_with_slots(labels: Optional[Sequence[Label]], extra: int) -> Optional[list[Label]]:
    """``labels`` plus ``extra`` placeholder labels for classes the app learns later:
    ``user0``, ``user1``… (or the next integers when the labels are integers)."""
    if extra < 0:
        raise ConfigError(f"extra_class_slots must be >= 0, got {extra}")
    if labels is None:
        if extra:
            raise ConfigError("extra_class_slots needs class_labels (the known classes)")
        return None
    labels = list(labels)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in labels) and labels:
        start = max(labels) + 1
        return labels + list(range(start, start + extra))
    return [str(v) for v in labels] + [f"user{i}" for i in range(extra)]


def _layer_names(spec: Spec) -> tuple[list[str], list[str]]:
    layers = neural_network(spec).layers
    return ([layer.name for layer in layers if layer.isUpdatable],
            [layer.name for layer in layers if not layer.isUpdatable])


def frozen_spec(graph: Graph, metadata: Metadata = Metadata()) -> tuple[Spec, list[str]]:
    """``graph`` as a plain NeuralNetwork spec that does not train (a pipeline's frozen
    stage: a feature extractor or backbone), and the notes of the passes."""
    graph = run_frozen_passes(graph)
    return build_spec(graph, metadata=metadata), list(graph.notes)


def export_graph(graph: Graph, path: PathLike, *, loss: str, optimizer: Optimizer,
                 from_logits: bool = False, batch_size: int = 32, epochs: int = 10,
                 allowed_batch_sizes: Optional[Union[Sequence[int], range]] = None,
                 allowed_epochs: Optional[Union[Sequence[int], range]] = None,
                 lr_range: Optional[tuple[float, float]] = None, shuffle: bool = True,
                 seed: Optional[int] = None, class_labels: Optional[Sequence[Label]] = None,
                 extra_class_slots: int = 0, regressor: bool = False,
                 metadata: Metadata = Metadata(), allow_unsupported: bool = False,
                 assumptions: Sequence[str] = (), warnings: Sequence[str] = (),
                 pipeline: bool = False, backbone: Optional["Backbone"] = None) -> ExportReport:
    """Turn a frontend's IR graph into a validated, updatable ``.mlmodel`` at ``path``.

    ``loss`` is ``'cce'`` or ``'mse'``; ``from_logits`` appends the softmax cross-entropy
    needs. ``assumptions``/``warnings`` come from the frontend and go into the report.
    ``pipeline=True`` writes a pipeline of a frozen backbone (everything before the first
    trainable layer's input) and the updatable head; a ``backbone`` made elsewhere
    (coremltools) is chained in front of ``graph`` instead, which is then only the head.
    Raises ``NotUpdatableError``/``UnsupportedError``/``ConfigError`` before writing anything.
    """
    graph, pass_warnings = run_passes(graph, loss_kind=loss, from_logits=from_logits,
                                      allow_unsupported=allow_unsupported)
    labels = class_labels_with_slots(class_labels, extra_class_slots)
    if labels is not None and loss != "cce":
        raise ConfigError("class_labels make a classifier, which trains with categorical "
                          f"cross-entropy; the loss is {loss!r}")
    layer_names = {node.name for node in graph.nodes}
    loss_name = next(n for n in ("loss", "loss_layer", "updatable_coreml_loss") if n not in layer_names)
    config = TrainingConfig(Loss(loss, graph.outputs[0], name=loss_name), with_lr_range(optimizer, lr_range),
                            batch_size=batch_size, allowed_batch_sizes=allowed_batch_sizes,
                            epochs=epochs, allowed_epochs=allowed_epochs, shuffle=shuffle, seed=seed)
    if pipeline and backbone is None:
        from .backbone import split_backbone

        backbone, graph = split_backbone(graph, metadata)
    spec = build_spec(graph, class_labels=labels, regressor=regressor, metadata=metadata)
    apply_training_config(spec, config)
    trainable, frozen = _layer_names(spec)
    changes = list(graph.notes)
    if backbone is not None:
        from .backbone import chain, layer_names

        frozen[:0] = layer_names(backbone.spec)
        changes += backbone.notes
        spec = chain(backbone.spec, spec)
    return save_validated(spec, path, source=metadata.source, trainable=trainable, frozen=frozen,
                          changes=changes, training=config.summary_lines(),
                          assumptions=list(assumptions), warnings=list(warnings) + pass_warnings,
                          backbone=backbone.path if backbone is not None else "")


def save_validated(spec: Spec, path: PathLike, **report: list) -> ExportReport:
    """Validate ``spec``, write it atomically only if it has no error, and report on it.

    ``report`` holds the ``ExportReport`` fields only the caller knows (source, trainable,
    frozen, changes, training, assumptions, warnings).
    """
    from .validator import is_valid, validate

    findings = validate(spec)
    if not is_valid(findings):
        errors = [f for f in findings if f.severity == "error"]
        raise NotUpdatableError("the exported model would not be valid: "
                                + "; ".join(str(f) for f in errors))
    data = spec.SerializeToString(deterministic=True)
    with ThreadPoolExecutor(1) as pool:  # both release the GIL: hash while the file syncs
        digest = pool.submit(lambda: hashlib.sha256(data).hexdigest())
        written = atomic_write_bytes(data, path)
        sha256 = digest.result()
    inputs = {i.name: list(i.type.multiArrayType.shape) if i.type.WhichOneof("Type") == "multiArrayType"
              else [i.type.imageType.height, i.type.imageType.width] for i in spec.description.input}
    return ExportReport(
        path=str(Path(written)), sha256=sha256, size_bytes=len(data),
        model_type=spec.WhichOneof("Type"), inputs=inputs,
        outputs=[o.name for o in spec.description.output], findings=[str(f) for f in findings],
        **report)
