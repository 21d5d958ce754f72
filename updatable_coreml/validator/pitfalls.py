"""Warnings: failures users reported on devices that Core ML's validator does not catch.

Each rule cites the report it comes from (coremltools issue numbers, see
``../shared/COREML_EVIDENCE.md`` of the project brief); none of them changes the verdict.
"""

from __future__ import annotations

from ..spec_io import Spec
from .findings import Finding
from .graph import LayerGraph, layer_type, loss_io, trainable_path
from .ranks import infer_ranks

#: Last specification version a model can declare and still be loaded by iOS 13.
IOS13_SPEC_VERSION = 4
#: Highest tensor rank Core ML's training engine handled (#832: "Invalid rank: 6").
MAX_TRAINING_RANK = 5


def _fp16_weights(message) -> bool:
    """Whether any WeightParams inside ``message`` stores fp16 values."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        values = value if field.is_repeated else [value]
        for item in values:
            if field.message_type.name == "WeightParams":
                if len(item.float16Value):
                    return True
            elif _fp16_weights(item):
                return True
    return False


def _ancestors(graph: LayerGraph) -> dict[str, set[str]]:
    ancestors: dict[str, set[str]] = {}
    for node in graph.nodes:
        above: set[str] = set()
        for parent in node.parents:
            above |= ancestors.get(parent.name, set()) | {parent.name}
        ancestors[node.name] = above
    return ancestors


def _ranks_above_limit(spec: Spec, nn, ranks: dict[str, int]) -> list[str]:
    """Blobs whose rank is known (model description, layer tensor annotations, inferred) and
    above 5."""
    found = []
    for feature in list(spec.description.input) + list(spec.description.output):
        if (
            feature.type.WhichOneof("Type") == "multiArrayType"
            and len(feature.type.multiArrayType.shape) > MAX_TRAINING_RANK
        ):
            found.append(feature.name)
    for layer in nn.layers:
        for blob, tensor in list(zip(layer.input, layer.inputTensor, strict=False)) + list(
            zip(layer.output, layer.outputTensor, strict=False)
        ):
            if tensor.rank > MAX_TRAINING_RANK and blob not in found:
                found.append(blob)
    found += [
        blob for blob, rank in ranks.items() if rank > MAX_TRAINING_RANK and blob not in found
    ]
    return found


def softmax_rank_findings(nn, ranks: dict[str, int]) -> list[Finding]:
    """A classic softmax on a blob inferred (not annotated: general.py reports those) to be
    of rank below 3."""
    findings = []
    for layer in nn.layers:
        if layer_type(layer) != "softmax" or not layer.input or layer.inputTensor:
            continue
        rank = ranks.get(layer.input[0])
        if rank is not None and rank < 3:
            findings.append(
                Finding(
                    "CLASSIC_SOFTMAX_RANK",
                    layer.name,
                    f"Softmax {layer.name!r} reads "
                    f"{layer.input[0]!r}, which we infer to be rank {rank}.",
                )
            )
    return findings


def pitfall_findings(spec: Spec, nn, graph: LayerGraph) -> list[Finding]:
    findings = []
    path = trainable_path(nn, graph)
    for layer in path:
        if layer_type(layer) == "batchnorm":
            findings.append(
                Finding(
                    "BATCHNORM_ON_PATH",
                    layer.name,
                    f"Batchnorm {layer.name!r} lies between the loss and an updatable layer.",
                )
            )
    losses = nn.updateParams.lossLayers
    kind, source, _ = loss_io(losses[0]) if losses else (None, "", "")
    producer = graph.last_writer.get(source)
    ancestors = _ancestors(graph)
    updatable = {layer.name for layer in nn.layers if layer.isUpdatable}
    if (
        kind == "mse"
        and producer is not None
        and producer.layer is not None
        and layer_type(producer.layer) == "innerProduct"
        and not producer.layer.isUpdatable
        and ancestors[producer.name] & updatable
    ):
        findings.append(
            Finding(
                "INNER_PRODUCT_FEEDS_MSE",
                producer.name,
                f"Frozen innerProduct {producer.name!r} feeds the MSE loss directly, "
                "after an updatable layer.",
            )
        )
    if kind == "mse" and any(
        i.type.WhichOneof("Type") == "imageType"
        and i.type.imageType.colorSpace == i.type.imageType.GRAYSCALE
        for i in spec.description.input
    ):
        findings.append(Finding("GRAYSCALE_MSE", None, "MSE loss with a grayscale image input."))
    for layer in nn.layers:
        if layer.isUpdatable and layer_type(layer) == "uniDirectionalLSTM":
            findings.append(
                Finding(
                    "EXPERIMENTAL_LSTM_UPDATE",
                    layer.name,
                    f"Layer {layer.name!r} is an updatable uniDirectionalLSTM.",
                )
            )
        elif not layer.isUpdatable and _fp16_weights(
            getattr(layer, layer_type(layer) or "", layer)
        ):
            findings.append(
                Finding(
                    "FP16_WEIGHTS",
                    layer.name,
                    f"Frozen layer {layer.name!r} stores fp16 weights in an updatable network.",
                )
            )
    first_updatable = next((i for i, layer in enumerate(nn.layers) if layer.isUpdatable), None)
    if first_updatable is not None and any(
        layer_type(layer) == "uniDirectionalLSTM" for layer in nn.layers[:first_updatable]
    ):
        findings.append(
            Finding(
                "LSTM_BEFORE_UPDATABLE",
                nn.layers[first_updatable].name,
                "An LSTM runs before the first updatable layer.",
            )
        )
    if spec.specificationVersion <= IOS13_SPEC_VERSION:
        convs = {
            layer.name
            for layer in nn.layers
            if layer.isUpdatable and layer_type(layer) == "convolution"
        }
        for layer in nn.layers:
            below = ancestors[layer.name] & convs if layer.name in convs else set()
            if below:
                findings.append(
                    Finding(
                        "STACKED_UPDATABLE_CONV",
                        layer.name,
                        f"Updatable convolution {layer.name!r} follows updatable "
                        f"convolution {sorted(below)[0]!r}; specificationVersion is "
                        f"{spec.specificationVersion}.",
                    )
                )
                break
    ranks = infer_ranks(spec, nn)
    findings += softmax_rank_findings(nn, ranks)
    for blob in _ranks_above_limit(spec, nn, ranks):
        findings.append(
            Finding("RANK_ABOVE_5", None, f"Blob {blob!r} has rank above {MAX_TRAINING_RANK}.")
        )
    params = nn.updateParams
    if params.HasField("shuffle") and params.shuffle.defaultValue and not params.HasField("seed"):
        findings.append(Finding("NO_SHUFFLE_SEED", None, "Shuffle is on and no seed is set."))
    if kind == "mse":
        findings.append(
            Finding(
                "MSE_LOSS_VALUE",
                losses[0].name,
                "The MSE lossValue Core ML reports may differ from the true MSE.",
            )
        )
    return findings
