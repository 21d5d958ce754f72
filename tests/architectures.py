"""Coverage harness: real architectures through our own frontends, end to end.

For each Keras application (``weights=None``) and torchvision classifier (random weights) in
issue 14's lists: a frozen backbone with random batch-norm statistics, a 5-class trainable
head, 96x96 input where the architecture allows. Each case is taken through the four steps a
user's model goes through, and the first one that fails is recorded with its reason:

1. ``export``: one network by our frontend (no coremltools fallback); when that is refused,
   a pipeline (``pipeline=True``, ``backbone="auto"``), so the table says what a user gets;
2. ``validate``: our validator finds no error;
3. ``forward``: the exported file run by our runtime predicts the source's class
   probabilities (max abs difference <= 1e-4);
4. ``update``: two SGD mini-batches of the head in our runtime (MLUpdateTask emulation,
   shuffle off) change its weights as the source framework's optimizer does (max difference
   of the steps, relative to the largest source step, <= 1e-4).

The head starts with weights scaled to the backbone's features so the probabilities are far
from one-hot: a saturated softmax would make both parities pass vacuously. Used by
``tests/test_architectures.py`` and ``tools/architectures.py`` (which prints the table and
writes docs/architectures.md).
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

TOLERANCE = 1e-4
CLASSES = 5
LABELS = [f"c{i}" for i in range(CLASSES)]
EXAMPLES, BATCH = 4, 2
#: The first step of the head's weights, as a fraction of its largest weight: the learning
#: rate is chosen per case from the source framework's gradient on the first mini-batch
#: (``Source.choose_learning_rate``). A fixed rate let the steps of heads over small features
#: fall to a few fp32 spacings of the weights they change, and then rounding alone decides
#: the comparison: torchvision mobilenet_v3_small at rate 0.1 (head weights up to 8.6, steps
#: up to 1.8e-3, fp32 spacing at 8.6 is 9.5e-7) had torch's own fp32 step 2.5e-4 away from
#: torch's fp64 step, while our runtime in fp64 matched torch in fp64 to 1.3e-7 (alexnet:
#: 1.2e-4 and 2.0e-8).
STEP_FRACTION = 1e-2
#: The head's logits have about this standard deviation: probabilities far from one-hot
#: (within a factor of about 2 of uniform), with head weights small enough beside the steps
#: that fp32 resolves them when the rate is capped (below). At 1.0, Keras VGG16 (features
#: up to 0.0125, head weights up to 55, rate capped at 1) differed from Keras by single fp32
#: spacings of its weights, 1.1e-4 of the step.
LOGIT_SCALE = 0.25
#: Our exports take learning rates in [0, 1] (updatable_coreml/training.py), so the rate is
#: capped there.
MAX_LEARNING_RATE = 1.0
STAGES = ("export", "validate", "forward", "update")


@dataclass
class Case:
    """One architecture: ``build()`` gives the source model and the head's name."""

    name: str
    framework: str  # "keras" | "torch"
    build: Callable[[], tuple[Any, str]]
    size: int = 96  # input height and width


@dataclass
class Result:
    """What happened to one case: ``failed`` is the first stage that failed ("" = none)."""

    name: str
    framework: str
    size: int
    mode: str = ""  # "single network" | "pipeline (<who made the backbone>)" | ""
    failed: str = ""
    reason: str = ""
    single_refusal: str = ""  # why one network was refused, when a pipeline was written
    megabytes: float = 0.0
    parameters: int = 0
    forward: float | None = None
    update: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failed and self.mode == "single network"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# -- Keras ----------------------------------------------------------------------------------


def _keras_batchnorm_statistics(model, rng) -> None:
    """Fresh batch norms are identities; random statistics make folding matter."""
    import keras

    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            values = {
                "gamma": rng.uniform(0.8, 1.2, c),
                "beta": rng.normal(0, 0.1, c),
                "moving_mean": rng.normal(0, 0.1, c),
                "moving_variance": rng.uniform(0.8, 1.2, c),
            }
            layer.set_weights([values[w.name] for w in layer.weights])


