"""On macOS, real Core ML is the referee for what our runtime can only assume.

Apple documents neither the batch order of MLUpdateTask, nor the epoch loss it reports, nor its
momentum and Adam formulas, nor what its MSE loss value computes (COREML_EVIDENCE.md: "unknown";
runtime/assumptions.py holds our switchable choices). A Mac can measure them:
tests/macos/update_probe.swift runs one MLUpdateTask (CPU only) on a model we write and records
every mini-batch and epoch loss and the updated model's predictions; each test here prints the
measured answer and which of our assumption values reproduce it (run with ``-s``), and fails
when the default assumptions do not. The same file checks predictions against MLModel.predict
and type-checks the generated Swift trainers with ``swiftc -typecheck`` against the macOS SDK.

Core ML runs only on Apple platforms: those tests are skipped elsewhere. The tests that prove
each scenario can tell the candidate forms apart run everywhere, so a Mac run cannot pass
vacuously. On a Mac: ``./dev test tests/test_coreml_macos.py -s``; CI's macOS job sets
``UCML_REQUIRE_SWIFTC=1`` so a missing Swift toolchain fails instead of skipping.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import mlp_regressor, squeezenet_like
from swift_models import FRESH
from updatable_coreml import make_updatable
from updatable_coreml._proto import FeatureTypes_pb2
from updatable_coreml.runtime import assumptions as assumption_module
from updatable_coreml.runtime import load
from updatable_coreml.spec_io import save_spec
from updatable_coreml.swift import generate_swift

HERE = Path(__file__).parent
on_mac = pytest.mark.skipif(sys.platform != "darwin", reason="Core ML runs only on macOS")
pytestmark = [pytest.mark.macos]

TOL = 1e-4  # fp32 tolerance, as for every parity test


# -- the Swift side ------------------------------------------------------------------------------


def _swift_tool(name: str) -> list[str]:
    """``xcrun NAME`` (the active developer directory's toolchain); skip, or fail under CI."""
    if (
        shutil.which("xcrun")
        and subprocess.run(["xcrun", "--find", name], capture_output=True).returncode == 0
    ):
        return ["xcrun", name]
    if os.environ.get("UCML_REQUIRE_SWIFTC"):
        pytest.fail(f"UCML_REQUIRE_SWIFTC is set but `xcrun --find {name}` failed")
    pytest.skip(f"no Swift toolchain ({name}); install the Xcode command line tools")


@pytest.fixture(scope="session")
def probe(tmp_path_factory) -> Path:
    """tests/macos/update_probe.swift compiled once per run."""
    binary = tmp_path_factory.mktemp("probe") / "update_probe"
    result = subprocess.run(
        [
            *_swift_tool("swiftc"),
            "-O",
            str(HERE / "macos" / "update_probe.swift"),
            "-o",
            str(binary),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return binary


@on_mac
def test_generated_trainers_typecheck_against_the_macos_sdk(tmp_path):
    """The golden trainers and freshly generated ones compile against the real CoreML module."""
    sdk = subprocess.run(
        [*_swift_tool("swiftc")[:1], "--sdk", "macosx", "--show-sdk-path"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    sources = sorted((HERE / "golden").glob("*.swift"))
    for _, build in sorted(FRESH.items()):
        path = tmp_path / f"Fresh{len(sources)}.swift"
        path.write_text(generate_swift(build(), class_name=f"Fresh{len(sources)}Trainer"))
        sources.append(path)
    for source in sources:  # one at a time: each file declares its own helpers
        result = subprocess.run(
            [*_swift_tool("swiftc"), "-typecheck", "-sdk", sdk, str(source)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{source.name}:\n{result.stderr}"
    print(f"swiftc -typecheck: {len(sources)} trainers OK against {sdk}")


# -- predictions ---------------------------------------------------------------------------------


@on_mac
@pytest.mark.parametrize(
    "build, layers, loss, compress",
    [
        (squeezenet_like, ["fc"], "cce", None),
        (mlp_regressor, ["out"], "mse", None),
        # frozen weights stored quantized: Core ML and runtime/weights.py must decode alike
        (squeezenet_like, ["fc"], "cce", "int8"),
        (squeezenet_like, ["fc"], "cce", "lut4"),
        (mlp_regressor, ["out"], "mse", "lut4"),
    ],
)
def test_runtime_predicts_like_core_ml(build, layers, loss, compress, tmp_path):
    import coremltools as ct

    path = tmp_path / "model.mlmodel"
    make_updatable(build(), path, layers=layers, loss=loss, compress_frozen=compress)
    ours, theirs = load(path), ct.models.MLModel(str(path))
    description = ours.description.input[0]
    shape = tuple(description.type.multiArrayType.shape)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.normal(0, 1, shape).astype(np.float32)
        expected = theirs.predict({description.name: x})
        got = ours.predict({description.name: x})
        for name, value in expected.items():
            if isinstance(value, dict):
                for label, probability in value.items():
                    assert abs(got[name][label] - probability) <= TOL
            elif isinstance(value, str):
                assert got[name] == value
            else:
                np.testing.assert_allclose(
                    np.asarray(got[name]).reshape(-1), np.asarray(value).reshape(-1), atol=TOL
                )


# -- training scenarios --------------------------------------------------------------------------

N_IN, N_OUT = 3, 2


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One MLUpdateTask: a linear regressor (x -> fc -> y, MSE) and its training set.

    A single updatable innerProduct keeps the model linear, so the predictions on the probes
    (zero and the unit vectors) are exactly its weights and bias after the task.
    """

    count: int = 10
    options: tuple = ()  # keyword arguments of make_updatable, as (name, value) pairs
    learning_rates: tuple = ()  # (after global mini-batch k, new learning rate) via resume

    def spec(self):
        from coremltools.models import datatypes
        from coremltools.models.neural_network import NeuralNetworkBuilder

        rng = np.random.default_rng(1)
        builder = NeuralNetworkBuilder(
            [("x", datatypes.Array(N_IN))], [("y", datatypes.Array(N_OUT))], mode="regressor"
        )
        builder.add_inner_product(
            "fc",
            rng.normal(0, 0.5, (N_OUT, N_IN)).astype(np.float32),
            rng.normal(0, 0.1, N_OUT).astype(np.float32),
            N_IN,
            N_OUT,
            True,
            "x",
            "y",
        )
        spec = make_updatable(builder.spec, layers=["fc"], loss="mse", **dict(self.options))
        # FLOAT32 everywhere (the builder declares DOUBLE): the probe passes float32 arrays, so
        # Core ML converts nothing on the way in.
        description = spec.description
        for feature in [*description.input, *description.output, *description.trainingInput]:
            if feature.type.HasField("multiArrayType"):
                feature.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
        return spec

    def target(self, spec) -> str:
        inputs = {feature.name for feature in spec.description.input}
        return next(f.name for f in spec.description.trainingInput if f.name not in inputs)

    def examples(self, spec) -> list[dict]:
        """Distinct examples with distinct errors, so every mini-batch loss tells its batch."""
        rng = np.random.default_rng(2)
        x = rng.normal(0, 1, (self.count, N_IN)).astype(np.float32)
        y = x @ rng.normal(0, 1, (N_IN, N_OUT)) + rng.normal(0, 0.3, (self.count, N_OUT))
        return [{"x": x[i], self.target(spec): y[i].astype(np.float32)} for i in range(self.count)]

    @staticmethod
    def probes() -> list[np.ndarray]:
        return [np.zeros(N_IN, np.float32)] + list(np.eye(N_IN, dtype=np.float32))


@dataclasses.dataclass
class Run:
    """What one task reported: mini-batch losses per epoch, epoch losses, probe predictions."""

    mini_batch_losses: list
    epoch_losses: list
    after: np.ndarray

    def agrees(self, other: Run) -> bool:
        mine, theirs = self.mini_batch_losses, other.mini_batch_losses
        return (
            [len(e) for e in mine] == [len(e) for e in theirs]
            and np.allclose(np.concatenate(mine), np.concatenate(theirs), rtol=TOL, atol=TOL)
            and np.allclose(self.epoch_losses, other.epoch_losses, rtol=TOL, atol=TOL)
            and np.allclose(self.after, other.after, rtol=TOL, atol=TOL)
        )


def _array(value) -> dict:
    value = np.asarray(value)
    return {"array": {"shape": list(value.shape), "values": value.reshape(-1).tolist()}}


def ask_probe(probe: Path, request: dict, tmp_path: Path) -> dict:
    """Run one MLUpdateTask through tests/macos/update_probe.swift; its answer."""
    (tmp_path / "request.json").write_text(json.dumps(request))
    result = subprocess.run(
        [str(probe), str(tmp_path / "request.json"), str(tmp_path / "answer.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads((tmp_path / "answer.json").read_text())
    assert answer.get("error") is None, answer["error"]
    return answer


def on_core_ml(probe: Path, scenario: Scenario, tmp_path: Path) -> Run:
    spec = scenario.spec()
    model = save_spec(spec, tmp_path / "model.mlmodel")
    request = {
        "model": str(model),
        "output": "y",
        "examples": [{k: _array(v) for k, v in e.items()} for e in scenario.examples(spec)],
        "probes": [{"x": _array(p)} for p in scenario.probes()],
        "learning_rates": [list(pair) for pair in scenario.learning_rates],
    }
    answer = ask_probe(probe, request, tmp_path)
    # Group mini-batches by the epochEnd events that close them (not by metric indices, which
    # Core ML may not report on every event).
    epochs: list[list[float]] = [[]]
    epoch_losses = []
    for event in answer["events"]:
        if event["kind"] == "miniBatchEnd":
            epochs[-1].append(event["loss"])
        elif event["kind"] == "epochEnd":
            epoch_losses.append(event["loss"])
            epochs.append([])
    return Run(epochs[:-1], epoch_losses, np.asarray(answer["after"]))


def on_our_runtime(scenario: Scenario, assumptions) -> Run:
    spec = scenario.spec()
    model = load(spec)
    schedule = dict(scenario.learning_rates)
    done = [0]

    def progress(event):
        if event.kind == "mini_batch_end":
            done[0] += 1
            if done[0] in schedule:
                event.task.resume({"learningRate": schedule[done[0]]})

    result = model.update(scenario.examples(spec), progress=progress, assumptions=assumptions)
    after = [np.asarray(result.model.predict({"x": p})["y"]).reshape(-1) for p in scenario.probes()]
    return Run(
        [list(e) for e in result.mini_batch_losses], list(result.epoch_losses), np.asarray(after)
    )


def candidates(fields: tuple[str, ...]) -> dict[str, object]:
    """Every combination of the allowed values of ``fields`` (those the runtime has), applied to
    the default assumptions, plus the presets of the assumptions module."""
    choices = getattr(assumption_module, "_CHOICES", {})
    present = [f for f in fields if f in choices]
    default = assumption_module.DEFAULT
    found = {}
    for values in itertools.product(*(choices[f] for f in present)):
        changes = dict(zip(present, values, strict=True))
        found[", ".join(f"{k}={v}" for k, v in changes.items()) or "default"] = dataclasses.replace(
            default, **changes
        )
    presets = dict(getattr(assumption_module, "PRESETS", {}))
    presets.update(
        (name, value)
        for name, value in vars(assumption_module).items()
        if isinstance(value, assumption_module.Assumptions) and name != "DEFAULT"
    )
    for name, value in presets.items():
        found[f"preset {name}"] = value
    return found


def settle(measured: Run, scenario: Scenario, fields: tuple[str, ...], question: str) -> None:
    """Print what Core ML did and which assumptions reproduce it; require the default to."""
    matching = [
        name
        for name, a in candidates(fields).items()
        if on_our_runtime(scenario, a).agrees(measured)
    ]
    default_agrees = on_our_runtime(scenario, assumption_module.DEFAULT).agrees(measured)
    print(f"\n[Core ML measured] {question}")
    print(f"  mini-batch losses: {[np.round(e, 6).tolist() for e in measured.mini_batch_losses]}")
    print(f"  epoch losses:      {np.round(measured.epoch_losses, 6).tolist()}")
    print(f"  weights after (probe predictions): {np.round(measured.after, 6).tolist()}")
    print(f"  assumptions that reproduce it: {matching or 'NONE of the modelled forms'}")
    print(f"  default assumptions reproduce it: {default_agrees}")
    assert matching, f"{question}: no modelled assumption reproduces Core ML (values above)"
    assert default_agrees, (
        f"{question}: Core ML behaves as {matching}, not as the default "
        "assumptions; change runtime/assumptions.py (values above)"
    )


ORDER_FIELDS = tuple(
    f for f in getattr(assumption_module, "_CHOICES", {}) if "shuffle" in f or "order" in f
) + ("partial_batch",)
SGD = (("optimizer", "sgd"), ("lr", 0.05), ("batch_size", 4), ("epochs", 3))
SCENARIOS = {
    # 10 examples in batches of 4: three batches per epoch, the last one partial.
    "batch order, seeded": (Scenario(options=SGD + (("shuffle", True), ("seed", 5))), ORDER_FIELDS),
    "batch order, no seed": (Scenario(options=SGD + (("shuffle", True),)), ORDER_FIELDS),
    "partial last batch": (Scenario(options=SGD + (("shuffle", False),)), ("partial_batch",)),
    "epoch loss": (Scenario(options=SGD + (("shuffle", False),)), ("epoch_loss",)),
    "MSE loss value and gradient scale": (
        Scenario(
            count=8,
            options=(
                ("optimizer", "sgd"),
                ("lr", 0.05),
                ("batch_size", 8),
                ("epochs", 1),
                ("shuffle", False),
            ),
        ),
        ("mse_reduction", "batch_reduction"),
    ),
    # The two momentum forms agree while the learning rate is constant: change it mid-task.
    "SGD momentum form": (
        Scenario(
            options=(
                ("optimizer", "sgd"),
                ("lr", 0.05),
                ("momentum", 0.9),
                ("batch_size", 2),
                ("epochs", 2),
                ("shuffle", False),
            ),
            learning_rates=((3, 0.01),),
        ),
        ("momentum",),
    ),
    # eps of the order of sqrt(v) so where it sits matters; few steps so bias correction does.
    "Adam form": (
        Scenario(
            options=(
                ("optimizer", "adam"),
                ("lr", 0.05),
                ("eps", 0.05),
                ("batch_size", 2),
                ("epochs", 1),
                ("shuffle", False),
            )
        ),
        ("adam",),
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_scenario_tells_the_candidates_apart(name):
    """Runs everywhere: the scenario's candidate assumptions give different results, so the Mac
    run can settle the question (a scenario where every candidate agreed would prove nothing)."""
    scenario, fields = SCENARIOS[name]
    runs = {k: on_our_runtime(scenario, a) for k, a in candidates(fields).items()}
    if len(runs) < 2:
        pytest.skip(f"the runtime models only one choice for {fields}")
    distinct = []
    for run in runs.values():
        if not any(run.agrees(other) for other in distinct):
            distinct.append(run)
    assert len(distinct) > 1, f"{name}: every candidate assumption gives the same result"


@on_mac
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_core_ml_training_settles(probe, tmp_path, name):
    scenario, fields = SCENARIOS[name]
    settle(on_core_ml(probe, scenario, tmp_path), scenario, fields, name)


@on_mac
def test_core_ml_epoch_loss_against_its_own_mini_batches(probe, tmp_path):
    """Independent of our runtime: is the epoch loss the last mini-batch's, or their mean?"""
    scenario, _ = SCENARIOS["epoch loss"]
    run = on_core_ml(probe, scenario, tmp_path)
    last = [losses[-1] for losses in run.mini_batch_losses]
    mean = [float(np.mean(losses)) for losses in run.mini_batch_losses]
    is_last = np.allclose(run.epoch_losses, last, rtol=TOL, atol=TOL)
    is_mean = np.allclose(run.epoch_losses, mean, rtol=TOL, atol=TOL)
    print(
        f"\n[Core ML measured] epoch loss {run.epoch_losses}: last mini-batch {last} -> "
        f"{is_last}; mean of mini-batches {mean} -> {is_mean}"
    )
    expected = assumption_module.DEFAULT.epoch_loss
    assert (is_last, is_mean) != (False, False), "the epoch loss is neither form"
    assert {"last": is_last, "mean": is_mean}[expected], f"default epoch_loss={expected!r} is wrong"


@on_mac
def test_core_ml_mse_loss_value(probe, tmp_path):
    """Independent of our runtime: the first mini-batch's loss (one batch of the whole set, the
    initial weights) against the closed forms people mean by MSE (#2070, #486 report surprises)."""
    scenario, _ = SCENARIOS["MSE loss value and gradient scale"]
    spec = scenario.spec()
    examples = scenario.examples(spec)
    x = np.stack([e["x"] for e in examples])
    y = np.stack([e[scenario.target(spec)] for e in examples])
    initial = load(spec)
    error = np.stack([np.asarray(initial.predict({"x": row})["y"]).reshape(-1) for row in x]) - y
    forms = {
        "mean over all elements (torch MSELoss, Keras)": float(np.mean(error**2)),
        "sum over elements, mean over batch": float(np.mean(np.sum(error**2, axis=1))),
        "half of the mean over all elements": float(np.mean(error**2) / 2),
        "half of sum over elements, mean over batch": float(np.mean(np.sum(error**2, axis=1)) / 2),
        "sum over everything": float(np.sum(error**2)),
    }
    measured = on_core_ml(probe, scenario, tmp_path).mini_batch_losses[0][0]
    matches = [name for name, value in forms.items() if np.isclose(measured, value, rtol=TOL)]
    print(
        f"\n[Core ML measured] first MSE loss {measured:.6g}; closed forms: "
        + ", ".join(f"{k} = {v:.6g}" for k, v in forms.items())
        + f"; matches: {matches}"
    )
    ours = on_our_runtime(scenario, assumption_module.DEFAULT).mini_batch_losses[0][0]
    assert np.isclose(ours, measured, rtol=TOL, atol=TOL), (
        f"our default reports {ours:.6g}, Core ML {measured:.6g} ({matches or 'no closed form'})"
    )


# -- a head trained after attention (N-d layers in the frozen part) -------------------------------


def _attention_task(tmp_path: Path) -> dict:
    """A transformer encoder (tokens, attention: batchedMatmul, softmaxND, reshapeStatic under
    the exact-rank mapping) with a trainable Linear head, as a regressor trained with MSE:
    the request for the probe, and our runtime's predictions on the probes before and after
    the same task. Whether Core ML trains a head behind N-d frozen layers as it does behind
    classic ones has no public evidence; this measures it."""
    torch = pytest.importorskip("torch")
    from test_torch_attention import PatchEncoder
    from updatable_coreml.exporters.torch import export_torch

    torch.manual_seed(0)
    model = PatchEncoder().eval()
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, 8, 12, generator=generator)
    y = torch.randn(8, 3, generator=generator)
    path = tmp_path / "attention.mlmodel"
    report = export_torch(
        model, x[:1], path, loss=torch.nn.MSELoss(), trainable=["head"], regressor=True,
        optimizer=torch.optim.SGD(model.head.parameters(), lr=0.1), batch_size=4, epochs=2,
        shuffle=False,
    )  # fmt: skip
    (output,) = report.outputs
    runtime = load(path)
    (name,) = [feature.name for feature in runtime.description.input]
    target = f"{output}_true"
    declared = tuple(
        next(
            f for f in runtime.description.trainingInput if f.name == target
        ).type.multiArrayType.shape
    )  # exact-rank mapping: (1, 3, 1, 1), like the output
    examples = [
        {name: x[i : i + 1].numpy(), target: y[i].numpy().reshape(declared)} for i in range(len(x))
    ]
    probes = [{name: x[i : i + 1].numpy()} for i in range(3)]
    before = [np.asarray(runtime.predict(p)[output]).reshape(-1) for p in probes]
    trained = runtime.update(examples).model
    after = [np.asarray(trained.predict(p)[output]).reshape(-1) for p in probes]
    request = {
        "model": str(path),
        "output": output,
        "examples": [{k: _array(v) for k, v in e.items()} for e in examples],
        "probes": [{k: _array(v) for k, v in p.items()} for p in probes],
        "learning_rates": [],
    }
    return {"request": request, "before": np.asarray(before), "after": np.asarray(after)}


def test_the_attention_task_changes_the_predictions(tmp_path):
    """Runs everywhere: the task moves the head enough that a Mac run comparing the trained
    predictions cannot pass without training."""
    task = _attention_task(tmp_path)
    assert np.abs(task["after"] - task["before"]).max() > 100 * TOL


@on_mac
def test_core_ml_trains_a_head_after_attention_like_our_runtime(probe, tmp_path):
    import coremltools as ct

    task = _attention_task(tmp_path)
    request = task["request"]
    theirs = ct.models.MLModel(request["model"])
    for p, ours in zip(request["probes"], task["before"], strict=True):
        feed = {k: np.asarray(v["array"]["values"], np.float32).reshape(v["array"]["shape"])
                for k, v in p.items()}  # fmt: skip
        got = np.asarray(theirs.predict(feed)[request["output"]]).reshape(-1)
        np.testing.assert_allclose(got, ours, atol=TOL)
    answer = ask_probe(probe, request, tmp_path)
    print(f"\n[Core ML measured] after attention: {np.round(answer['after'], 6).tolist()}")
    np.testing.assert_allclose(np.asarray(answer["after"]), task["after"], atol=TOL, rtol=TOL)
