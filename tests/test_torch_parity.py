"""Forward parity: every op converter, exported and run by the reference runtime, predicts
what the torch module predicts (float32, max abs difference <= 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from updatable_coreml.errors import ConfigError, UnsupportedError  # noqa: E402
from updatable_coreml.exporters.torch import export_torch  # noqa: E402
from updatable_coreml.runtime.model import load  # noqa: E402

TOLERANCE = 1e-4


class Lambda(nn.Module):
    """A functional op as a module, so each case reads as one Sequential."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class TwoBranch(nn.Module):
    """conv branches joined by ``join`` (cat/add/mul): multi-input ops."""

    def __init__(self, join) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 4, 1)
        self.right = nn.Conv2d(3, 4, 3, padding=1)
        self.join = join

    def forward(self, x):
        return self.join(self.left(x), self.right(x))


class ChannelLastBlock(nn.Module):
    """ConvNeXt's block (torchvision CNBlock, LayerNorm2d): per-position ops on a channel-last
    view of the image, permuted back and scaled by a per-channel parameter. ReLU, not GELU:
    GELU is checked alone (``gelu``)."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.up, self.down = nn.Linear(channels, 2 * channels), nn.Linear(2 * channels, channels)
        self.scale = nn.Parameter(torch.rand(channels, 1, 1) + 0.5)
        self.norm2d = nn.LayerNorm(channels, eps=1e-5)
        for norm in (self.norm, self.norm2d):
            nn.init.normal_(norm.weight, 1.0, 0.3)
            nn.init.normal_(norm.bias, 0.0, 0.3)

    def forward(self, x):
        y = self.norm(self.depthwise(x).permute(0, 2, 3, 1))
        y = self.down(torch.relu(self.up(y))).permute(0, 3, 1, 2)
        x = x + self.scale * y
        return self.norm2d(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelShuffle(nn.Module):
    """ShuffleNet's unit: chunk along channels, a branch, cat, then the channel shuffle
    view(N, g, C / g, H, W) -> transpose(1, 2) -> contiguous -> view(N, C, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.widen, self.branch = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        left, right = self.widen(x).chunk(2, dim=1)
        x = torch.cat((left, self.branch(right)), 1)
        n, c, h, w = x.shape
        return x.view(n, 3, c // 3, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def head(features: int, outputs: int = 6) -> nn.Linear:
    return nn.Linear(features, outputs)


def image_case(*body: nn.Module, features: int) -> nn.Sequential:
    """Image ops, then flatten and a trainable linear head (what the export trains)."""
    return nn.Sequential(*body, nn.Flatten(), head(features))


# The cases below get their weights when this file is imported: seed them, so every run
# exports the same bytes (tools/compare_writes.py can then prove a refactor changed nothing).
torch.manual_seed(0)
CASES = {
    "linear": (nn.Sequential(nn.Linear(10, 7), nn.ReLU(), head(7)), (10,)),
    "linear_no_bias": (nn.Sequential(nn.Linear(10, 7, bias=False), head(7)), (10,)),
    "conv": (image_case(nn.Conv2d(3, 4, 3), features=4 * 6 * 6), (3, 8, 8)),
    "conv_groups_stride": (
        image_case(nn.Conv2d(3, 6, 3, stride=2, groups=3, padding=1), features=6 * 4 * 4),
        (3, 8, 8),
    ),
    "conv_dilation_no_bias": (
        image_case(nn.Conv2d(3, 4, 3, dilation=2, bias=False), features=4 * 4 * 4),
        (3, 8, 8),
    ),
    "conv_same_even_kernel": (
        image_case(nn.Conv2d(3, 4, 4, padding="same", dilation=1), features=4 * 8 * 7),
        (3, 8, 7),
    ),
    "conv_asymmetric_pad": (
        image_case(nn.Conv2d(3, 4, (3, 5), padding=(1, 2), stride=(2, 1)), features=4 * 4 * 8),
        (3, 8, 8),
    ),
    "batch_norm_folded": (
        image_case(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), features=4 * 6 * 6),
        (3, 8, 8),
    ),
    "batch_norm_alone": (image_case(nn.BatchNorm2d(3), features=3 * 8 * 8), (3, 8, 8)),
    "batch_norm_1d": (
        nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.BatchNorm1d(5), head(5)),
        (10,),
    ),
    "relu6": (nn.Sequential(nn.Linear(10, 7), nn.ReLU6(), head(7)), (10,)),
    "hardtanh": (nn.Sequential(nn.Linear(10, 7), nn.Hardtanh(-0.5, 0.75), head(7)), (10,)),
    "leaky_relu": (nn.Sequential(nn.Linear(10, 7), nn.LeakyReLU(0.2), head(7)), (10,)),
    "sigmoid": (nn.Sequential(nn.Linear(10, 7), nn.Sigmoid(), head(7)), (10,)),
    "tanh": (nn.Sequential(nn.Linear(10, 7), nn.Tanh(), head(7)), (10,)),
    "gelu": (nn.Sequential(nn.Linear(10, 7), nn.GELU(), head(7)), (10,)),
    "gelu_tanh": (nn.Sequential(nn.Linear(10, 7), nn.GELU("tanh"), head(7)), (10,)),
    # GELU takes the exact-rank mapping: the image input is declared (1, C, H, W), the rank
    # a convolution reading it needs there (else Core ML's validator refuses the file)
    "gelu_image": (image_case(nn.Conv2d(3, 4, 3), nn.GELU(), features=4 * 4 * 3), (3, 6, 5)),
    "silu": (image_case(nn.Conv2d(3, 4, 3), nn.SiLU(), features=4 * 6 * 6), (3, 8, 8)),
    "elu": (nn.Sequential(nn.Linear(10, 7), nn.ELU(0.7), head(7)), (10,)),
    "softplus": (nn.Sequential(nn.Linear(10, 7), nn.Softplus(), head(7)), (10,)),
    "softsign": (nn.Sequential(nn.Linear(10, 7), nn.Softsign(), head(7)), (10,)),
    "max_pool_ceil": (
        image_case(nn.MaxPool2d(3, 2, ceil_mode=True), features=3 * 4 * 4),
        (3, 8, 8),
    ),
    "max_pool_padded": (image_case(nn.MaxPool2d(3, 2, 1), features=3 * 4 * 4), (3, 8, 8)),
    "avg_pool_count_pad": (image_case(nn.AvgPool2d(3, 2, 1), features=3 * 4 * 4), (3, 8, 8)),
    "avg_pool_exclude_pad": (
        image_case(nn.AvgPool2d(3, 2, 1, count_include_pad=False), features=3 * 4 * 4),
        (3, 8, 8),
    ),
    "avg_pool_ceil_exclude_pad": (
        image_case(nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False), features=3 * 5 * 5),
        (3, 9, 9),
    ),
    "adaptive_avg_pool_1": (image_case(nn.AdaptiveAvgPool2d(1), features=3), (3, 8, 8)),
    "adaptive_avg_pool_2": (
        image_case(nn.AdaptiveAvgPool2d((2, 4)), features=3 * 2 * 4),
        (3, 8, 8),
    ),
    "mean_hw": (nn.Sequential(Lambda(lambda x: x.mean((2, 3))), head(3)), (3, 8, 8)),
    "mean_hw_keepdim": (
        image_case(Lambda(lambda x: x.mean((-1, -2), keepdim=True)), features=3),
        (3, 8, 8),
    ),
    "view_reshape": (
        nn.Sequential(
            Lambda(lambda x: x.reshape(x.shape[0], 6, 4, 8)),
            nn.Conv2d(6, 2, 1),
            Lambda(lambda x: x.view(x.shape[0], -1)),
            head(2 * 4 * 8),
        ),
        (3, 8, 8),
    ),
    "cat": (
        image_case(TwoBranch(lambda a, b: torch.cat([a, b], 1)), features=8 * 8 * 8),
        (3, 8, 8),
    ),
    "add": (image_case(TwoBranch(lambda a, b: a + b), features=4 * 8 * 8), (3, 8, 8)),
    "mul": (image_case(TwoBranch(lambda a, b: a * b), features=4 * 8 * 8), (3, 8, 8)),
    "scalar_add_mul": (
        nn.Sequential(nn.Linear(10, 7), Lambda(lambda x: x * 0.5 + 2), head(7)),
        (10,),
    ),
    "softmax_inside": (
        image_case(nn.Conv2d(3, 4, 1), nn.Softmax(1), features=4 * 8 * 8),
        (3, 8, 8),
    ),
    "dropout_identity_clone": (
        nn.Sequential(
            nn.Linear(10, 7),
            nn.Dropout(0.3),
            nn.Identity(),
            Lambda(lambda x: x.clone().contiguous()),
            head(7),
        ),
        (10,),
    ),
    # MobileNetV3, EfficientNet (issue 14): hardswish, hardsigmoid, squeeze-excitation scale
    "hardswish": (
        nn.Sequential(nn.Linear(10, 7), Lambda(lambda x: 4 * x), nn.Hardswish(), head(7)),
        (10,),
    ),
    "hardsigmoid": (
        nn.Sequential(nn.Linear(10, 7), Lambda(lambda x: 4 * x), nn.Hardsigmoid(), head(7)),
        (10,),
    ),
    "squeeze_excitation_mul": (
        image_case(
            nn.Conv2d(3, 4, 3, padding=1),
            Lambda(
                lambda x: (
                    x * torch.sigmoid(x.mean((2, 3), keepdim=True))
                    + torch.relu(x.mean((2, 3), keepdim=True)) * x
                )
            ),
            features=4 * 8 * 8,
        ),
        (3, 8, 8),
    ),
    # AlexNet, VGG at small inputs: adaptive pooling with windows of different sizes, folded
    # into the frozen Linear after it
    "adaptive_avg_pool_uneven": (
        nn.Sequential(
            nn.Conv2d(3, 4, 1),
            nn.AdaptiveAvgPool2d(7),
            nn.Flatten(),
            nn.Linear(4 * 49, 8),
            nn.ReLU(),
            head(8),
        ),
        (3, 3, 3),
    ),
    "adaptive_avg_pool_upsampling": (
        nn.Sequential(nn.AdaptiveAvgPool2d((6, 4)), nn.Flatten(), nn.Linear(3 * 24, 8), head(8)),
        (3, 2, 2),
    ),
    # torchvision's MnasNet: the in-place op names its operand "self", not "input" (issue 14)
    "dropout_inplace": (
        nn.Sequential(
            nn.Linear(10, 7), nn.ReLU(inplace=True), nn.Dropout(0.2, inplace=True), head(7)
        ),
        (10,),
    ),
    "channel_last_layer_norm_linear_scale": (
        image_case(ChannelLastBlock(), features=4 * 6 * 5),
        (4, 6, 5),
    ),
    "layer_norm_vector": (nn.Sequential(nn.Linear(10, 7), nn.LayerNorm(7), head(7)), (10,)),
    "channel_shuffle_chunk": (image_case(ChannelShuffle(), features=6 * 5 * 4), (3, 5, 4)),
    # torchvision's DenseNet: torch.cat([x], 1) of a one-tensor list (issue 14)
    "cat_of_one": (
        image_case(nn.Conv2d(3, 4, 1), Lambda(lambda x: torch.cat([x], 1)), features=4 * 8 * 8),
        (3, 8, 8),
    ),
}