def keras_case(name: str, factory: str, size: int = 96, **kwargs) -> Case:
    def build():
        import keras

        keras.utils.set_random_seed(0)
        base = getattr(keras.applications, factory)(
            weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3), **kwargs
        )
        _keras_batchnorm_statistics(base, np.random.default_rng(0))
        base.trainable = False
        inputs = keras.Input((size, size, 3))
        head = keras.layers.Dense(CLASSES, activation="softmax", name="head")
        model = keras.Model(inputs, head(base(inputs, training=False)))
        model.compile(
            loss="sparse_categorical_crossentropy",
            optimizer=keras.optimizers.SGD(0.1),  # the rate is set by Source.scale_head
            run_eagerly=True,
        )
        return model, "head"

    return Case(name, "keras", build, size)


KERAS_CASES = [
    keras_case("MobileNet", "MobileNet"),
    keras_case("MobileNetV2", "MobileNetV2"),
    keras_case("MobileNetV3Small", "MobileNetV3Small"),
    keras_case("MobileNetV3Large", "MobileNetV3Large"),
    keras_case("EfficientNetB0", "EfficientNetB0"),
    keras_case("EfficientNetV2B0", "EfficientNetV2B0"),
    keras_case("DenseNet121", "DenseNet121"),
    keras_case("NASNetMobile", "NASNetMobile"),
    keras_case("ResNet50", "ResNet50"),
    keras_case("ResNet50V2", "ResNet50V2"),
    keras_case("InceptionV3", "InceptionV3"),
    keras_case("Xception", "Xception"),
    keras_case("ConvNeXtTiny", "ConvNeXtTiny"),
    keras_case("VGG16", "VGG16"),
]


# -- torchvision ----------------------------------------------------------------------------


def _torch_randomize_batchnorm(model, generator) -> None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                module.running_var.copy_(0.8 + 0.4 * torch.rand(c, generator=generator))
                if module.affine:
                    module.weight.copy_(0.8 + 0.4 * torch.rand(c, generator=generator))
                    module.bias.copy_(torch.randn(c, generator=generator) * 0.1)


def torch_case(name: str, size: int = 96, **kwargs) -> Case:
    def build():
        import torch

        from torchvision_models import torchvision_models

        # One thread: on a loaded 2-core machine torch's second thread spins and a forward
        # pass takes 30x longer.
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = getattr(torchvision_models(), name)(num_classes=CLASSES, **kwargs).eval()
        _torch_randomize_batchnorm(model, torch.Generator().manual_seed(0))
        head = [
            n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
        ][-1]
        for parameter_name, parameter in model.named_parameters():
            parameter.requires_grad_(parameter_name.startswith(head + "."))
        return model, head

    return Case(name, "torch", build, size)


TORCH_CASES = [
    torch_case("resnet18"),
    torch_case("mobilenet_v2"),
    torch_case("mobilenet_v3_small"),
    torch_case("efficientnet_b0"),
    torch_case("shufflenet_v2_x0_5"),
    torch_case("squeezenet1_1"),
    torch_case("densenet121"),
    torch_case("googlenet", aux_logits=False, init_weights=True),
    torch_case("mnasnet0_5"),
    torch_case("regnet_x_400mf"),
    torch_case("convnext_tiny"),
    torch_case("alexnet"),
    torch_case("vgg11"),
    torch_case("vit_b_16", image_size=96),
]

CASES = {f"{case.framework}:{case.name}": case for case in KERAS_CASES + TORCH_CASES}


# -- the source framework's side -------------------------------------------------------------


