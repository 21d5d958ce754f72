"""Smaller files: the weights of frozen layers stored quantized (``compress_frozen``).

A real backbone is most of an app's model file (ResNet50 ~94 MB in fp32). Core ML reads
quantized ``WeightParams`` on the frozen layers of an updatable network and refuses them only
on updatable layers (``coreml_rules``, "quantized weights"); fp16 is not offered because
coremltools' builder refuses any fp16 in an updatable network (docs/limits.md). The methods
(``METHODS``) write what NeuralNetwork.proto defines and our runtime reads back
(``runtime.weights``):

* ``int8``: linear quantization, one scale and offset per output channel
  (``W = code * scale + min``), 8-bit codes: 4x smaller weights, error at most half a step.
* ``lut8`` / ``lut4``: palettization, one lookup table per layer (256 / 16 entries) fitted
  by 1-D k-means, 8- / 4-bit codes: 4x / 8x smaller, the error depends on the layer.

Only fp32 ``weights`` of frozen layers of the types Core ML accepts quantized
(``coreml_rules.QUANTIZABLE_WEIGHT_LAYER_TYPES``) and the weight and recursion matrices of
frozen recurrent layers (``QUANTIZABLE_RECURRENT_LAYER_TYPES``) are rewritten, and only when
the result is smaller; biases stay fp32 (small, and Apple allows only one scale for a
quantized bias). Updatable layers are never touched. Nested networks of control-flow layers
are left as they are.

Quantization is lossy: ``measure`` runs both files through the reference runtime on the
user's validation data (accuracy and loss before and after) or on seeded random examples
(largest difference of any output, top-1 agreement), and the export report carries it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import coreml_rules
from .errors import ConfigError, UpdatableCoreMLError
from .sizes import format_size

if TYPE_CHECKING:  # numpy is imported where it is used: the CLI reads METHODS at start-up
    import numpy as np


@dataclass(frozen=True)
class Method:
    """A way to store frozen weights: linear or lookup-table codes of ``bits`` bits."""

    name: str
    kind: str  # "linear" or "lut"
    bits: int
    about: str


METHODS: Mapping[str, Method] = {
    "int8": Method("int8", "linear", 8, "8-bit linear, per output channel (4x smaller)"),
    "lut8": Method("lut8", "lut", 8, "256-entry lookup table per layer, k-means (4x smaller)"),
    "lut4": Method("lut4", "lut", 4, "16-entry lookup table per layer, k-means (8x smaller)"),
}


def method(name: str) -> Method:
    """The method called ``name``; anything else is a ``ConfigError`` listing the choices."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"--compress-frozen (compress_frozen=): {name!r}; use one of " + ", ".join(METHODS)
        ) from None


@dataclass
class LayerCompression:
    """One rewritten ``weights`` field."""

    layer: str
    layer_type: str
    values: int
    bytes_before: int
    bytes_after: int
    max_weight_error: float
    #: the WeightParams rewritten: ``weights``, or a recurrent layer's matrix
    field: str = "weights"


@dataclass
class Compression:
    """What ``compress_frozen`` did, and (after ``measure``) what it changed."""

    method: str
    size_before: int
    size_after: int
    layers: list[LayerCompression] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: ``measure``'s numbers (``examples``, ``max_output_difference``, ``top1_agreement``,
    #: and with validation data ``accuracy_before``/``after``, ``loss_before``/``after``)
    effect: dict[str, Any] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        weights_before = sum(layer.bytes_before for layer in self.layers)
        weights_after = sum(layer.bytes_after for layer in self.layers)
        lines = [
            f"compressed frozen weights ({self.method}, {METHODS[self.method].about}): "
            f"{len(self.layers)} layer(s), weights {format_size(weights_before)} -> "
            f"{format_size(weights_after)}; model {format_size(self.size_before)} -> "
            f"{format_size(self.size_after)}"
        ]
        effect = self.effect
        if "not_measured" in effect:
            lines.append(f"effect on predictions not measured: {effect['not_measured']}")
        elif effect:
            agreement = effect.get("top1_agreement")
            lines.append(
                f"on {effect['examples']} {effect['data']}: largest output difference "
                f"{effect['max_output_difference']:.3g}"
                + (f", top-1 agreement {agreement:.1%}" if agreement is not None else "")
            )
            if "loss_before" in effect:
                accuracy = (
                    f"accuracy {effect['accuracy_before']:.4f} -> {effect['accuracy_after']:.4f}, "
                    if effect.get("accuracy_before") is not None
                    else ""
                )
                lines.append(
                    f"validation {accuracy}loss {effect['loss_before']:.4f} -> "
                    f"{effect['loss_after']:.4f}"
                )
        lines += [f"not compressed: {reason}" for reason in self.skipped]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "size_before": self.size_before,
            "size_after": self.size_after,
            "layers": [vars(layer) for layer in self.layers],
            "skipped": list(self.skipped),
            "effect": dict(self.effect),
        }