def export_and_run(model: nn.Module, x: torch.Tensor, tmp_path, **kwargs) -> np.ndarray:
    path = tmp_path / "model.mlmodel"
    kwargs.setdefault("loss", nn.MSELoss())
    kwargs.setdefault("trainable", [name for name, m in model.named_modules() if m is model[-1]])
    export_torch(model, x, path, **kwargs)
    runtime = load(path)
    (name,) = [o.name for o in runtime.description.output]
    declared = tuple(runtime.description.input[0].type.multiArrayType.shape)
    feed = x.numpy().reshape((len(x),) + declared) if declared else x.numpy()  # Core ML's shape
    return np.asarray(runtime.predict({"input": feed})[name]).reshape(
        (len(x),) + tuple(model(x).shape[1:])
    )


def randomized(model: nn.Module, seed: int) -> nn.Module:
    """Batch norms get non-trivial statistics so folding is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.randn(n, generator=generator))
                module.bias.copy_(torch.randn(n, generator=generator))
    return model.eval()


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_parity(case, tmp_path):
    torch.manual_seed(0)
    model, shape = CASES[case]
    model = randomized(model, 0)
    x = torch.randn(3, *shape)
    expected = model(x).detach().numpy()
    got = export_and_run(model, x, tmp_path)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.parametrize("body", [lambda x: x / (x.abs() + 2), lambda x: x.abs(), lambda x: x / 3])
def test_abs_and_division_are_refused_outside_softsign(body, tmp_path):
    model = nn.Sequential(nn.Linear(10, 7), Lambda(body), head(7))
    with pytest.raises(UnsupportedError, match="only as part of softsign"):
        export_and_run(model, torch.randn(3, 10), tmp_path)
    assert not (tmp_path / "model.mlmodel").exists()


def test_concat_of_one_tensor_writes_no_concat_layer(tmp_path):
    """Core ML refuses a concat layer with one input ("has 1 inputs but expects at least 2")."""
    from updatable_coreml.spec_io import load_spec, neural_network

    model, shape = CASES["cat_of_one"]
    export_torch(model, torch.zeros(1, *shape), tmp_path / "m.mlmodel", loss=nn.MSELoss())
    layers = neural_network(load_spec(tmp_path / "m.mlmodel")).layers
    assert [layer.WhichOneof("layer") for layer in layers].count("concat") == 0
    assert all(len(layer.input) >= 2 for layer in layers if layer.WhichOneof("layer") == "concat")


def test_a_converter_crash_is_a_typed_error_naming_the_module(tmp_path, monkeypatch):
    """An unexpected exception inside a converter names the op and the module, and is an
    UnsupportedError, so backbone='auto' can still fall back to coremltools."""
    from updatable_coreml.exporters.torch import translate as torch_ops

    def broken(state, fx, a):
        raise KeyError("input")

    monkeypatch.setitem(torch_ops.CONVERTERS, "hardtanh", broken)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU6(), nn.Flatten(), head(4 * 8 * 8))
    with pytest.raises(UnsupportedError, match=r"'hardtanh' in module '1' \(ReLU6\).*KeyError"):
        export_torch(model, torch.zeros(1, 3, 8, 8), tmp_path / "m.mlmodel", loss=nn.MSELoss())
    assert not list(tmp_path.iterdir())


def test_log_softmax_nll_parity(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.LogSoftmax(1)
    ).eval()
    x = torch.randn(3, 3, 8, 8)
    path = tmp_path / "model.mlmodel"
    export_torch(model, x, path, loss=nn.NLLLoss(), trainable=["3"], class_labels=list("abcde"))
    out = load(path).predict({"input": x.numpy()})
    probs = np.array([[row[label] for label in "abcde"] for row in out["probabilities"]])
    assert np.abs(probs - model(x).exp().detach().numpy()).max() <= TOLERANCE
    assert list(out["classLabel"]) == ["abcde"[i] for i in model(x).argmax(1).tolist()]


def test_cross_entropy_classifier_outputs_probabilities(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    x = torch.randn(5, 10)
    path = tmp_path / "model.mlmodel"
    report = export_torch(
        model,
        x,
        path,
        loss=nn.CrossEntropyLoss(),
        trainable=["2"],
        class_labels=[0, 1, 2, 3],
        extra_class_slots=0,
    )
    out = load(path).predict({"input": x.numpy()})
    probs = np.array([[row[k] for k in range(4)] for row in out["probabilities"]])
    assert np.abs(probs - torch.softmax(model(x), 1).detach().numpy()).max() <= TOLERANCE
    assert report.trainable == ["2"]


def test_image_input_preprocessing_parity(tmp_path):
    """The app passes pixels 0..255; the image preprocessing must give the module its input."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8)).astype(np.float32)
    scale, bias = 1 / 127.5, [-1.0, -0.5, 0.0]
    path = tmp_path / "model.mlmodel"
    export_torch(
        model,
        torch.zeros(1, 3, 8, 8),
        path,
        loss=nn.MSELoss(),
        trainable=["3"],
        input_names=["image"],
        image_input={"color": "rgb", "scale": scale, "bias": bias},
    )
    runtime = load(path)
    assert runtime.description.input[0].type.WhichOneof("Type") == "imageType"
    got = runtime.predict({"image": pixels.transpose(0, 2, 3, 1)})["output"]  # images are H x W x C
    module_input = torch.from_numpy(pixels * scale + np.array(bias, np.float32).reshape(1, 3, 1, 1))
    assert np.abs(got - model(module_input).detach().numpy()).max() <= TOLERANCE


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_decomposed_program_parity(tmp_path):
    """A core-ATen program (``run_decompositions``, as some .pt2 files are) exports the same:
    addmm/mm/permute become dense layers, max_pool2d_with_indices a pooling layer."""
    torch.manual_seed(0)
    model = randomized(
        nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Flatten(),
            nn.Linear(36, 5, bias=False),
            nn.Tanh(),
            nn.Linear(5, 3),
        ),
        0,
    )
    x = torch.randn(2, 3, 8, 8)
    program = torch.export.export(model, (x,)).run_decompositions()
    path = tmp_path / "model.mlmodel"
    report = export_torch(program, x, path, loss=nn.MSELoss(), trainable=["5", "7"])
    assert report.trainable == ["5", "7"]
    got = load(path).predict({"input": x.numpy()})["output"]
    assert np.abs(got - model(x).detach().numpy()).max() <= TOLERANCE


