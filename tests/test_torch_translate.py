"""torch -> IR translation, what trains, and the loss/optimizer mapping (no Core ML file)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from updatable_coreml.errors import (  # noqa: E402
    ConfigError,
    ModelFileError,
    NotUpdatableError,
    UnsupportedError,
    UntrustedSourceError,
)
from updatable_coreml.exporters import common  # noqa: E402
from updatable_coreml.exporters.torch import (  # noqa: E402
    Refusals,
    capture,
    load_torch_source,
    map_loss,
    map_optimizer,
    torch_to_graph,
    trainable_parameters,
)
from updatable_coreml.training import SGD, Adam  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.relu(self.conv(x)) + x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.block = Block()
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(4 * 5 * 5, 3))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


def graph_of(model, shape=(2, 3, 5, 5), **kwargs):
    return torch_to_graph(model.eval(), torch.randn(*shape), **kwargs)


def test_layer_names_are_module_paths():
    state = graph_of(Net())
    names = [(n.name, n.op) for n in state.graph.nodes]
    assert names == [
        ("stem", "conv2d"),
        ("block.conv", "conv2d"),
        ("block.relu", "activation"),
        ("block.add", "add"),
        ("block.relu_1", "activation"),
        ("head.0", "flatten"),
        ("head.1", "dropout"),
        ("head.2", "dense"),
    ]
    assert state.graph.inputs[0].shape == (3, 5, 5)
    assert state.graph.outputs == ["head.2"]
    assert state.graph.nodes[-1].source == "torch.nn.Linear"
    assert state.graph.nodes[3].inputs == ["block.relu", "stem"]


def test_weights_are_copies():
    model = Net()
    state = graph_of(model)
    state.graph.nodes[0].weights["weight"][:] = 0
    assert float(model.stem.weight.detach().abs().sum()) > 0


def test_unknown_op_names_op_and_module():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    model = nn.Sequential(nn.Linear(3, 3), Odd())
    with pytest.raises(UnsupportedError, match=r"'sin' in module '1' \(Odd\)"):
        graph_of(model, (2, 3))


@pytest.mark.parametrize(
    "size,kernel,stride,pad",
    [(8, 3, 2, 0), (7, 3, 2, 0), (10, 3, 2, 1), (55, 3, 2, 0), (6, 2, 2, 0), (9, 4, 3, 1)],
)
def test_ceil_mode_padding_matches_torch_size(size, kernel, stride, pad):
    extra = common.ceil_mode_padding(size, kernel, stride, pad)
    expected = nn.MaxPool2d(kernel, stride, pad, ceil_mode=True)(
        torch.zeros(1, 1, size, size)
    ).shape[-1]
    assert (size + 2 * pad + extra - kernel) // stride + 1 == expected


def test_reshape_forms():
    class Shapes(nn.Module):
        def forward(self, x):
            a = x.view(x.shape[0], -1)
            b = x.reshape(x.shape[0], 2, 25, 1)
            return a, b.contiguous(), x.mean((2, 3))

    nodes = graph_of(Shapes(), (2, 2, 5, 5)).graph.nodes
    assert [n.op for n in nodes] == ["flatten", "reshape", "pool2d", "flatten"]
    assert nodes[1].attrs["shape"] == (2, 25, 1)
    assert nodes[2].attrs["global"]


def test_an_image_reshaped_to_rank_2_is_not_taken_for_a_sequence():
    """(N, C, H * W) is an image's positions on their way to tokens, not a sequence of C
    steps: an output of that shape is refused, naming the reshape."""

    class Merge(nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], 2, 25)

    with pytest.raises(UnsupportedError, match="reshape of an activation.*channel-first"):
        graph_of(Merge(), (2, 2, 5, 5))


def test_reshape_across_batch_refused():
    class Bad(nn.Module):
        def forward(self, x):
            return x.reshape(-1)

    with pytest.raises(UnsupportedError, match="batch axis"):
        graph_of(Bad(), (2, 3))


def test_log_softmax_only_as_output():
    class Mid(nn.Module):
        def forward(self, x):
            return torch.log_softmax(x, 1) * 2

    with pytest.raises(UnsupportedError, match="log_softmax"):
        graph_of(Mid(), (2, 3))


# -- what trains -------------------------------------------------------------------------


def test_trainable_from_optimizer_and_requires_grad():
    model = Net()
    model.head[2].bias.requires_grad_(False)
    optimizer = torch.optim.SGD([*model.block.parameters(), *model.head.parameters()], lr=0.1)
    assert trainable_parameters(model, optimizer) == {
        "block.conv.weight",
        "block.conv.bias",
        "head.2.weight",
    }
    assert trainable_parameters(model, None, ["head"]) == {"head.2.weight", "head.2.bias"}


def test_trainable_unknown_name_suggests():
    with pytest.raises(ConfigError, match="did you mean 'head.2'"):
        trainable_parameters(Net(), None, ["head.3"])


def test_weight_without_bias_refused_and_downgraded():
    model = Net()
    model.head[2].bias.requires_grad_(False)
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)
    with pytest.raises(
        NotUpdatableError, match="'head.2': its weight trains but its bias does not"
    ):
        graph_of(model, optimizer=optimizer)
    refusals = Refusals(allow=True)
    state = graph_of(model, optimizer=optimizer, refusals=refusals)
    assert state.graph.nodes[-1].trainable and "both train" in refusals.warnings[0]


def test_trainable_flags_follow_parameters():
    state = graph_of(Net(), trainable=["block.conv", "head.2"])
    assert {n.name for n in state.graph.nodes if n.trainable} == {"block.conv", "head.2"}


# -- loss ----------------------------------------------------------------------------------


def loss_plan(model, loss, shape=(2, 3), allow=False):
    return map_loss(loss, graph_of(model, shape), Refusals(allow))


def test_cross_entropy_on_logits():
    plan = loss_plan(nn.Linear(3, 4), nn.CrossEntropyLoss())
    assert (plan.kind, plan.from_logits, plan.output) == ("cce", True, "linear")


def test_nll_after_log_softmax_becomes_softmax_cce():
    model = nn.Sequential(nn.Linear(3, 4), nn.LogSoftmax(1))
    state = graph_of(model, (2, 3))
    plan = map_loss(nn.NLLLoss(), state, Refusals())
    assert (plan.kind, plan.from_logits) == ("cce", False)
    assert state.graph.nodes[-1].op == "softmax"
    assert any("log_softmax" in note for note in state.graph.notes)


def test_nll_without_log_softmax_refused():
    with pytest.raises(UnsupportedError, match="log_softmax"):
        loss_plan(nn.Linear(3, 4), nn.NLLLoss())


def test_mse_and_string_losses():
    assert loss_plan(nn.Linear(3, 4), nn.MSELoss()).kind == "mse"
    assert loss_plan(nn.Linear(3, 4), "cross_entropy").from_logits
    with pytest.raises(UnsupportedError, match="BCELoss"):
        loss_plan(nn.Linear(3, 4), nn.BCELoss())


@pytest.mark.parametrize(
    "loss,match",
    [
        (nn.CrossEntropyLoss(weight=torch.ones(4)), "class weights"),
        (nn.CrossEntropyLoss(ignore_index=0), "ignore_index"),
        (nn.CrossEntropyLoss(label_smoothing=0.1), "label smoothing"),
        (nn.CrossEntropyLoss(reduction="sum"), "reduction='sum'"),
        (nn.MSELoss(reduction="sum"), "reduction='sum'"),
    ],
)
def test_loss_options_refused_or_warned(loss, match):
    with pytest.raises(UnsupportedError, match=match):
        loss_plan(nn.Linear(3, 4), loss)
    state = graph_of(nn.Linear(3, 4), (2, 3))
    refusals = Refusals(allow=True)
    map_loss(loss, state, refusals)
    assert len(refusals.warnings) == 1 and "allow_unsupported" in refusals.warnings[0]


# -- optimizer -----------------------------------------------------------------------------


def params():
    return [nn.Parameter(torch.zeros(2))]


def test_sgd_and_adam_mapping():
    sgd = map_optimizer(torch.optim.SGD(params(), lr=0.05, momentum=0.9), Refusals())
    assert (
        isinstance(sgd, SGD) and sgd.learning_rate.default == 0.05 and sgd.momentum.default == 0.9
    )
    adam = map_optimizer(
        torch.optim.Adam(params(), lr=1e-3, betas=(0.8, 0.99), eps=1e-7), Refusals()
    )
    assert isinstance(adam, Adam)
    assert (adam.beta1.default, adam.beta2.default, adam.eps.default) == (0.8, 0.99, 1e-7)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: torch.optim.SGD(params(), lr=0.1, momentum=0.9, nesterov=True), "Nesterov"),
        (lambda: torch.optim.SGD(params(), lr=0.1, momentum=0.9, dampening=0.1), "dampening"),
        (lambda: torch.optim.SGD(params(), lr=0.1, weight_decay=1e-4), "weight decay"),
        (lambda: torch.optim.Adam(params(), amsgrad=True), "AMSGrad"),
        (lambda: torch.optim.AdamW(params()), r"AdamW\(weight_decay"),
        (
            lambda: torch.optim.SGD(
                [{"params": params()}, {"params": params(), "lr": 0.5}], lr=0.1
            ),
            "param group 1 has lr=0.5",
        ),
    ],
)
def test_optimizer_options_refused_or_warned(make, match):
    with pytest.raises(UnsupportedError, match=match):
        map_optimizer(make(), Refusals())
    refusals = Refusals(allow=True)
    assert isinstance(map_optimizer(make(), refusals), (SGD, Adam))
    assert refusals.warnings


def test_other_optimizer_refused():
    with pytest.raises(UnsupportedError, match="RMSprop"):
        map_optimizer(torch.optim.RMSprop(params()), Refusals())


# -- capture and sources ---------------------------------------------------------------------


def test_capture_restores_training_mode():
    model = Net().train()
    capture(model, torch.randn(2, 3, 5, 5))
    assert model.training


def test_capture_failure_is_clean():
    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(UnsupportedError, match="torch.export could not capture"):
        capture(Branchy(), torch.randn(2, 3))


def test_load_pt2_and_factory(tmp_path):
    model = Net().eval()
    program = torch.export.export(model, (torch.randn(2, 3, 5, 5),))
    torch.export.save(program, tmp_path / "net.pt2")
    with pytest.raises(UntrustedSourceError, match="--trust-source"):
        load_torch_source(str(tmp_path / "net.pt2"))  # torch.export.load unpickles
    source = load_torch_source(str(tmp_path / "net.pt2"), trust_source=True)
    assert source.example_inputs[0].shape == (2, 3, 5, 5)
    state = torch_to_graph(source.model, source.example_inputs, trainable=["head.2"])
    assert [n.name for n in state.graph.nodes if n.trainable] == ["head.2"]

    (tmp_path / "factory.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Linear(3, 2))\n"
    )
    weights = {"0.weight": torch.ones(2, 3), "0.bias": torch.zeros(2)}
    torch.save(weights, tmp_path / "w.pt")
    loaded = load_torch_source(f"{tmp_path / 'factory.py'}:build", tmp_path / "w.pt", (3,))
    assert float(loaded.model[0].weight.detach().sum()) == 6.0 and loaded.example_inputs[
        0
    ].shape == (1, 3)


def test_load_refuses_pickled_objects(tmp_path):
    torch.save({"model": Net()}, tmp_path / "full.pt")
    (tmp_path / "factory.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Linear(3, 2)\n"
    )
    with pytest.raises(ModelFileError, match="weights_only"):
        load_torch_source(f"{tmp_path / 'factory.py'}:build", tmp_path / "full.pt", (3,))
    with pytest.raises(ConfigError, match="example_shape"):
        load_torch_source(f"{tmp_path / 'factory.py'}:build")


# -- the reference architectures ---------------------------------------------------------


def test_squeezenet_and_resnet_translate_with_module_names():
    models = load_example("torch_squeezenet_resnet")
    squeeze = torch_to_graph(
        models.SqueezeNet11(10).eval(), torch.randn(1, 3, 64, 64), trainable=["classifier.1"]
    ).graph
    names = {n.name for n in squeeze.nodes}
    assert {"features.3.squeeze", "features.3.cat", "classifier.1", "classifier.3"} <= names
    resnet, optimizer = models.frozen_backbone_resnet()
    graph = torch_to_graph(resnet, torch.randn(1, 3, 64, 64), optimizer=optimizer).graph
    assert {"layer4.1.conv2", "layer4.1.bn2", "layer4.1.add"} <= {n.name for n in graph.nodes}
    assert [n.name for n in graph.nodes if n.trainable] == ["fc"]


def test_trainable_batch_norm_refused_in_torch_terms():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(36, 2))
    with pytest.raises(
        NotUpdatableError, match=r"module '1' \(BatchNorm2d\).*requires_grad_\(False\)"
    ):
        graph_of(model)
    refusals = Refusals(allow=True)
    state = graph_of(model, refusals=refusals)
    assert [n.name for n in state.graph.nodes if n.trainable] == ["0", "3"]
    assert "kept frozen" in refusals.warnings[0]


def test_tied_weights_refused():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return self.a(torch.relu(self.a(x)))

    with pytest.raises(NotUpdatableError, match="shared with 'a_1'"):
        graph_of(Tied(), (2, 4))
    assert not any(n.trainable for n in graph_of(Tied(), (2, 4), trainable=[]).graph.nodes)


def test_trainable_scalar_parameter_refused():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.gain = nn.Parameter(torch.tensor(2.0))

        def forward(self, x):
            return self.fc(x) * self.gain

    with pytest.raises(NotUpdatableError, match="'gain' trains in torch but is used as a constant"):
        graph_of(Scaled(), (2, 3))
    assert [
        n.name for n in graph_of(Scaled(), (2, 3), trainable=["fc"]).graph.nodes if n.trainable
    ] == ["fc"]
