"""Simulate on-device personalization: train an updatable model on a dataset, epoch by epoch.

This is what ``updatable-coreml simulate`` runs. Data comes as a folder with one subfolder of
images per label (the seed app's layout) or an ``.npz`` with ``x`` (inputs) and ``y`` (labels
or targets). Folder images are resized to the model's input size (bilinear, aspect ratio not
kept) and converted to its color space. Each epoch gives a row: the training loss Core ML
reports (see ``assumptions.epoch_loss``) and, with validation data, the validation loss (mean
over the examples) and accuracy (classifiers).

``assumptions`` picks how Core ML's unknown formulas are emulated (``runtime.assumptions``): a
preset name, an ``Assumptions``, or ``"all"``: train once per plausible combination of the
unknowns (momentum form, Adam's eps placement and bias correction, batch reduction, the MSE
formula) and report the spread of the final loss and accuracy (``SimulationResult.spread``), so
a user sees whether the unknowns matter for their model.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelFileError
from ..spec_io import atomic_write_bytes, check_output_path, save_spec
from . import backward as bw
from . import features as feat
from .assumptions import ALL, DEFAULT, PRESETS, Assumptions, relevant_unknowns, resolve, variants
from .model import Model, NeuralNetworkModel, PipelineModel, load
from .update import (
    ProgressEvent,
    UpdateResult,
    class_indices,
    initial_values,
    read_training_setup,
    regression_targets,
    training_batch,
)

PathLike = str | os.PathLike
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".heic"}
EVAL_CHUNK = 256
#: What ``assumptions`` (the CLI's ``--assumptions``) accepts besides an ``Assumptions``.
ASSUMPTION_CHOICES = (*PRESETS, ALL)
#: Images with more pixels are refused before they are decoded (a damaged or hostile file).
MAX_IMAGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class EpochRow:
    """One line of the training table (``epoch`` counts from 1)."""

    epoch: int
    train_loss: float
    val_loss: float | None = None
    val_accuracy: float | None = None


@dataclass(frozen=True)
class VariantOutcome:
    """How one combination of assumptions ended: the last epoch's training loss (as Core ML
    reports it), and the mean loss and accuracy of the trained model on the evaluation data."""

    assumptions: Assumptions
    label: str
    train_loss: float
    loss: float
    accuracy: float | None = None


@dataclass
class AssumptionSpread:
    """Outcomes of every plausible combination of Core ML's unknown formulas (``fields``);
    the first outcome is the default's."""

    fields: tuple
    evaluated_on: str  # "validation" or "training"
    outcomes: list

    def span(self, name: str) -> tuple[float, float] | None:
        values = [getattr(o, name) for o in self.outcomes if getattr(o, name) is not None]
        return (min(values), max(values)) if values else None

    def summary_lines(self) -> list[str]:
        lines = [
            f"unknown Core ML formulas ({', '.join(self.fields)}): {len(self.outcomes)} "
            f"combinations, loss and accuracy on the {self.evaluated_on} data"
        ]
        for index, outcome in enumerate(self.outcomes):
            accuracy = "" if outcome.accuracy is None else f"  accuracy {outcome.accuracy:.1%}"
            default = "" if index else "  (default)"
            lines.append(
                f"  {outcome.label}: final training loss {outcome.train_loss:.6g}  "
                f"loss {outcome.loss:.6g}{accuracy}{default}"
            )
        parts = []
        for name, title in (("train_loss", "final training loss"), ("loss", "loss")):
            bounds = self.span(name)
            if bounds is not None:
                parts.append(
                    f"{title} {bounds[0]:.6g}..{bounds[1]:.6g} (spread {bounds[1] - bounds[0]:.3g})"
                )
        hits = self.span("accuracy")
        if hits is not None:
            parts.append(
                f"accuracy {hits[0]:.1%}..{hits[1]:.1%} (spread "
                f"{(hits[1] - hits[0]) * 100:.1f} points)"
            )
        lines.append("spread: " + "; ".join(parts))
        return lines

    def to_dict(self) -> dict:
        spans = {name: self.span(name) for name in ("train_loss", "loss", "accuracy")}
        return {
            "fields": list(self.fields),
            "evaluated_on": self.evaluated_on,
            "outcomes": [
                {
                    "assumptions": {name: getattr(o.assumptions, name) for name in self.fields},
                    "train_loss": o.train_loss,
                    "loss": o.loss,
                    "accuracy": o.accuracy,
                }
                for o in self.outcomes
            ],
            **{
                name: list(bounds) if bounds is not None else None for name, bounds in spans.items()
            },
        }