def test_report_carries_mapping_notes_and_downgraded_refusals(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    with pytest.raises(UnsupportedError, match="weight decay"):
        export_torch(
            model,
            torch.randn(1, 4),
            tmp_path / "refused.mlmodel",
            loss=nn.CrossEntropyLoss(),
            optimizer=optimizer,
        )
    assert not list(tmp_path.iterdir())
    report = export_torch(
        model,
        torch.randn(1, 4),
        tmp_path / "model.mlmodel",
        loss=nn.CrossEntropyLoss(label_smoothing=0.1),
        optimizer=optimizer,
        allow_unsupported=True,
        lr_range=(0.01, 0.5),
    )
    assert any("momentum" in note and "Keras" in note for note in report.assumptions)
    assert sum("allow_unsupported" in w for w in report.warnings) == 2
    assert any("0.1 (allowed 0.01..0.5)" in line for line in report.training)


def test_output_names_are_readable_or_chosen(tmp_path):
    """An nn.Sequential names its output after the last child ("4", training input "4_true",
    Swift "_4True"; issue 15): the default says what the output holds, output_names chooses."""
    from updatable_coreml.spec_io import load_spec

    model = nn.Sequential(nn.Linear(10, 7), nn.ReLU(), head(7, 3))
    x = torch.zeros(1, 10)
    report = export_torch(
        model, x, tmp_path / "a.mlmodel", loss=nn.CrossEntropyLoss(), class_labels=[0, 1, 2]
    )
    assert "probabilities" in report.outputs
    assert any("'2' named 'probabilities'" in change for change in report.changes)
    report = export_torch(model, x, tmp_path / "b.mlmodel", loss=nn.MSELoss())
    spec = load_spec(tmp_path / "b.mlmodel")
    assert report.outputs == ["output"]
    assert [t.name for t in spec.description.trainingInput] == ["input", "output_true"]
    report = export_torch(
        model, x, tmp_path / "c.mlmodel", loss=nn.MSELoss(), output_names="scores"
    )
    assert report.outputs == ["scores"]
    with pytest.raises(ConfigError, match=r"--output-names \(output_names=\).*2 name"):
        export_torch(model, x, tmp_path / "d.mlmodel", loss=nn.MSELoss(), output_names=["a", "b"])


@pytest.mark.parametrize(
    "body, made_by",
    [
        (lambda x: x.permute(0, 2, 3, 1), "permute of an activation"),
        (lambda x: x.transpose(2, 3), "transpose of an activation"),
        (lambda x: x.view(len(x), 3, 2, 4, 5).transpose(2, 3), "view of an activation"),
    ],
)
def test_axes_moved_and_not_moved_back_are_refused_naming_the_op(body, made_by, tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 6, 1), Lambda(body), nn.Flatten(), head(6 * 4 * 5))
    with pytest.raises(UnsupportedError, match=made_by + ".*keep the channel-first layout"):
        export_torch(model, torch.randn(2, 3, 4, 5), tmp_path / "m.mlmodel", loss=nn.MSELoss())