# -- rewriting a spec ---------------------------------------------------------------------------


def compress_frozen(spec, name: str):
    """A copy of ``spec`` with its frozen layers' weights stored by method ``name``, and the
    ``Compression`` saying what changed (``effect`` empty until ``measure``)."""
    chosen = method(name)
    from ._proto import Model_pb2

    out = Model_pb2.Model()
    out.CopyFrom(spec)
    result = Compression(chosen.name, spec.ByteSize(), 0)
    for network in _networks(out):
        for layer in network.layers:
            _compress_layer(layer, chosen, result)
    result.size_after = out.ByteSize()
    return out, result


def _networks(spec) -> list:
    """The NeuralNetwork messages of a model and of the models of its pipelines."""
    kind = spec.WhichOneof("Type")
    if kind in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        return [getattr(spec, kind)]
    if kind in coreml_rules.PIPELINE_MODEL_TYPES:
        pipeline = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        return [network for model in pipeline.models for network in _networks(model)]
    return []


def frozen_weights(layer) -> list[tuple[str, Any]]:
    """(field, WeightParams) of a layer that ``compress_frozen`` may rewrite: ``weights`` of
    the ``coreml_rules.QUANTIZABLE_WEIGHT_LAYER_TYPES``, the weight and recursion matrices of
    the ``QUANTIZABLE_RECURRENT_LAYER_TYPES`` (fields named as the runtime reads them)."""
    kind = layer.WhichOneof("layer")
    if kind is None:
        return []
    body = getattr(layer, kind)
    if kind in coreml_rules.QUANTIZABLE_WEIGHT_LAYER_TYPES:
        return [("weights", body.weights)]
    if kind not in coreml_rules.QUANTIZABLE_RECURRENT_LAYER_TYPES:
        return []
    holders: list[tuple[str, Any]] = [("", body)]
    if kind == "uniDirectionalLSTM":
        holders = [("weightParams.", body.weightParams)]
    elif kind == "biDirectionalLSTM":
        holders = [(f"weightParams.{i}.", params) for i, params in enumerate(body.weightParams)]
    return [
        (prefix + descriptor.name, value)
        for prefix, holder in holders
        for descriptor, value in holder.ListFields()
        if descriptor.name.lower().endswith("matrix")
    ]


def _compress_layer(layer, chosen: Method, result: Compression) -> None:
    if layer.isUpdatable:
        return
    for name, weights in frozen_weights(layer):
        if not weights.isUpdatable:
            _compress_field(layer, name, weights, chosen, result)


def _compress_field(layer, name: str, weights, chosen: Method, result: Compression) -> None:
    import numpy as np

    where = layer.name if name == "weights" else f"{layer.name} {name}"
    if not len(weights.floatValue):  # fp16, already quantized, or read from a second input
        if len(weights.float16Value) or weights.HasField("quantization"):
            result.skipped.append(f"{where!r}: its weights are not fp32")
        return
    values = np.asarray(weights.floatValue, dtype=np.float32)
    if values.size != coreml_rules.weight_count(layer, name):
        result.skipped.append(f"{where!r}: its weight count does not match its shape")
        return
    outer, channels = _channels(layer)
    encoded = _encode(values, chosen, outer, channels)
    before = weights.ByteSize()
    if encoded.ByteSize() >= before:
        return
    from .runtime.weights import decode_weights

    restored = decode_weights(encoded, where, layer, name)
    weights.CopyFrom(encoded)
    result.layers.append(
        LayerCompression(
            layer.name,
            layer.WhichOneof("layer"),
            int(values.size),
            before,
            weights.ByteSize(),
            float(np.max(np.abs(restored - values))),
            name,
        )
    )


def _channels(layer) -> tuple[int, int]:
    """(outer, channels): a layer's stored weights viewed as ``[outer, channels, inner]``
    with the output channels on ``coreml_rules.quantization_channel_axis``; one scale for a
    grouped deconvolution, whose output channels do not form one axis of its weights."""
    kind = layer.WhichOneof("layer")
    params = getattr(layer, kind)
    if coreml_rules.quantization_channel_axis(layer) == 1:
        if int(params.nGroups) > 1:
            return 1, 1
        return int(params.kernelChannels), int(params.outputChannels)
    if kind in coreml_rules.QUANTIZABLE_RECURRENT_LAYER_TYPES:
        return 1, int(params.outputVectorSize)
    return 1, int(coreml_rules.weight_count(layer, "bias") or 1)


