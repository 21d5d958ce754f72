"""MLUpdateTask emulation: torch parity of whole training runs, and task semantics."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
nnb = pytest.importorskip("coremltools.models.neural_network")
datatypes = pytest.importorskip("coremltools.models.datatypes")

from updatable_coreml import runtime  # noqa: E402
from updatable_coreml._proto import FeatureTypes_pb2, Model_pb2  # noqa: E402
from updatable_coreml.errors import ConfigError, ModelFileError, RuntimeLayerError  # noqa: E402
from updatable_coreml.runtime.assumptions import Assumptions  # noqa: E402
from updatable_coreml.runtime.batch_order import coreml_orders  # noqa: E402
from updatable_coreml.runtime.update import (  # noqa: E402
    FrontierSource,
    make_plan,
    mini_batches,
    read_training_setup,
)

LABELS = ["cat", "dog", "owl"]
N_EXAMPLES, BATCH = 10, 4  # 3 mini-batches per epoch, the last one wraps around


# -- models, built from torch weights ----------------------------------------------------------


def as_stored(weights: dict) -> dict:
    """Round to float32 (what the spec stores) so torch starts from the very same weights."""
    return {k: v.float().double() for k, v in weights.items()}


def cnn_weights(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return as_stored(
        {
            "conv_w": torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64) * 0.4,
            "conv_b": torch.randn(4, generator=g, dtype=torch.float64) * 0.1,
            "fc_w": torch.randn(3, 36, generator=g, dtype=torch.float64) * 0.2,
            "fc_b": torch.randn(3, generator=g, dtype=torch.float64) * 0.1,
        }
    )


def cnn_spec(w: dict, *, lr=0.05, momentum=0.9, epochs=3, relu="RELU"):
    """conv(2->4, 3x3, same) -> relu -> maxpool 2x2 -> flatten -> innerProduct -> softmax."""
    b = nnb.NeuralNetworkBuilder(
        [("image", datatypes.Array(2, 6, 6))], [("probs", datatypes.Array(3))], mode="classifier"
    )
    b.add_convolution(
        "conv",
        2,
        4,
        3,
        3,
        1,
        1,
        "same",
        1,
        w["conv_w"].numpy().transpose(2, 3, 1, 0),
        w["conv_b"].numpy(),
        True,
        input_name="image",
        output_name="c",
    )
    b.add_activation("act", relu, "c", "r", params=[0.1] if relu == "LEAKYRELU" else None)
    b.add_pooling("pool", 2, 2, 2, 2, "MAX", "VALID", "r", "p")
    b.add_flatten("flat", 0, "p", "f")
    b.add_inner_product("fc", w["fc_w"].numpy(), w["fc_b"].numpy(), 36, 3, True, "f", "logits")
    b.add_softmax("softmax", "logits", "probs")
    b.set_class_labels(LABELS, predicted_feature_name="label", prediction_blob="probs")
    b.make_updatable(["conv", "fc"])
    b.set_categorical_cross_entropy_loss("loss", "probs")
    b.set_sgd_optimizer(nnb.SgdParams(lr=lr, batch=BATCH, momentum=momentum))
    b.set_epochs(epochs, allowed_set=[1, 2, 3, 4, 5])
    b.set_shuffle(seed=7)
    seed = b.spec.neuralNetworkClassifier.updateParams.seed
    seed.range.minValue, seed.range.maxValue = 0, 1000
    return b.spec


def cnn_data(seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_EXAMPLES, 2, 6, 6))
    y = rng.integers(0, 3, size=N_EXAMPLES)
    return x, y


def cnn_torch_forward(w, x):
    h = F.max_pool2d(F.relu(F.conv2d(x, w["conv_w"], w["conv_b"], padding=1)), 2)
    return F.linear(h.flatten(1), w["fc_w"], w["fc_b"])


def regressor_weights(seed: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "ip1_w": (8, 6),
        "ip1_b": (8,),
        "ip2_w": (5, 8),
        "ip2_b": (5,),
        "ip3_w": (2, 5),
        "ip3_b": (2,),
    }
    return as_stored(
        {k: torch.randn(*s, generator=g, dtype=torch.float64) * 0.5 for k, s in shapes.items()}
    )


def regressor_spec(w: dict, *, lr=0.01):
    """ip1 (frozen) -> relu -> ip2 -> tanh -> ip3 -> MSE, Adam."""
    b = nnb.NeuralNetworkBuilder(
        [("features", datatypes.Array(6))], [("out", datatypes.Array(2))], mode="regressor"
    )
    b.add_inner_product("ip1", w["ip1_w"].numpy(), w["ip1_b"].numpy(), 6, 8, True, "features", "h1")
    b.add_activation("relu", "RELU", "h1", "a1")
    b.add_inner_product("ip2", w["ip2_w"].numpy(), w["ip2_b"].numpy(), 8, 5, True, "a1", "h2")
    b.add_activation("tanh", "TANH", "h2", "a2")
    b.add_inner_product("ip3", w["ip3_w"].numpy(), w["ip3_b"].numpy(), 5, 2, True, "a2", "out")
    b.make_updatable(["ip2", "ip3"])
    b.set_mean_squared_error_loss("loss", ("out", datatypes.Array(2)))
    b.set_adam_optimizer(nnb.AdamParams(lr=lr, batch=BATCH, beta1=0.9, beta2=0.999, eps=1e-8))
    b.set_epochs(3, allowed_set=[1, 2, 3])
    return b.spec


def regressor_data(seed: int = 3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N_EXAMPLES, 6)), rng.normal(size=(N_EXAMPLES, 2))


def regressor_torch_forward(w, x):
    h = torch.tanh(F.linear(F.relu(F.linear(x, w["ip1_w"], w["ip1_b"])), w["ip2_w"], w["ip2_b"]))
    return F.linear(h, w["ip3_w"], w["ip3_b"])


# -- the torch side ----------------------------------------------------------------------------


def torch_train(
    w: dict,
    trainable: list[str],
    forward,
    loss_fn,
    x,
    y,
    optimizer,
    epochs: int = 3,
    orders=None,
    on_epoch_end=None,
) -> dict:
    """Train copies of ``w`` on the same wrapped-around mini-batches the runtime uses."""
    params = {k: v.clone().requires_grad_(k in trainable) for k, v in w.items()}
    opt = optimizer([params[k] for k in trainable])
    x, y = torch.as_tensor(x, dtype=w["fc_w" if "fc_w" in w else "ip1_w"].dtype), torch.as_tensor(y)
    for epoch in range(epochs):
        order = np.arange(len(x)) if orders is None else orders[epoch]
        for rows in mini_batches(order, BATCH, "wrap"):
            opt.zero_grad()
            loss_fn(forward(params, x[rows]), y[rows]).backward()
            opt.step()
        if on_epoch_end:
            on_epoch_end(epoch, opt)
    return {k: v.detach().numpy() for k, v in params.items()}


def trained_weights(model, layer: str) -> tuple[np.ndarray, np.ndarray]:
    nn = (
        model.spec.neuralNetworkClassifier
        if model.spec.HasField("neuralNetworkClassifier")
        else model.spec.neuralNetworkRegressor
    )
    found = next(item for item in nn.layers if item.name == layer)
    params = getattr(found, found.WhichOneof("layer"))
    return np.asarray(params.weights.floatValue), np.asarray(params.bias.floatValue)


def in_memory_weights(model, layer: str) -> tuple[np.ndarray, np.ndarray]:
    network = model.trainable()
    index = next(i for i, item in enumerate(network.layers) if item.name == layer)
    getter = network.weight_getter(index)
    return getter("weights"), getter("bias")


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def cnn_examples(x, y):
    return {"image": x, "label": np.asarray(LABELS)[y]}


# -- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-5), (np.float32, 1e-4)])
def test_cnn_sgd_momentum_matches_torch(dtype, tol):
    w = cnn_weights()
    x, y = cnn_data()
    model = runtime.load(cnn_spec(w), dtype=dtype)
    result = model.update(cnn_examples(x, y), parameters={"shuffle": False})
    expected = torch_train(
        w,
        list(w),
        cnn_torch_forward,
        F.cross_entropy,
        x,
        y,
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    )
    for layer, key in (("conv", "conv"), ("fc", "fc")):
        weights, bias = in_memory_weights(result.model, layer)
        assert rel_err(weights, expected[f"{key}_w"]) <= tol
        assert rel_err(bias, expected[f"{key}_b"]) <= tol
    assert len(result.epoch_losses) == 3 and not result.cancelled


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-5), (np.float32, 1e-4)])
def test_mse_adam_regressor_matches_torch(dtype, tol):
    w = regressor_weights()
    x, t = regressor_data()
    model = runtime.load(regressor_spec(w), dtype=dtype)
    result = model.update({"features": x, "out_true": t}, parameters={"shuffle": False})
    expected = torch_train(
        w,
        ["ip2_w", "ip2_b", "ip3_w", "ip3_b"],
        regressor_torch_forward,
        F.mse_loss,
        x,
        t,
        lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-8),
    )
    for layer in ("ip2", "ip3"):
        weights, bias = in_memory_weights(result.model, layer)
        assert rel_err(weights, expected[f"{layer}_w"]) <= tol
        assert rel_err(bias, expected[f"{layer}_b"]) <= tol
    frozen = in_memory_weights(result.model, "ip1")[0]
    np.testing.assert_array_equal(frozen, w["ip1_w"].numpy().astype(dtype).ravel())


@pytest.mark.parametrize("order", ["coreml", "numpy"])
def test_seeded_shuffle_trains_on_the_assumed_order(order):
    """Core ML's order (libc++ shuffle, re-shuffled in place) or the numpy alternative."""
    w = cnn_weights()
    x, y = cnn_data()
    model = runtime.load(cnn_spec(w), dtype=np.float64)
    assume = Assumptions(shuffle_order=order)
    first = model.update(cnn_examples(x, y), parameters={"seed": 11}, assumptions=assume)
    again = model.update(cnn_examples(x, y), parameters={"seed": 11}, assumptions=assume)
    other = model.update(cnn_examples(x, y), parameters={"seed": 12}, assumptions=assume)
    if order == "coreml":
        orders = list(coreml_orders(N_EXAMPLES, 3, True, 11))
    else:
        rng = np.random.default_rng(11)
        orders = [rng.permutation(N_EXAMPLES) for _ in range(3)]
    expected = torch_train(
        w,
        list(w),
        cnn_torch_forward,
        F.cross_entropy,
        x,
        y,
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        orders=orders,
    )
    got = in_memory_weights(first.model, "fc")[0]
    assert rel_err(got, expected["fc_w"]) <= 1e-5
    np.testing.assert_array_equal(got, in_memory_weights(again.model, "fc")[0])
    assert not np.array_equal(got, in_memory_weights(other.model, "fc")[0])