@dataclass
class SimulationResult:
    rows: list[EpochRow]
    update: UpdateResult
    train_examples: int
    val_examples: int = 0
    plot: Path | None = None
    out: Path | None = None
    parameters: dict = field(default_factory=dict)
    #: ``assumptions="all"``: the outcome of every combination of the unknowns
    spread: AssumptionSpread | None = None

    @property
    def model(self) -> Model:
        return self.update.model

    @property
    def warnings(self) -> list[str]:
        """What Core ML would silently ignore or accept in the overrides (each names its key)."""
        return list(self.update.warnings)

    def report_lines(self) -> list[str]:
        """What to print after the epoch rows: the warnings, then the spread of the unknowns
        (``assumptions="all"``)."""
        lines = [f"warning: {warning}" for warning in self.warnings]
        return lines + (self.spread.summary_lines() if self.spread is not None else [])


# -- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataLayout:
    """Which features the dataset fills: the prediction input and the training target."""

    input: Any  # the FeatureDescription of the (single) prediction input
    target: str


def data_layout(model: Model) -> DataLayout:
    description = model.description
    inputs = {d.name for d in description.input}
    training = list(description.trainingInput)
    targets = [d.name for d in training if d.name not in inputs]
    used = [d for d in training if d.name in inputs] or list(description.input)
    if len(used) != 1 or len(targets) != 1:
        raise ConfigError(
            "simulate needs a model trained from one input and one target; this one "
            f"takes {', '.join(d.name for d in training) or 'no training inputs'}"
        )
    return DataLayout(used[0], targets[0])


def _label_value(name: str, string_labels: bool) -> Any:
    """A folder name as a label of the model's type (Int64 labels and class indices parse)."""
    if string_labels:
        return name
    try:
        return int(name)
    except ValueError:
        raise ConfigError(
            f"folder {name!r} is not a label of this model (it has integer labels)"
        ) from None


def _class_labels(model: Model) -> list | None:
    """The labels a network classifier can learn; None when any label goes (k-NN, regressor)."""
    last = model.models[-1] if isinstance(model, PipelineModel) else model
    if not isinstance(last, NeuralNetworkModel) or not last.is_classifier:
        return None
    return last.class_labels()


def _string_labels(model: Model, layout: DataLayout) -> bool:
    target = next(d for d in model.description.trainingInput if d.name == layout.target)
    return target.type.WhichOneof("Type") == "stringType"


def read_image(path: Path, image_type):
    from PIL import Image  # lazily: only folder datasets need Pillow

    gray = image_type.colorSpace in feat.GRAY_SPACES
    try:
        with Image.open(path) as picture:
            if picture.width * picture.height > MAX_IMAGE_PIXELS:
                raise ConfigError(
                    f"{path}: the image is {picture.width}x{picture.height} pixels, "
                    f"more than the {MAX_IMAGE_PIXELS:,} simulate reads; shrink it"
                )
            picture = picture.convert("L" if gray else "RGB")
            size = (int(image_type.width), int(image_type.height))
            if picture.size != size:
                # Image.Resampling only exists from Pillow 9.1 (we accept 9.0); the stubs list
                # only the enum.
                picture = picture.resize(size, Image.BILINEAR)  # type: ignore[attr-defined]
            return np.asarray(picture)
    except ConfigError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ConfigError(
            f"{path}: cannot read the image ({exc}); replace or remove the file"
        ) from None


def load_folder(
    folder: Path, layout: DataLayout, labels: list | None, string_labels: bool
) -> tuple[np.ndarray, list]:
    if feat.feature_kind(layout.input) != "imageType":
        raise ConfigError(
            f"{folder}: an image folder needs a model with an image input; "
            f"{layout.input.name!r} is not one (use an .npz with x and y)"
        )
    image_type = layout.input.type.imageType
    images: list = []
    targets: list = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            continue
        label = _label_value(sub.name, string_labels)
        if labels is not None and label not in labels:
            shown = ", ".join(map(str, labels[:8])) + (", ..." if len(labels) > 8 else "")
            raise ConfigError(
                f"{folder}: folder {sub.name!r} is not one of the model's class labels ({shown})"
            )
        images.extend(read_image(path, image_type) for path in files)
        targets.extend([label] * len(files))
    if not images:
        raise ConfigError(f"{folder}: no images found; expected one subfolder of images per label")
    return np.stack(images), targets


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data or "y" not in data:
                raise ConfigError(
                    f"{path}: the .npz must hold arrays 'x' (inputs) and 'y' "
                    f"(labels or targets); it has {', '.join(data.files) or 'none'}"
                )
            x, y = data["x"], data["y"]
    except ConfigError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"{path}: cannot read the .npz ({exc}); write it with numpy.savez("
            "path, x=..., y=...) of numeric or string arrays"
        ) from None
    if len(x) == 0 or len(x) != len(y):
        raise ConfigError(
            f"{path}: 'x' and 'y' must hold the same, non-zero number of examples "
            f"(got {len(x)} and {len(y)})"
        )
    return x, y