def _encode(values: np.ndarray, chosen: Method, outer: int, channels: int):
    """A quantized ``WeightParams`` holding ``values`` (flat, in stored order)."""
    from ._proto import NeuralNetwork_pb2

    message = NeuralNetwork_pb2.WeightParams()
    quant = message.quantization
    quant.numberOfBits = chosen.bits
    if chosen.kind == "linear":
        codes, scale, offset = linear_codes(values, chosen.bits, channels, outer)
        quant.linearQuantization.scale.extend(scale.tolist())
        quant.linearQuantization.bias.extend(offset.tolist())
    else:
        table, codes = lookup_table(values, chosen.bits)
        quant.lookupTableQuantization.floatValue.extend(table.tolist())
    message.rawValue = pack_codes(codes, chosen.bits)
    return message


def linear_codes(
    values: np.ndarray, bits: int, channels: int, outer: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, scale, offset) with ``values ~ code * scale + offset`` per channel: each
    channel's range split into ``2**bits - 1`` steps from its minimum (a constant channel
    gets scale 1 and is exact). The values are viewed as ``[outer, channels, inner]``:
    ``outer`` 1 when the channels lead, a deconvolution's kernel channels otherwise."""
    import numpy as np

    shaped = values.reshape(outer, channels, -1)
    low = shaped.min(axis=(0, 2))
    high = shaped.max(axis=(0, 2))
    steps = (1 << bits) - 1
    scale = ((high - low) / steps).astype(np.float32)
    scale[~(scale > 0)] = 1.0
    codes = np.rint((shaped - low[None, :, None]) / scale[None, :, None])
    codes = np.clip(codes, 0, steps).astype(np.uint8)
    return codes.reshape(-1), scale, low.astype(np.float32)


def lookup_table(
    values: np.ndarray, bits: int, iterations: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """(table of ``2**bits`` floats, codes) from 1-D k-means (Lloyd's algorithm on the sorted
    values), minimising the squared weight error. Two starts, the better kept: evenly spaced
    quantiles (dense where most weights are) and an even grid over the range (rare large
    weights, which quantile starts reach slowly); from the grid, the result is never worse
    than linear codes of the same bits."""
    import numpy as np

    k = 1 << bits
    ordered = np.sort(values.astype(np.float64))
    prefix = np.concatenate([[0.0], np.cumsum(ordered)])
    squares = np.concatenate([[0.0], np.cumsum(ordered**2)])
    best, best_error = None, np.inf
    starts = (
        np.quantile(ordered, (np.arange(k) + 0.5) / k),
        np.linspace(ordered[0], ordered[-1], k),
    )
    for centers in starts:
        for _ in range(iterations):
            edges = (centers[1:] + centers[:-1]) / 2
            bounds = np.concatenate([[0], np.searchsorted(ordered, edges), [ordered.size]])
            counts = np.diff(bounds)
            sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
            updated = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), centers))
            if np.array_equal(updated, centers):
                break
            centers = updated
        edges = (centers[1:] + centers[:-1]) / 2
        bounds = np.concatenate([[0], np.searchsorted(ordered, edges), [ordered.size]])
        counts = np.diff(bounds)
        sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
        sum_squares = squares[bounds[1:]] - squares[bounds[:-1]]
        error = float(np.sum(sum_squares - 2 * centers * sums + counts * centers**2))
        if error < best_error:
            best, best_error = centers, error
    assert best is not None
    table = best.astype(np.float32)
    midpoints = (table[1:].astype(np.float64) + table[:-1]) / 2
    codes = np.searchsorted(midpoints, values.astype(np.float64)).astype(np.uint8)
    return table, codes


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """``bits``-bit unsigned codes packed most significant bit first, the last byte padded
    with zeros (NeuralNetwork.proto ``rawValue``; the order coremltools writes)."""
    import numpy as np

    codes = np.asarray(codes, dtype=np.uint8)
    if bits == 8:
        return codes.tobytes()
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
    bit_matrix = (codes[:, None] >> shifts) & 1
    return np.packbits(bit_matrix.reshape(-1)).tobytes()


# -- measuring the effect ----------------------------------------------------------------------