def test_batches_follow_the_shuffled_order_epoch_by_epoch(monkeypatch):
    """Without a seed in the spec Core ML's engine starts in state 1; every mini-batch holds
    the rows of that epoch's order, the last one wrapped around."""
    spec = regressor_spec(regressor_weights())
    assert not spec.neuralNetworkRegressor.updateParams.HasField("seed")
    model = runtime.load(spec, dtype=np.float64)
    x, t = regressor_data()
    seen = []
    original = FrontierSource.batch

    def spy(self, index):
        seen.append(np.asarray(index).tolist())
        return original(self, index)

    monkeypatch.setattr(FrontierSource, "batch", spy)
    model.update({"features": x, "out_true": t}, parameters={"shuffle": True})
    expected = [
        rows.tolist()
        for order in coreml_orders(N_EXAMPLES, 3, True, None)
        for rows in mini_batches(order, BATCH, "wrap")
    ]
    assert seen == expected and seen[0] != list(range(BATCH))


def test_resume_changes_learning_rate_and_keeps_momentum():
    w = cnn_weights()
    x, y = cnn_data()
    model = runtime.load(cnn_spec(w), dtype=np.float64)

    def anneal(event):
        if event.kind == "epoch_end" and event.epoch == 0:
            event.task.resume({"learningRate": 0.01})

    result = model.update(cnn_examples(x, y), parameters={"shuffle": False}, progress=anneal)

    def torch_anneal(epoch, opt):
        if epoch == 0:
            opt.param_groups[0]["lr"] = 0.01

    expected = torch_train(
        w,
        list(w),
        cnn_torch_forward,
        F.cross_entropy,
        x,
        y,
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        on_epoch_end=torch_anneal,
    )
    assert rel_err(in_memory_weights(result.model, "fc")[0], expected["fc_w"]) <= 1e-5
    assert result.parameters["learningRate"] == 0.01