#: Array layouts an ``.npz``'s ``x`` may come in: ``nchw`` is what every exported model takes;
#: ``nhwc`` (Keras, TensorFlow, PIL) is converted with ``features.to_channel_first``.
ARRAY_LAYOUTS = ("nchw", "nhwc")


def load_dataset(source: PathLike, model: Model, layout: str = "nchw") -> dict:
    """Training examples (input name -> batch, target name -> labels) from a folder or .npz.

    ``layout`` says how an ``.npz``'s ``x`` is ordered. It is never guessed: the user states
    ``nhwc`` for channel-last arrays, and a wrong shape is refused later by the input checks.
    Image folders are decoded straight into the model's layout, so ``layout`` must stay
    ``nchw`` for them.
    """
    if layout not in ARRAY_LAYOUTS:
        raise ConfigError(f"layout {layout!r}: choose one of {', '.join(ARRAY_LAYOUTS)}")
    path = Path(source)
    io_layout = data_layout(model)
    x: Any
    y: Any
    if path.is_dir():
        if layout != "nchw":
            raise ConfigError(
                f"{path}: --layout {layout} (layout=) applies to .npz arrays; image folders "
                "are read in the model's own layout, so drop the option"
            )
        x, y = load_folder(path, io_layout, _class_labels(model), _string_labels(model, io_layout))
    elif path.suffix.lower() == ".npz" and path.is_file():
        x, y = load_npz(path)
        if layout == "nhwc":
            x = feat.to_channel_first(x)
    elif not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    else:
        raise ConfigError(f"{path}: training data must be a folder of label subfolders or an .npz")
    return {io_layout.input.name: x, io_layout.target: y}


# -- evaluation --------------------------------------------------------------------------------


def evaluate(model: Model, examples: Mapping) -> tuple[float, float | None]:
    """Mean loss over ``examples`` (the model's own loss) and, for cross-entropy, accuracy."""
    batch, count = training_batch(model, examples)
    features = model.training_features(batch)
    network: NeuralNetworkModel = model.trainable()
    setup = read_training_setup(network, DEFAULT)
    cce = setup.loss == "cce"
    targets = (class_indices if cce else regression_targets)(network, setup, features)
    blobs = network.input_blobs(features)
    total_loss, correct = 0.0, 0
    for start in range(0, count, EVAL_CHUNK):
        rows = slice(start, start + EVAL_CHUNK)
        chunk = network.run({k: v[rows] for k, v in blobs.items()}, range(len(network.layers)))
        prediction = chunk[setup.loss_input]
        if cce:
            loss, _ = bw.cross_entropy(prediction, targets[rows], "sum")
            predicted = prediction.reshape(len(prediction), -1).argmax(1)
            correct += int(np.sum(predicted == targets[rows]))
        else:
            loss, _ = bw.mean_squared_error(prediction, targets[rows], DEFAULT.mse_reduction, "sum")
        total_loss += loss
    return total_loss / count, (correct / count if cce else None)


# -- the run -----------------------------------------------------------------------------------