class Source:
    """The source model behind one interface: probabilities, head features and weights, and
    a training step."""

    def __init__(self, framework: str, model: Any, head: str) -> None:
        self.framework, self.model, self.head = framework, model, head
        self.learning_rate = 0.1  # until scale_head sets it from the features

    def head_module(self):
        if self.framework == "keras":
            return self.model.get_layer(self.head)
        return dict(self.model.named_modules())[self.head]

    def parameters(self) -> int:
        if self.framework == "keras":
            return int(self.model.count_params())
        return sum(p.numel() for p in self.model.parameters())

    def features(self, x: np.ndarray) -> np.ndarray:
        """What the head reads, for scaling its initial weights."""
        if self.framework == "keras":
            import keras

            layer = self.head_module()
            return keras.ops.convert_to_numpy(keras.Model(self.model.inputs, layer.input)(x))
        import torch

        seen = []
        handle = self.head_module().register_forward_hook(lambda m, i, o: seen.append(i[0]))
        with torch.no_grad():
            self.model(torch.from_numpy(x))
        handle.remove()
        return seen[0].numpy()

    def scale_head(self, x: np.ndarray, rng) -> None:
        """Head weights drawn so the logits have a standard deviation of ``LOGIT_SCALE``."""
        features = self.features(x)
        channels = features.shape[-1] if self.framework == "keras" else features.shape[1]
        scale = LOGIT_SCALE / (float(np.sqrt(np.mean(features**2))) * np.sqrt(channels) + 1e-12)
        if self.framework == "keras":
            layer = self.head_module()
            kernel, bias = layer.get_weights()
            kernel = rng.normal(0, scale, kernel.shape).astype(np.float32)
            layer.set_weights([kernel, np.zeros_like(bias)])
        else:
            import torch

            module = self.head_module()
            kernel = rng.normal(0, scale, tuple(module.weight.shape)).astype(np.float32)
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(kernel))
                module.bias.zero_()

    def choose_learning_rate(self, x: np.ndarray, y: np.ndarray) -> None:
        """The rate at which the first mini-batch moves the head's largest-moving weight by
        ``STEP_FRACTION`` of its largest weight (at most ``MAX_LEARNING_RATE``): a step that
        fp32 resolves beside the weights it changes."""
        kernel, gradient = self._head_kernel_gradient(x[:BATCH], y[:BATCH])
        wanted = (
            STEP_FRACTION * float(np.abs(kernel).max()) / max(float(np.abs(gradient).max()), 1e-30)
        )
        self.learning_rate = min(wanted, MAX_LEARNING_RATE)
        if self.framework == "keras":
            self.model.optimizer.learning_rate.assign(self.learning_rate)

    def _head_kernel_gradient(self, x: np.ndarray, y: np.ndarray):
        """The head's kernel and the gradient of the mean cross-entropy on ``x`` against it,
        computed by the source framework (no step taken)."""
        if self.framework == "keras":
            import keras
            import tensorflow as tf

            layer = self.head_module()
            with tf.GradientTape() as tape:
                probabilities = self.model(x, training=False)
                loss = keras.ops.mean(
                    keras.losses.sparse_categorical_crossentropy(y, probabilities)
                )
            gradient = tape.gradient(loss, layer.kernel)
            return keras.ops.convert_to_numpy(layer.kernel), keras.ops.convert_to_numpy(gradient)
        import torch

        module = self.head_module()
        module.weight.grad = None
        logits = self.model(torch.from_numpy(x))
        torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).backward()
        gradient = module.weight.grad.detach().numpy().copy()
        self.model.zero_grad(set_to_none=True)
        return module.weight.detach().numpy(), gradient

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        if self.framework == "keras":
            import keras

            return keras.ops.convert_to_numpy(self.model(x, training=False))
        import torch

        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(x)), 1).numpy()

    def head_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Weight and bias in Core ML's layout (out, in[, kh, kw]), flat."""
        if self.framework == "keras":
            kernel, bias = self.head_module().get_weights()
            return kernel.T.ravel(), bias.ravel()
        module = self.head_module()
        return (
            module.weight.detach().numpy().ravel().copy(),
            module.bias.detach().numpy().ravel().copy(),
        )

    def train(self, x: np.ndarray, y: np.ndarray) -> None:
        """SGD over the mini-batches in order, as MLUpdateTask with shuffle off."""
        if self.framework == "keras":
            import keras

            # Core ML has no dropout (the export removes it): train Keras without it too, as
            # torch trains here in eval mode. A nested model called with training=False still
            # drops out under train_on_batch (EfficientNet's blocks).
            for layer in self.model._flatten_layers():
                if isinstance(layer, keras.layers.Dropout):
                    layer.rate = 0.0
            for start in range(0, len(x), BATCH):
                self.model.train_on_batch(x[start : start + BATCH], y[start : start + BATCH])
            return
        import torch

        optimizer = self.optimizer()
        for start in range(0, len(x), BATCH):
            optimizer.zero_grad()
            logits = self.model(torch.from_numpy(x[start : start + BATCH]))
            torch.nn.functional.cross_entropy(
                logits, torch.from_numpy(y[start : start + BATCH])
            ).backward()
            optimizer.step()

    def optimizer(self):
        import torch

        return torch.optim.SGD(self.head_module().parameters(), lr=self.learning_rate)

    def export(self, x: np.ndarray, path: Path, pipeline: bool):
        options = dict(
            class_labels=LABELS, batch_size=BATCH, epochs=1, shuffle=False, pipeline=pipeline
        )
        if self.framework == "keras":
            from updatable_coreml.exporters.keras import export_keras

            return export_keras(self.model, path, **options)
        import torch

        from updatable_coreml.exporters.torch import export_torch

        return export_torch(
            self.model,
            torch.from_numpy(x[:1]),
            path,
            loss=torch.nn.CrossEntropyLoss(),
            optimizer=self.optimizer(),
            **options,
        )

    def channel_first(self, x: np.ndarray) -> np.ndarray:
        """The exported model's input layout (our exports are channel-first)."""
        return x.transpose(0, 3, 1, 2) if self.framework == "keras" else x