def test_update_again_on_the_result_starts_fresh_optimizer_state():
    w = cnn_weights()
    x, y = cnn_data()
    model = runtime.load(cnn_spec(w), dtype=np.float64)
    once = model.update(cnn_examples(x, y), parameters={"shuffle": False, "epochs": 1})
    twice = once.model.update(
        cnn_examples(x, y), parameters={"shuffle": False, "epochs": 1, "learningRate": 0.01}
    )
    step1 = torch_train(
        w,
        list(w),
        cnn_torch_forward,
        F.cross_entropy,
        x,
        y,
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        epochs=1,
    )
    w1 = {k: torch.as_tensor(v) for k, v in step1.items()}
    step2 = torch_train(
        w1,
        list(w1),
        cnn_torch_forward,
        F.cross_entropy,
        x,
        y,
        lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
        epochs=1,
    )
    assert rel_err(in_memory_weights(twice.model, "conv")[0], step2["conv_w"]) <= 1e-5


def test_resume_reads_only_the_learning_rate():
    """resume(withParameters:) changes the learning rate; epochs, momentum and batch size
    stay as they were at the start, and the ignored keys are named in the warnings."""
    w = cnn_weights()
    x, y = cnn_data()
    model = runtime.load(cnn_spec(w), dtype=np.float64)

    def anneal(event):
        if event.kind == "epoch_end" and event.epoch == 0:
            event.task.resume(
                {"learningRate": 0.01, "epochs": 1, "momentum": 0.1, "miniBatchSize": 2}
            )

    result = model.update(cnn_examples(x, y), parameters={"shuffle": False}, progress=anneal)

    def torch_anneal(epoch, opt):
        if epoch == 0:
            opt.param_groups[0]["lr"] = 0.01

    expected = torch_train(
        w,
        list(w),
        cnn_torch_forward,
        F.cross_entropy,
        x,
        y,
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        on_epoch_end=torch_anneal,
    )
    assert len(result.epoch_losses) == 3
    assert [len(losses) for losses in result.mini_batch_losses] == [3, 3, 3]
    assert rel_err(in_memory_weights(result.model, "fc")[0], expected["fc_w"]) <= 1e-5
    assert result.parameters["epochs"] == 3 and result.parameters["momentum"] == 0.9
    for key in ("epochs", "momentum", "miniBatchSize"):
        assert any(
            note.startswith(f"{key} cannot change while the task runs") for note in result.warnings
        ), key