def write_plot(rows: list[EpochRow], path: PathLike) -> Path:
    """Training (and validation) loss per epoch as a PNG, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    epochs = [row.epoch for row in rows]
    axes.plot(epochs, [row.train_loss for row in rows], marker="o", label="training loss")
    if any(row.val_loss is not None for row in rows):
        val_losses = [np.nan if row.val_loss is None else row.val_loss for row in rows]
        axes.plot(epochs, val_losses, marker="o", label="validation loss")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write_bytes(buffer.getvalue(), path)


def unknowns_for(model: Model, overrides: Mapping[str, Any]) -> tuple[str, ...]:
    """The unknown formulas that can change how ``model`` trains (``assumptions.UNKNOWN``)."""
    try:
        network = model.trainable()
        setup = read_training_setup(network, DEFAULT)
    except (ModelFileError, AttributeError):
        raise ConfigError(
            "assumptions='all' applies to updatable neural networks; this model "
            "has no loss and optimizer whose formulas are unknown (k-NN?)"
        ) from None
    values = initial_values(setup)
    momentum = overrides.get("momentum", values.get("momentum", 0.0))
    return relevant_unknowns(setup.optimizer, setup.loss, bool(momentum))


def assumption_spread(
    model: Model,
    examples: Mapping,
    overrides: Mapping[str, Any],
    evaluation: Mapping,
    evaluated_on: str,
    first: tuple[UpdateResult, Assumptions] | None = None,
) -> AssumptionSpread:
    """Train ``model`` once per combination of the unknowns that matter for it and evaluate
    each result on ``evaluation``; ``first`` reuses an already finished default run."""
    fields = unknowns_for(model, overrides)
    base = first[1] if first is not None else DEFAULT
    outcomes = []
    for candidate in variants(base, fields):
        if first is not None and candidate == first[1]:
            update = first[0]
        else:
            update = model.update(examples, parameters=overrides, assumptions=candidate)
        loss, accuracy = evaluate(update.model, evaluation)
        outcomes.append(
            VariantOutcome(
                candidate,
                candidate.describe(fields),
                update.epoch_losses[-1] if update.epoch_losses else float("nan"),
                loss,
                accuracy,
            )
        )
    return AssumptionSpread(fields, evaluated_on, outcomes)


def simulate(
    model_path: PathLike,
    train: PathLike,
    *,
    val: PathLike | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    shuffle: bool | None = None,
    plot: PathLike | None = None,
    out: PathLike | None = None,
    progress: Callable[[ProgressEvent], Any] | None = None,
    on_epoch: Callable[[EpochRow], Any] | None = None,
    assumptions: None | str | Assumptions = None,
    layout: str = "nchw",
) -> SimulationResult:
    """Train the model at ``model_path`` on ``train`` as MLUpdateTask would.

    Overrides are checked as Core ML checks them (``ConfigError`` where it fails the task;
    ``result.warnings`` where it silently ignores or accepts). ``progress`` receives every
    task event; ``on_epoch`` each finished row (validation included). ``assumptions``: a preset
    name, an ``Assumptions``, or ``"all"`` (rows, plot and output come from the default; the
    spread of every combination of the unknowns is in ``result.spread``). ``layout``:
    ``"nhwc"`` when an ``.npz``'s ``x`` is channel-last (converted, never guessed).
    """
    every = assumptions == ALL
    chosen = DEFAULT if every else resolve(assumptions)
    model = load(model_path)
    if not model.spec.isUpdatable:
        raise ModelFileError(
            f"{model_path}: the model is not updatable; export it with updatable "
            "layers first ('updatable-coreml export' or 'make-updatable')"
        )
    if out is not None:  # refuse unwritable outputs before training, not after
        check_output_path(out, not_same_as=model_path)
    if plot is not None:
        check_output_path(plot, not_same_as=model_path)
    examples = load_dataset(train, model, layout)
    validation = load_dataset(val, model, layout) if val is not None else None
    overrides = {
        key: value
        for key, value in (
            ("epochs", epochs),
            ("learningRate", lr),
            ("miniBatchSize", batch_size),
            ("seed", seed),
            ("shuffle", shuffle),
        )
        if value is not None
    }
    if every:
        unknowns_for(model, overrides)  # refuse a k-NN model before training
    rows: list[EpochRow] = []

    def on_event(event: ProgressEvent) -> None:
        if progress is not None:
            progress(event)
        if event.kind != "epoch_end":
            return
        val_loss = val_accuracy = None
        if validation is not None:
            val_loss, val_accuracy = evaluate(event.model, validation)
        assert event.epoch is not None and event.loss is not None  # set on every epoch_end
        rows.append(EpochRow(event.epoch + 1, event.loss, val_loss, val_accuracy))
        if on_epoch is not None:
            on_epoch(rows[-1])

    update = model.update(examples, parameters=overrides, progress=on_event, assumptions=chosen)
    result = SimulationResult(
        rows,
        update,
        len(next(iter(examples.values()))),
        len(next(iter(validation.values()))) if validation else 0,
        parameters=update.parameters,
    )
    if every and not update.cancelled:
        result.spread = assumption_spread(
            model,
            examples,
            overrides,
            validation if validation is not None else examples,
            "validation" if validation is not None else "training",
            first=(update, chosen),
        )
    if plot is not None:
        result.plot = write_plot(rows, plot)
    if out is not None:
        result.out = save_spec(update.model.spec, out, not_same_as=model_path)
    return result