# -- the measurement -------------------------------------------------------------------------


def _inputs(framework: str, size: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    shape = (EXAMPLES, size, size, 3) if framework == "keras" else (EXAMPLES, 3, size, size)
    return rng.uniform(-1, 1, shape).astype(np.float32)


def _as_declared(runtime, x: np.ndarray) -> np.ndarray:
    """``x`` in the input shape the model declares: a network with an iOS 13 layer (GELU)
    declares an image (1, C, H, W) (backend: the exact-rank mapping)."""
    declared = tuple(runtime.description.input[0].type.multiArrayType.shape)
    return x.reshape((len(x), *declared)) if declared else x


def _runtime_probabilities(runtime, x: np.ndarray) -> np.ndarray:
    description = runtime.description
    out = runtime.predict({description.input[0].name: x})
    rows = out[description.predictedProbabilitiesName]
    return np.array([[row[label] for label in LABELS] for row in rows])


def _runtime_head(model, head: str) -> tuple[np.ndarray, np.ndarray]:
    network = model.trainable()
    index = next(i for i, layer in enumerate(network.layers) if layer.name == head)
    get = network.weight_getter(index)
    return np.asarray(get("weights")).ravel(), np.asarray(get("bias")).ravel()


def _export(source: Source, x: np.ndarray, path: Path, result: Result, fallback: bool):
    """One network; with ``fallback``, a pipeline when our frontend refuses one (what a user
    would do next)."""
    from updatable_coreml.errors import UpdatableCoreMLError

    try:
        report = source.export(x, path, pipeline=False)
        result.mode = "single network"
        return report
    except UpdatableCoreMLError as exc:
        if not fallback:
            raise
        result.single_refusal = _first_line(exc)
    report = source.export(x, path, pipeline=True)
    result.mode = f"pipeline ({report.backbone} backbone)"
    return report


def measure(case: Case, fallback: bool = True, workdir: Path | None = None) -> Result:
    """Run one case through the four stages; never raises (the failure is in the result).
    ``fallback=False`` stops at a refused single network instead of trying a pipeline."""
    result = Result(case.name, case.framework, case.size)
    started = time.perf_counter()
    stage = "build"
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        try:
            source = Source(case.framework, *case.build())
            result.parameters = source.parameters()
            x = _inputs(case.framework, case.size)
            source.scale_head(x, np.random.default_rng(2))
            y = np.arange(EXAMPLES) % CLASSES
            source.choose_learning_rate(x, y)
            want = source.probabilities(x)
            stage = "export"
            path = Path(folder) / f"{case.name}.mlmodel"
            _export(source, x, path, result, fallback)
            result.megabytes = path.stat().st_size / 1e6
            stage = "validate"
            _validate(path)
            stage = "forward"
            from updatable_coreml.runtime import load

            runtime = load(path)
            x_model = _as_declared(runtime, source.channel_first(x))
            got = _runtime_probabilities(runtime, x_model)
            result.forward = float(np.abs(got - want).max())
            if result.forward > TOLERANCE:
                raise AssertionError(
                    f"forward max abs difference {result.forward:.2e} > {TOLERANCE}"
                )
            stage = "update"
            before = source.head_weights()
            trained = runtime.update(
                {
                    runtime.description.input[0].name: x_model,
                    "classLabel": np.asarray(LABELS)[y],
                }
            ).model
            source.train(x, y)
            result.update = _relative_step(
                before, _runtime_head(trained, source.head), source.head_weights()
            )
            if result.update > TOLERANCE:
                raise AssertionError(
                    f"update relative difference {result.update:.2e} > {TOLERANCE}"
                )
        except Exception as exc:
            result.failed, result.reason = stage, _first_line(exc)
    result.seconds = time.perf_counter() - started
    gc.collect()
    return result


def _validate(path: Path) -> None:
    from updatable_coreml.validator import validate

    errors = [f for f in validate(path) if f.severity == "error"]
    if errors:
        raise AssertionError(str(errors[0]))


def _relative_step(before, runtime_after, source_after) -> float:
    """Max difference of the two weight steps, relative to the largest source step."""
    worst = 0.0
    for start, got, want in zip(before, runtime_after, source_after, strict=False):
        step_source = want - start
        denominator = max(float(np.abs(step_source).max()), 1e-12)
        worst = max(worst, float(np.abs((got - start) - step_source).max()) / denominator)
    return worst


# -- the table -------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.1e}"


def table(results: list[Result]) -> str:
    """A Markdown table, one row per architecture."""
    lines = [
        "| Framework | Architecture | Input | Parameters | Exported as | Size (MB) | "
        "Forward max abs diff | Update rel. diff | Result |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if r.passed:
            outcome = "passes"
        elif not r.failed:
            outcome = f"passes as a pipeline; one network refused: {r.single_refusal}"
        else:
            outcome = f"fails at {r.failed}: {r.reason}"
            if r.single_refusal:
                outcome += f" (one network refused: {r.single_refusal})"
        outcome = outcome.replace("|", "\\|")
        size = f"{r.megabytes:.1f}" if r.megabytes else ""
        lines.append(
            f"| {r.framework} | {r.name} | {r.size}x{r.size} | {r.parameters / 1e6:.1f}M | "
            f"{r.mode or '-'} | {size} | {_number(r.forward)} | {_number(r.update)} | "
            f"{outcome} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``python tests/architectures.py [--no-fallback] KEY...``: one JSON line per case (the
    suite measures in this child process, so the models' memory never reaches pytest's)."""
    import dataclasses
    import json
    import warnings

    warnings.filterwarnings("ignore")
    fallback = "--no-fallback" not in argv
    for key in [arg for arg in argv if not arg.startswith("--")]:
        result = measure(CASES[key], fallback=fallback)
        print(json.dumps({"key": key, **dataclasses.asdict(result)}), flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