def compress_and_measure(
    spec, name: str, *, val: Any = None, layout: str = "nchw", examples: int = 8
) -> tuple[Any, Compression]:
    """``compress_frozen`` then ``measure``: the compressed spec and its report."""
    compressed, result = compress_frozen(spec, name)
    if result.layers:
        measure(spec, compressed, result, val=val, layout=layout, examples=examples)
    return compressed, result


def measure(
    original,
    compressed,
    result: Compression,
    *,
    val: Any = None,
    layout: str = "nchw",
    examples: int = 8,
    seed: int = 0,
) -> None:
    """Fill ``result.effect``: both specs run by the reference runtime on ``val`` (a path
    ``simulate`` reads: an ``.npz`` with x and y, or an image folder; ``layout`` as there),
    or on ``examples`` seeded random inputs. A model the runtime cannot run is reported as
    not measured (the file is still written: the runtime's reach is not Core ML's)."""
    from .runtime import load
    from .runtime.simulate import evaluate, load_dataset

    try:
        before, after = load(original), load(compressed)
        if val is not None:
            data = load_dataset(val, before, layout)
            name = before.description.input[0].name
            inputs = {name: data[name]}
        else:
            inputs = random_inputs(before.description, examples, seed)
        outputs_before = before.predict_batched(inputs)
        outputs_after = after.predict_batched(inputs)
        effect = _compare(outputs_before, outputs_after, _classifies(before))
        effect["examples"] = int(len(next(iter(inputs.values()))))
        effect["data"] = "validation examples" if val is not None else "random examples"
        if val is not None:
            effect["loss_before"], effect["accuracy_before"] = evaluate(before, data)
            effect["loss_after"], effect["accuracy_after"] = evaluate(after, data)
    except ConfigError:
        raise  # the user's validation data is unusable: say so
    except UpdatableCoreMLError as exc:
        result.effect = {"not_measured": f"the reference runtime could not run it ({exc})"}
        return
    except Exception as exc:  # a runtime bug must not cost the user the file: report it
        result.effect = {
            "not_measured": f"the reference runtime failed ({type(exc).__name__}: {exc})"
        }
        return
    result.effect = effect


def _classifies(model) -> bool:
    """Whether the model trains with cross-entropy, so its first output holds class
    probabilities and top-1 agreement means something (not for a regressor's values)."""
    losses = model.trainable().network.updateParams.lossLayers
    return bool(losses) and losses[0].WhichOneof("LossLayerType") == (
        "categoricalCrossEntropyLossLayer"
    )


def random_inputs(description, count: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded examples for every input: pixels in [0, 255] for images, standard normal
    values for MultiArrays (of the declared shape)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    found: dict[str, np.ndarray] = {}
    for feature in description.input:
        kind = feature.type.WhichOneof("Type")
        if kind == "imageType":
            image = feature.type.imageType
            gray = image.colorSpace == type(image).ColorSpace.GRAYSCALE
            shape: tuple[int, ...] = (1 if gray else 3, int(image.height), int(image.width))
            found[feature.name] = rng.uniform(0, 255, (count, *shape)).astype(np.float32)
        elif kind == "multiArrayType":
            shape = tuple(int(d) for d in feature.type.multiArrayType.shape)
            found[feature.name] = rng.standard_normal((count, *shape)).astype(np.float32)
    return found


def _compare(
    before: Mapping[str, Any], after: Mapping[str, Any], classifies: bool
) -> dict[str, Any]:
    """Largest difference over the numeric outputs; for a model that classifies, top-1
    agreement of its first numeric output (the class probabilities; None otherwise)."""
    import numpy as np

    worst, agreement = 0.0, None
    for name, value in before.items():
        a = _numeric(value)
        if a is None:
            continue
        b = _numeric(after[name])
        assert b is not None
        worst = max(worst, float(np.max(np.abs(a - b))) if a.size else 0.0)
        if classifies and agreement is None:
            rows_a, rows_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
            agreement = float(np.mean(rows_a.argmax(1) == rows_b.argmax(1)))
    return {"max_output_difference": worst, "top1_agreement": agreement}


def _numeric(value: Any) -> np.ndarray | None:
    """An output as a float array: arrays as they are, a classifier's per-example
    ``{label: probability}`` dicts as rows in label order; labels (strings) are not."""
    import numpy as np

    if isinstance(value, list) and value and isinstance(value[0], dict):
        return np.asarray([[row[k] for k in sorted(row, key=str)] for row in value], np.float64)
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        return None
    return array.astype(np.float64)