def test_resume_with_a_learning_rate_the_model_refuses_fails_the_task():
    model = runtime.load(cnn_spec(cnn_weights()))
    x, y = cnn_data()

    def too_fast(event):
        if event.kind == "epoch_end":
            event.task.resume({"learningRate": 1.5})

    with pytest.raises(ConfigError, match="learningRate=1.5 is not allowed"):
        model.update(cnn_examples(x, y), progress=too_fast)


# -- semantics ---------------------------------------------------------------------------------


def test_mini_batches_wrap_short_drop():
    order = np.arange(10)
    wrapped = mini_batches(order, 4, "wrap")
    assert [b.tolist() for b in wrapped] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert [b.tolist() for b in mini_batches(np.arange(3), 4, "wrap")] == [[0, 1, 2, 0]]
    assert [len(b) for b in mini_batches(order, 4, "short")] == [4, 4, 2]
    assert [len(b) for b in mini_batches(order, 4, "drop")] == [4, 4]


def test_events_and_epoch_loss_is_last_mini_batch_loss():
    model = runtime.load(cnn_spec(cnn_weights()))
    x, y = cnn_data()
    events = []
    result = model.update(cnn_examples(x, y), progress=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "training_begin" and kinds[-1] == "completion"
    assert kinds.count("mini_batch_end") == 9 and kinds.count("epoch_end") == 3
    epoch_ends = [e for e in events if e.kind == "epoch_end"]
    assert [e.loss for e in epoch_ends] == [losses[-1] for losses in result.mini_batch_losses]
    averaged = model.update(cnn_examples(x, y), assumptions=Assumptions(epoch_loss="mean"))
    assert averaged.epoch_losses[0] == pytest.approx(np.mean(averaged.mini_batch_losses[0]))


def test_cancel_leaves_model_unchanged_and_skips_completion():
    spec = cnn_spec(cnn_weights())
    model = runtime.load(spec)
    x, y = cnn_data()
    events = []

    def cancel_early(event):
        events.append(event.kind)
        if event.kind == "mini_batch_end" and event.mini_batch == 1:
            event.task.cancel()

    result = model.update(cnn_examples(x, y), progress=cancel_early)
    assert result.cancelled and "completion" not in events and events[-1] == "mini_batch_end"
    assert result.model is model
    assert result.model.spec.SerializeToString() == spec.SerializeToString()


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"epochs": 9}, "epochs=9 is not allowed"),
        ({"epochs": 2.5}, "epochs=2.5 is not allowed"),
        ({"miniBatchSize": 8}, "miniBatchSize=8 is not allowed"),
        ({"learningRate": 1.5}, "learningRate=1.5 is not allowed"),
        ({"learningRate": "fast"}, "must be a number"),
        ({"shuffle": "yes"}, "true or false"),
    ],
)
def test_overrides_outside_the_allowed_values_raise(overrides, message):
    model = runtime.load(cnn_spec(cnn_weights()))
    x, y = cnn_data()
    with pytest.raises(ConfigError, match=message):
        model.update(cnn_examples(x, y), parameters=overrides)


