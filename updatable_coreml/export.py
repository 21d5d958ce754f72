"""The export pipeline every frontend ends in, and the report it returns.

``export_graph``: passes -> backend -> training configuration -> validation -> atomic save.
Nothing is written unless the validator finds no error, so a refused export never leaves a
file behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .backend import Label, Metadata, build_spec
from .compose import Backbone, chain, layer_names
from .compression import Compression, compress_and_measure
from .errors import ConfigError, NotUpdatableError
from .ir import Graph, TensorSpec
from .options import DEFAULT_COMPRESSION_EXAMPLES, ExportOptions
from .passes import _rename, cut_at, infer_shapes, run_frozen_passes, run_passes
from .sizes import format_size
from .spec_io import Spec, atomic_write_bytes, neural_network
from .training import SGD, Adam, FloatParam, Loss, Optimizer, TrainingConfig, apply_training_config

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
    changes: list[str]  # removed / folded / added by the passes
    training: list[str]  # the update parameters, as written
    assumptions: list[str]  # choices made for the user (defaults, mapped values)
    warnings: list[str]  # things that will behave differently on device
    findings: list[str] = field(default_factory=list)  # validator warnings
    #: how the frozen stage of a pipeline was made: "frontend" (our translation, cut at the
    #: first trainable layer) or "coremltools" (ct.convert); "" for a single network
    backbone: str = ""
    #: what ``compress_frozen`` did (sizes, layers, effect on predictions); None without it
    compression: Optional[Compression] = None

    def summary(self) -> str:
        lines = [
            f"exported {self.model_type} from {self.source or 'the model'} to {self.path} "
            f"({format_size(self.size_bytes)}, sha256 {self.sha256[:12]})",
            f"trains on device: {', '.join(self.trainable)}",
            f"frozen: {len(self.frozen)} layer(s)"
            + (f" (pipeline backbone made by {self.backbone})" if self.backbone else ""),
        ]
        lines += [f"  {line}" for line in self.training]
        if self.compression is not None:
            lines += self.compression.summary_lines()
        sections = (
            ("changes", self.changes),
            ("assumptions", self.assumptions),
            ("warnings", self.warnings),
            ("validator", self.findings),
        )
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
    low, high = lr_range
    lr = FloatParam(optimizer.learning_rate.default, (float(low), float(high)), "learning rate")
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
    known = list(labels)
    integers = [v for v in known if isinstance(v, int) and not isinstance(v, bool)]
    result: list[Label]
    if known and len(integers) == len(known):
        start = max(integers) + 1
        result = [*integers, *range(start, start + extra)]
    else:
        result = [*(str(v) for v in known), *(f"user{i}" for i in range(extra))]
    return result


def _layer_names(spec: Spec) -> tuple[list[str], list[str]]:
    layers = neural_network(spec).layers
    return (
        [layer.name for layer in layers if layer.isUpdatable],
        [layer.name for layer in layers if not layer.isUpdatable],
    )


def frozen_spec(graph: Graph, metadata: Metadata = Metadata()) -> tuple[Spec, list[str]]:
    """``graph`` as a plain NeuralNetwork spec that does not train (a pipeline's frozen
    stage: a feature extractor or backbone), and the notes of the passes."""
    graph = run_frozen_passes(graph)
    return build_spec(graph, metadata=metadata), list(graph.notes)


def export_graph(
    graph: Graph,
    path: PathLike,
    *,
    loss: str,
    optimizer: Optimizer,
    from_logits: bool = False,
    options: Optional[ExportOptions] = None,
    source: str = "",
    assumptions: Sequence[str] = (),
    warnings: Sequence[str] = (),
    backbone: Optional[Backbone] = None,
    **kwargs: Any,
) -> ExportReport:
    """Turn a frontend's IR graph into a validated, updatable ``.mlmodel`` at ``path``.

    ``loss`` is ``'cce'`` or ``'mse'``; ``from_logits`` appends the softmax cross-entropy
    needs. ``options`` (or the same names as keywords, see ``ExportOptions``) hold the
    training configuration, the model options and the policy; ``source`` names the framework
    in the metadata. ``assumptions``/``warnings`` come from the frontend and go into the
    report. ``pipeline=True`` writes a pipeline of a frozen backbone (everything before the
    first trainable layer's input) and the updatable head; a ``backbone`` made elsewhere
    (coremltools) is chained in front of ``graph`` instead, which is then only the head.
    Raises ``NotUpdatableError``/``UnsupportedError``/``ConfigError`` before writing anything.
    """
    options = ExportOptions.build(options, **kwargs)
    metadata = options.model_metadata(source)
    graph, renames = name_outputs(graph, options.output_names, loss, from_logits)
    graph, pass_warnings = run_passes(
        graph, loss_kind=loss, from_logits=from_logits, allow_unsupported=options.allow_unsupported
    )
    labels = class_labels_with_slots(options.class_labels, options.extra_class_slots)
    if labels is not None and loss != "cce":
        raise ConfigError(
            "class_labels make a classifier, which trains with categorical "
            f"cross-entropy; the loss is {loss!r}"
        )
    taken = {node.name for node in graph.nodes}
    loss_name = next(n for n in ("loss", "loss_layer", "updatable_coreml_loss") if n not in taken)
    config = TrainingConfig(
        Loss(loss, graph.outputs[0], name=loss_name),
        with_lr_range(optimizer, options.lr_range),
        batch_size=options.resolved("batch_size"),
        allowed_batch_sizes=options.allowed_batch_sizes,
        epochs=options.resolved("epochs"),
        allowed_epochs=options.allowed_epochs,
        shuffle=options.shuffle,
        seed=options.seed,
    )
    if options.pipeline and backbone is None:
        backbone, graph = split_backbone(graph, metadata)
    spec = build_spec(graph, class_labels=labels, regressor=options.regressor, metadata=metadata)
    apply_training_config(spec, config)
    trainable, frozen = _layer_names(spec)
    changes = renames + list(graph.notes)
    if backbone is not None:
        frozen[:0] = layer_names(backbone.spec)
        changes += backbone.notes
        spec = chain(backbone.spec, spec)
    compression = None
    if options.compress_frozen is not None:
        spec, compression = compress_and_measure(
            spec,
            options.compress_frozen,
            val=options.val,
            layout=options.val_layout,
            examples=DEFAULT_COMPRESSION_EXAMPLES,
        )
    return save_validated(
        spec,
        path,
        source=metadata.source,
        trainable=trainable,
        frozen=frozen,
        changes=changes,
        training=config.summary_lines(),
        assumptions=list(assumptions),
        warnings=list(warnings) + pass_warnings,
        backbone=backbone.path if backbone is not None else "",
        compression=compression,
    )


# -- output names ------------------------------------------------------------------------------


def default_output_name(name: str, loss: str, from_logits: bool) -> str:
    """A readable name for an output whose source name says nothing or says something false.

    A torch ``nn.Sequential`` names its output after the last child's index (``"4"``, so the
    training input became ``4_true`` and Swift ``_4True``); exported ONNX graphs often use bare
    numbers too. Such a name becomes what the output holds: ``probabilities`` for
    cross-entropy (the model then ends in a softmax), else ``output``. A name saying
    ``logits`` becomes ``probabilities`` when the export appends the softmax, because the
    output then holds probabilities. Any other name is the user's and stays.
    """
    holds = "probabilities" if loss == "cce" else "output"
    if not name[:1].isalpha() and not name.startswith("_"):
        return holds
    if from_logits and "logit" in name.lower():
        return holds
    return name


def name_outputs(
    graph: Graph, names: Optional[Sequence[str]], loss: str, from_logits: bool
) -> tuple[Graph, list[str]]:
    """``graph`` with its outputs renamed to ``names`` (``output_names``) or to readable
    defaults (``default_output_name``), and the report lines saying so."""
    outputs = list(graph.outputs)
    if names is not None and len(names) != len(outputs):
        raise ConfigError(
            f"--output-names (output_names=) gives {len(names)} name(s) for "
            f"{len(outputs)} output(s) {outputs}"
        )
    wanted = (
        list(names)
        if names is not None
        else [default_output_name(o, loss, from_logits) for o in outputs]
    )
    taken = {t for node in graph.nodes for t in (*node.inputs, *node.outputs)}
    taken |= {spec.name for spec in graph.inputs}
    notes, nodes, renamed = [], list(graph.nodes), []
    for old, new in zip(outputs, wanted):
        if old != new and new in taken:
            if names is not None:
                raise ConfigError(
                    f"--output-names (output_names=): {new!r} already names a "
                    "tensor of the model; choose another"
                )
            new = old  # a default that is taken: keep the source's name
        if old != new and graph.producer(old) is not None:
            nodes = _rename(nodes, old, new)
            taken.add(new)
            notes.append(
                f"output {old!r} named {new!r}"
                + ("" if names is not None else "; pass output_names to choose")
            )
        else:
            new = old
        renamed.append(new)
    return Graph(list(graph.inputs), renamed, nodes, list(graph.notes)), notes


# -- pipelines: the cut in our IR ----------------------------------------------------------


def split_graph(graph: Graph) -> tuple[Graph, Graph]:
    """(backbone, head) of a graph after ``run_passes``: the head starts at the input blob of
    the first trainable node. That blob is all the head needs: anything else joining in later
    would sit on the trainable path, where ``check_backprop`` already refused joins."""
    first = next(node for node in graph.nodes if node.trainable)
    blob = first.inputs[0]
    if any(spec.name == blob for spec in graph.inputs):
        raise ConfigError(
            f"pipeline: the first trainable layer {first.name!r} reads the model "
            "input, so there is no frozen backbone to split off; export one network"
        )
    prefix = cut_at(graph, blob)
    in_backbone = {node.name for node in prefix.nodes}
    head_nodes = [node for node in graph.nodes if node.name not in in_backbone]
    backbone = Graph(list(graph.inputs), [blob], prefix.nodes)
    head = Graph(
        [TensorSpec(blob, infer_shapes(graph)[blob])],
        list(graph.outputs),
        head_nodes,
        list(graph.notes),
    )
    return backbone, head


def split_backbone(graph: Graph, metadata: Metadata) -> tuple[Backbone, Graph]:
    """The frozen backbone (written by our backend) and the head graph of ``split_graph``."""
    prefix, head = split_graph(graph)
    note = (
        f"pipeline: the {len(prefix.nodes)} frozen layer(s) before {head.inputs[0].name!r} "
        "(the input of the first trainable layer) form the backbone, our frontend's "
        "translation; the rest is the updatable head"
    )
    return Backbone(build_spec(prefix, metadata=metadata), "frontend", [note]), head


def save_validated(spec: Spec, path: PathLike, **report: Any) -> ExportReport:
    """Validate ``spec``, write it atomically only if it has no error, and report on it.

    ``report`` holds the ``ExportReport`` fields only the caller knows (source, trainable,
    frozen, changes, training, assumptions, warnings).
    """
    from .validator import is_valid, validate

    findings = validate(spec)
    if not is_valid(findings):
        errors = [f for f in findings if f.severity == "error"]
        raise NotUpdatableError(
            "the exported model would not be valid: " + "; ".join(str(f) for f in errors)
        )
    data = spec.SerializeToString(deterministic=True)
    with ThreadPoolExecutor(1) as pool:  # both release the GIL: hash while the file syncs
        digest = pool.submit(lambda: hashlib.sha256(data).hexdigest())
        written = atomic_write_bytes(data, path)
        sha256 = digest.result()
    inputs = {
        i.name: list(i.type.multiArrayType.shape)
        if i.type.WhichOneof("Type") == "multiArrayType"
        else [i.type.imageType.height, i.type.imageType.width]
        for i in spec.description.input
    }
    return ExportReport(
        path=str(Path(written)),
        sha256=sha256,
        size_bytes=len(data),
        model_type=spec.WhichOneof("Type"),
        inputs=inputs,
        outputs=[o.name for o in spec.description.output],
        findings=[str(f) for f in findings],
        **report,
    )