def test_a_channel_shuffle_is_one_exact_permutation_layer(tmp_path):
    """A 1x1 convolution with a 0/1 weight: bit-for-bit the input channels, reordered."""
    model = ChannelShuffle().eval()
    x = torch.randn(2, 3, 5, 4)
    got = export_and_run(image_case(model, features=6 * 5 * 4), x, tmp_path)
    assert got.shape == (2, 6)
    spec = load(tmp_path / "model.mlmodel").spec
    shuffles = [layer for layer in spec.neuralNetwork.layers if layer.name == "0.view"]
    assert [layer.WhichOneof("layer") for layer in shuffles] == ["convolution"]
    weights = np.array(shuffles[0].convolution.weights.floatValue).reshape(6, 6)
    assert set(np.unique(weights)) == {0.0, 1.0} and (weights.sum(1) == 1).all()
    assert weights.argmax(1).tolist() == [0, 2, 4, 1, 3, 5]  # torch's shuffle of 3 groups
    assert not shuffles[0].convolution.hasBias


def test_layer_norm_over_spatial_axes_is_refused_naming_the_module(tmp_path):
    """LayerNorm([H, W]) of an (N, C, H, W) image normalizes each channel's plane, which the
    channel layer norm does not compute: refused, not approximated."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.LayerNorm([5, 6]), nn.Flatten(), head(4 * 5 * 6))
    with pytest.raises(UnsupportedError, match=r"layer_norm over the last 2 axes.*module '1'"):
        export_torch(model, torch.randn(2, 3, 5, 6), tmp_path / "m.mlmodel", loss=nn.MSELoss())