def test_overrides_follow_core_ml_parameter_container():
    """Unknown keys ignored; a set matches within 1e-4; a range includes its bounds; the
    value Core ML uses is the integer part; each silent acceptance is a warning."""
    model = runtime.load(cnn_spec(cnn_weights()), dtype=np.float64)
    x, y = cnn_data()
    result = model.update(
        cnn_examples(x, y),
        parameters={
            "beta1": 0.5,
            "dropout": 0.1,
            "epochs": 2.00005,
            "learningRate": 1.0,
            "momentum": 0.0,
            "shuffle": False,
        },
    )
    assert len(result.epoch_losses) == 2
    assert result.parameters["epochs"] == 2 and result.parameters["learningRate"] == 1.0
    assert "beta1" not in result.parameters and "dropout" not in result.parameters
    assert any(
        w.startswith("'beta1' is not an update parameter of a SGD model")
        and w.endswith("Core ML ignores it")
        for w in result.warnings
    )
    assert any(w.startswith("'dropout' is not an update parameter") for w in result.warnings)
    assert any(w.startswith("epochs=2.00005 is not an integer") for w in result.warnings)


def test_a_key_the_spec_lacks_is_used_unchecked():
    """The regressor declares no seed: Core ML stores an app's seed unchecked and shuffles
    with it."""
    w = regressor_weights()
    x, t = regressor_data()
    model = runtime.load(regressor_spec(w), dtype=np.float64)
    seeded = model.update(
        {"features": x, "out_true": t}, parameters={"seed": 5, "shuffle": True, "epochs": 1}
    )
    assert any(w.startswith("seed=5: the model declares no seed") for w in seeded.warnings)
    order = next(coreml_orders(N_EXAMPLES, 1, True, 5))
    rows = np.concatenate(mini_batches(order, BATCH, "wrap"))
    reference = model.update(
        {"features": x[rows], "out_true": t[rows]}, parameters={"shuffle": False, "epochs": 1}
    )
    np.testing.assert_allclose(
        in_memory_weights(seeded.model, "ip3")[0],
        in_memory_weights(reference.model, "ip3")[0],
        rtol=1e-12,
    )


def test_a_value_without_allowed_range_meets_unknown_built_in_bounds():
    spec = cnn_spec(cnn_weights())
    spec.neuralNetworkClassifier.updateParams.optimizer.sgdOptimizer.momentum.ClearField("range")
    model = runtime.load(spec)
    x, y = cnn_data()
    result = model.update(cnn_examples(x, y), parameters={"momentum": 0.5, "epochs": 1})
    assert result.parameters["momentum"] == 0.5
    assert any(
        w.startswith("momentum=0.5: the model gives momentum no allowed range")
        for w in result.warnings
    )
    default = model.update(cnn_examples(x, y), parameters={"momentum": 0.9, "epochs": 1})
    assert default.warnings == []
    with pytest.raises(ConfigError, match="momentum=0.5 is not allowed"):
        model.update(
            cnn_examples(x, y),
            parameters={"momentum": 0.5},
            assumptions=Assumptions(override_without_range=False),
        )


def test_no_shuffle_parameter_means_no_shuffling():
    spec = cnn_spec(cnn_weights())
    spec.neuralNetworkClassifier.updateParams.ClearField("shuffle")
    model = runtime.load(spec, dtype=np.float64)
    x, y = cnn_data()
    absent = model.update(cnn_examples(x, y))
    plain = runtime.load(cnn_spec(cnn_weights()), dtype=np.float64).update(
        cnn_examples(x, y), parameters={"shuffle": False}
    )
    np.testing.assert_array_equal(
        in_memory_weights(absent.model, "fc")[0], in_memory_weights(plain.model, "fc")[0]
    )
    assert absent.parameters["shuffle"] is False


def test_ml_compute_preset_has_a_short_last_batch_and_mean_epoch_loss():
    model = runtime.load(cnn_spec(cnn_weights()))
    x, y = cnn_data()
    result = model.update(cnn_examples(x, y), assumptions="ml-compute")
    assert [len(losses) for losses in result.mini_batch_losses] == [3, 3, 3]
    assert result.epoch_losses[0] == pytest.approx(np.mean(result.mini_batch_losses[0]))
    with pytest.raises(ConfigError, match="unknown assumptions 'mlcompute'"):
        model.update(cnn_examples(x, y), assumptions="mlcompute")


def test_save_writes_only_updatable_layers(tmp_path):
    spec = cnn_spec(cnn_weights())
    model = runtime.load(spec)
    x, y = cnn_data()
    result = model.update(cnn_examples(x, y))
    path = result.model.save(tmp_path / "Updated.mlmodel")
    saved = runtime.load(path)
    before = {item.name: item for item in spec.neuralNetworkClassifier.layers}
    for layer in saved.spec.neuralNetworkClassifier.layers:
        same = layer.SerializeToString() == before[layer.name].SerializeToString()
        assert same != layer.isUpdatable, layer.name
    weights, bias = trained_weights(saved, "fc")
    np.testing.assert_array_equal(weights, in_memory_weights(result.model, "fc")[0])
    np.testing.assert_array_equal(bias, in_memory_weights(result.model, "fc")[1])
    assert saved.spec.neuralNetworkClassifier.layers[0].convolution.weights.isUpdatable
    probe = {"image": x[:3]}
    np.testing.assert_array_equal(
        saved.predict(probe)["label"], result.model.predict(probe)["label"]
    )
    assert list(tmp_path.iterdir()) == [path]


def test_unknown_label_and_missing_target_are_config_errors():
    model = runtime.load(cnn_spec(cnn_weights()))
    x, _ = cnn_data()
    with pytest.raises(ConfigError, match="'bat' is not one of the model's class labels"):
        model.update({"image": x[:2], "label": ["cat", "bat"]})
    with pytest.raises(ConfigError, match=r"missing input feature\(s\) 'label'"):
        model.update({"image": x[:2]})


def plain_network(classifier_spec):
    """The classifier's network as a plain NeuralNetwork trained from a class-index array."""
    spec = Model_pb2.Model(
        specificationVersion=classifier_spec.specificationVersion, isUpdatable=True
    )
    spec.description.input.extend(classifier_spec.description.input)
    spec.description.trainingInput.extend(classifier_spec.description.input)
    output = spec.description.output.add(name="probs")
    output.type.multiArrayType.shape.append(3)
    target = spec.description.trainingInput.add(name="probs_true")
    target.type.multiArrayType.shape.append(1)
    target.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.INT32
    spec.neuralNetwork.layers.extend(classifier_spec.neuralNetworkClassifier.layers)
    spec.neuralNetwork.updateParams.CopyFrom(classifier_spec.neuralNetworkClassifier.updateParams)
    return spec


def test_class_index_target_for_a_non_classifier_cce():
    x, y = cnn_data()
    with_labels = runtime.load(cnn_spec(cnn_weights()), dtype=np.float64).update(
        cnn_examples(x, y), parameters={"shuffle": False}
    )
    plain = runtime.load(plain_network(cnn_spec(cnn_weights())), dtype=np.float64)
    with_index = plain.update(
        {"image": x, "probs_true": y[:, None].astype(np.int32)}, parameters={"shuffle": False}
    )
    np.testing.assert_allclose(
        in_memory_weights(with_index.model, "fc")[0],
        in_memory_weights(with_labels.model, "fc")[0],
        rtol=1e-12,
    )
    with pytest.raises(ConfigError, match="class index 3 is out of range"):
        plain.update({"image": x[:2], "probs_true": np.array([[0], [3]], dtype=np.int32)})


def test_not_updatable_model_is_refused():
    spec = cnn_spec(cnn_weights())
    spec.isUpdatable = False
    x, y = cnn_data()
    with pytest.raises(ModelFileError, match="not updatable"):
        runtime.load(spec).update(cnn_examples(x, y))


def test_layer_core_ml_cannot_backpropagate_through_is_named():
    model = runtime.load(cnn_spec(cnn_weights(), relu="LEAKYRELU"))
    x, y = cnn_data()
    with pytest.raises(RuntimeLayerError, match="'act'.*activation leakyReLU"):
        model.update(cnn_examples(x, y))


def test_frozen_prefix_is_planned_once_and_cached():
    model = runtime.load(regressor_spec(regressor_weights()))
    network = model.trainable()
    plan = make_plan(network, read_training_setup(network, Assumptions()))
    assert [network.layers[i].name for i in plan.prefix] == ["ip1", "relu"]
    assert plan.frontier == ("a1",) and plan.cacheable
    assert "a1" not in plan.needs_grad


def test_mse_reduction_is_mean_over_elements_and_switchable():
    w = regressor_weights()
    x, t = regressor_data()
    model = runtime.load(regressor_spec(w), dtype=np.float64)
    pred = regressor_torch_forward(w, torch.as_tensor(x[:4])).detach().numpy()
    result = model.update(
        {"features": x, "out_true": t}, parameters={"shuffle": False, "epochs": 1}
    )
    assert result.mini_batch_losses[0][0] == pytest.approx(np.mean((pred - t[:4]) ** 2))
    summed = model.update(
        {"features": x, "out_true": t},
        parameters={"shuffle": False, "epochs": 1},
        assumptions=Assumptions(mse_reduction="sum", batch_reduction="sum"),
    )
    assert summed.mini_batch_losses[0][0] == pytest.approx(np.sum((pred - t[:4]) ** 2))


def test_examples_as_an_iterable_of_feature_dicts():
    model = runtime.load(cnn_spec(cnn_weights()), dtype=np.float64)
    x, y = cnn_data()
    rows = [{"image": x[i], "label": LABELS[y[i]]} for i in range(N_EXAMPLES)]
    from_rows = model.update(rows, parameters={"shuffle": False})
    from_dict = model.update(cnn_examples(x, y), parameters={"shuffle": False})
    np.testing.assert_array_equal(
        in_memory_weights(from_rows.model, "fc")[0], in_memory_weights(from_dict.model, "fc")[0]
    )


def regressor_pipeline(w: dict):
    """The regressor split in two: a frozen ip1+relu model feeding the updatable rest."""
    full = regressor_spec(w)
    layers = full.neuralNetworkRegressor.layers
    front = Model_pb2.Model(specificationVersion=full.specificationVersion)
    front.description.input.extend(full.description.input)
    hidden = front.description.output.add(name="a1")
    hidden.type.multiArrayType.shape.append(8)
    hidden.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.DOUBLE
    front.neuralNetwork.layers.extend(layers[:2])
    back = Model_pb2.Model()
    back.CopyFrom(full)
    del back.neuralNetworkRegressor.layers[:2]
    for features in (back.description.input, back.description.trainingInput):
        features[0].CopyFrom(hidden)
    pipeline = Model_pb2.Model(specificationVersion=full.specificationVersion, isUpdatable=True)
    for name in ("input", "output", "trainingInput"):
        getattr(pipeline.description, name).extend(getattr(full.description, name))
    pipeline.pipelineRegressor.pipeline.models.extend([front, back])
    return pipeline


def test_pipeline_trains_its_last_model_on_the_first_models_features(tmp_path):
    w = regressor_weights()
    x, t = regressor_data()
    examples = {"features": x, "out_true": t}
    whole = runtime.load(regressor_spec(w), dtype=np.float64).update(examples)
    split = runtime.load(regressor_pipeline(w), dtype=np.float64).update(examples)
    for layer in ("ip2", "ip3"):
        np.testing.assert_allclose(
            in_memory_weights(split.model, layer)[0],
            in_memory_weights(whole.model, layer)[0],
            rtol=1e-12,
        )
    saved = runtime.load(split.model.save(tmp_path / "pipeline.mlmodel"), dtype=np.float64)
    original = regressor_pipeline(w).pipelineRegressor.pipeline.models
    models = saved.spec.pipelineRegressor.pipeline.models
    assert models[0].SerializeToString() == original[0].SerializeToString()
    np.testing.assert_allclose(
        saved.predict({"features": x})["out"],  # saved as float32
        whole.model.predict({"features": x})["out"],
        atol=1e-6,
    )
