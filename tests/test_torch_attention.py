"""Vision transformers through our torch frontend as one network: tokens, class token,
position embedding, ``nn.MultiheadAttention`` (and ``nn.TransformerEncoder``), a token or
the mean of tokens into a trainable head. Forward parity with torch (max abs <= 1e-4),
training parity of the head (relative to torch's step, <= 1e-4), and clear refusals for the
attention forms the ``self_attention`` op does not compute."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from test_torch_training import (  # noqa: E402
    BATCH,
    EPOCHS,
    OPTIMIZERS,
    assert_same_update,
    data,
    train_torch,
)
from updatable_coreml import validator  # noqa: E402
from updatable_coreml._proto import NeuralNetwork_pb2  # noqa: E402
from updatable_coreml.errors import UnsupportedError  # noqa: E402
from updatable_coreml.exporters.torch import export_torch  # noqa: E402
from updatable_coreml.runtime.model import load  # noqa: E402

TOLERANCE = 1e-4


def small_vit(seed: int = 0) -> nn.Module:
    """torchvision's VisionTransformer, small: 2 layers, 2 heads, 16-wide tokens, 5 classes.
    Class token, position embedding and head get random values (torchvision starts the
    class token and the head at zero, which would make every parity vacuous)."""
    from torchvision_models import torchvision_models

    torchvision_models()
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=5,
    )  # fmt: skip
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("class_token", "encoder.pos_embedding", "heads")):
                parameter.normal_(0, 0.5)
    return model.eval()


class PatchEncoder(nn.Module):
    """Patches -> tokens -> a transformer encoder -> the mean of the tokens -> a head."""

    def __init__(self, **layer_options) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, 4)
        layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, **layer_options)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.encoder(tokens).mean(dim=1))


class Attention(nn.Module):
    """One MultiheadAttention call on an image's tokens, then token ``t`` into a head.
    ``call`` chooses the arguments, so the refusal tests can vary them."""

    def __init__(self, call=None, token: int = 0, **options) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 2, 2)
        self.attention = nn.MultiheadAttention(8, 4, batch_first=True, **options)
        self.head = nn.Linear(8, 3)
        self.call = call or (lambda attention, t: attention(t, t, t)[0])
        self.token = token

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.call(self.attention, tokens)[:, self.token])


class PackedAttention(nn.Module):
    """timm's attention: one Linear for query, key and value, heads split by a reshape and a
    permute that moves the batch axis, ``unbind``, ``F.scaled_dot_product_attention``."""

    def __init__(self, channels: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.heads = heads

    def forward(self, x):
        n, s, c = x.shape
        qkv = self.qkv(x).reshape(n, s, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, s, c))


class SeparateAttention(nn.Module):
    """Three Linear layers, heads split by ``reshape(N, S, heads, d).transpose(1, 2)``, a
    custom scale; ``layout`` chooses how the heads are split."""

    def __init__(self, channels: int = 8, heads: int = 4, split=None) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(channels, channels), nn.Linear(channels, channels, bias=False)
        self.v = nn.Linear(channels, channels)
        self.heads = heads
        self.split = split or (lambda t, n, s, h: t.reshape(n, s, h, -1).transpose(1, 2))

    def forward(self, x):
        n, s, c = x.shape
        q, k, v = (self.split(f(x), n, s, self.heads) for f in (self.q, self.k, self.v))
        y = nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3)
        return y.transpose(1, 2).reshape(n, s, c)


class TinyViT(nn.Module):
    """Patches, constant tokens (a class token; DeiT adds a distillation token), position
    embeddings, a pre-norm attention block, and ``pool`` (the class token by default) into a
    head: a ViT written by hand around ``attention``."""

    def __init__(self, attention: nn.Module, extra: int = 1, first: bool = True, pool=None):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 2, 2)
        self.tokens = nn.Parameter(torch.randn(1, extra, 8))
        self.position = nn.Parameter(torch.randn(1, 12 + extra, 8))
        self.norm = nn.LayerNorm(8)
        self.attention = attention
        self.head = nn.Linear(8, 3)
        self.first = first
        self.pool = pool or (lambda tokens: tokens[:, 0])

    def forward(self, x):
        patches = self.patch(x).flatten(2).transpose(1, 2)
        extra = self.tokens.expand(len(x), -1, -1)
        tokens = torch.cat([extra, patches] if self.first else [patches, extra], dim=1)
        tokens = tokens + self.position
        tokens = tokens + self.attention(self.norm(tokens))
        return self.head(self.pool(tokens))


def run(path, x: torch.Tensor) -> np.ndarray:
    """The exported model's first output for ``x``, fed as Core ML's exact-rank (1, C, H, W)."""
    runtime = load(path)
    (name,) = [feature.name for feature in runtime.description.input]
    declared = tuple(runtime.description.input[0].type.multiArrayType.shape)
    assert declared == (1, *x.shape[1:])
    output = runtime.description.output[0].name
    return np.asarray(runtime.predict({name: x.numpy()[:, None]})[output]).reshape(len(x), -1)


@pytest.mark.parametrize(
    "case",
    [
        "vit",
        "encoder_post_norm_relu",
        "encoder_pre_norm_gelu",
        "attention_need_weights_no_bias",
        "sdpa_packed_qkv",
        "sdpa_separate_qkv_scale",
        "deit_two_tokens_mean_of_patches",
        "token_last_taken_by_negative_index",
    ],
)
def test_forward_parity(case, tmp_path):
    models = {
        "vit": lambda: (small_vit(), (3, 32, 32)),
        "encoder_post_norm_relu": lambda: (PatchEncoder(), (3, 8, 12)),
        "encoder_pre_norm_gelu": lambda: (
            PatchEncoder(norm_first=True, activation="gelu"),
            (3, 8, 12),
        ),
        "attention_need_weights_no_bias": lambda: (
            Attention(token=5, bias=False),  # need_weights=True: torch's own product path
            (3, 6, 8),
        ),
        "sdpa_packed_qkv": lambda: (TinyViT(PackedAttention()), (3, 6, 8)),
        "sdpa_separate_qkv_scale": lambda: (TinyViT(SeparateAttention()), (3, 6, 8)),
        "deit_two_tokens_mean_of_patches": lambda: (
            TinyViT(PackedAttention(), extra=2, pool=lambda t: t[:, 2:].mean(dim=1)),
            (3, 6, 8),
        ),
        "token_last_taken_by_negative_index": lambda: (
            TinyViT(PackedAttention(), first=False, pool=lambda t: t[:, -1]),
            (3, 6, 8),
        ),
    }
    torch.manual_seed(1)
    model, shape = models[case]()
    model.eval()
    x = torch.randn(4, *shape)
    path = tmp_path / "model.mlmodel"
    export_torch(
        model, x, path, loss=nn.MSELoss(), trainable=["heads.head" if case == "vit" else "head"]
    )
    expected = model(x).detach().numpy()
    assert np.abs(run(path, x) - expected).max() <= TOLERANCE
    spec = load(path).spec
    assert spec.neuralNetwork.arrayInputShapeMapping == NeuralNetwork_pb2.EXACT_ARRAY_MAPPING
    kinds = {layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers}
    assert "reshape" not in kinds  # rank 5 only; our blobs are rank 4 here
    assert validator.is_valid(validator.validate(spec))


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_vit_head_trains_like_torch(optimizer_name, tmp_path):
    model = small_vit()
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("heads")
    x, y = data(2 * BATCH, (3, 32, 32), 5)
    before = copy.deepcopy(model)
    optimizer = OPTIMIZERS[optimizer_name](model.heads.parameters())
    path = tmp_path / "vit.mlmodel"
    labels = ["a", "b", "c", "d", "e"]
    export_torch(
        before,
        x[:1],
        path,
        loss=nn.CrossEntropyLoss(),
        optimizer=OPTIMIZERS[optimizer_name](before.heads.parameters()),
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        class_labels=labels,
    )
    train_torch(model, optimizer, nn.CrossEntropyLoss(), x, y)
    runtime = load(path)
    name = runtime.description.input[0].name
    result = runtime.update({name: x.numpy()[:, None], "classLabel": np.asarray(labels)[y.numpy()]})
    assert assert_same_update(before, model, result.model, ["heads.head"]) <= 1e-4


def test_attention_is_one_written_unit_named_after_the_module(tmp_path):
    path = tmp_path / "m.mlmodel"
    export_torch(Attention(), torch.randn(2, 3, 6, 8), path, loss=nn.MSELoss(), trainable=["head"])
    layers = [layer for layer in load(path).spec.neuralNetwork.layers]
    kinds = [layer.WhichOneof("layer") for layer in layers if layer.name.startswith("attention")]
    assert kinds == ["convolution"] * 3 + ["reshapeStatic"] * 3 + [
        "batchedMatmul",
        "softmaxND",
        "batchedMatmul",
        "reshapeStatic",
        "convolution",
    ]
    assert layers[-1].name == "head" and layers[-1].isUpdatable


CAUSAL = torch.ones(12, 12).triu(1).bool()


@pytest.mark.parametrize(
    "model, words",
    [
        (Attention(lambda a, t: a(t, t.relu(), t)[0]), r"reads 2 activations"),
        (Attention(lambda a, t: a(t, t, t, need_weights=True)[1] @ t), r"weights are read"),
        (Attention(add_bias_kv=True), r"parameter 'attention.bias_k'"),
        (Attention(add_zero_attn=True), r"torch op 'cat'"),
        (Attention(lambda a, t: a(t, t, t, attn_mask=CAUSAL, need_weights=False)[0]), "mask"),
    ],
    ids=["cross", "weights_used", "bias_kv", "zero_attn", "attn_mask"],
)
def test_attention_forms_it_does_not_compute_are_refused_naming_the_module(model, words, tmp_path):
    with pytest.raises(UnsupportedError, match=r"MultiheadAttention 'attention'.*" + words):
        export_torch(
            model.eval(),
            torch.randn(2, 3, 6, 8),
            tmp_path / "m.mlmodel",
            loss=nn.MSELoss(),
            trainable=["head"],
        )


def test_time_major_attention_is_refused(tmp_path):
    class TimeMajor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 2, 2)
            self.attention = nn.MultiheadAttention(8, 2)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            tokens = self.patch(x).flatten(2).permute(2, 0, 1)  # (S, N, C)
            return self.head(self.attention(tokens, tokens, tokens)[0][0])

    with pytest.raises(UnsupportedError, match="batch axis|batch_first"):
        export_torch(
            TimeMajor().eval(), torch.randn(2, 3, 6, 8), tmp_path / "m.mlmodel",
            loss=nn.MSELoss(), trainable=["head"],
        )  # fmt: skip


def test_class_token_forms_it_cannot_hold_are_refused(tmp_path):
    class TwoImages(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 2, 2)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            tokens = self.patch(x).flatten(2).transpose(1, 2)
            return self.head(torch.cat([tokens, tokens], dim=1)[:, 0])

    with pytest.raises(UnsupportedError, match="only the tokens of one image"):
        export_torch(
            TwoImages().eval(), torch.randn(2, 3, 6, 8), tmp_path / "m.mlmodel",
            loss=nn.MSELoss(), trainable=["head"],
        )  # fmt: skip


def test_scaled_dot_product_attention_writes_a_channel_slice_per_packed_role(tmp_path):
    path = tmp_path / "m.mlmodel"
    export_torch(
        TinyViT(PackedAttention()).eval(), torch.randn(2, 3, 6, 8), path, loss=nn.MSELoss(),
        trainable=["head"],
    )  # fmt: skip
    layers = load(path).spec.neuralNetwork.layers
    slices = [layer for layer in layers if layer.WhichOneof("layer") == "slice"]
    assert [(s.slice.startIndex, s.slice.endIndex) for s in slices] == [(0, 8), (8, 16), (16, 24)]
    assert sum(layer.WhichOneof("layer") == "batchedMatmul" for layer in layers) == 2


def _interleaved(t, n, s, h):
    """Heads split with the head index last: head h, element i is channel i * heads + h."""
    return t.reshape(n, s, -1, h).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    "attention, words",
    [
        (SeparateAttention(split=_interleaved), "heads are not consecutive channels"),
        (
            SeparateAttention(
                split=lambda t, n, s, h: (
                    t.reshape(n, s, h, -1).permute(2, 0, 1, 3).relu().permute(1, 0, 2, 3)
                )
            ),
            "permute of an activation.*moves the batch axis",
        ),
    ],
    ids=["interleaved_heads", "batch_axis_moved_then_computed_on"],
)
def test_attention_inputs_it_cannot_hold_are_refused(attention, words, tmp_path):
    with pytest.raises(UnsupportedError, match=words):
        export_torch(
            TinyViT(attention).eval(), torch.randn(2, 3, 6, 8), tmp_path / "m.mlmodel",
            loss=nn.MSELoss(), trainable=["head"],
        )  # fmt: skip


def test_causal_attention_is_refused(tmp_path):
    class Causal(SeparateAttention):
        def forward(self, x):
            n, s, c = x.shape
            q, k, v = (self.split(f(x), n, s, self.heads) for f in (self.q, self.k, self.v))
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            return y.transpose(1, 2).reshape(n, s, c)

    with pytest.raises(UnsupportedError, match="mask, dropout or causal"):
        export_torch(
            TinyViT(Causal()).eval(), torch.randn(2, 3, 6, 8), tmp_path / "m.mlmodel",
            loss=nn.MSELoss(), trainable=["head"],
        )  # fmt: skip


def test_packed_attention_vit_head_trains_like_torch(tmp_path):
    torch.manual_seed(0)
    model = TinyViT(PackedAttention()).eval()
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("head")
    x, y = data(2 * BATCH, (3, 6, 8), 3)
    before = copy.deepcopy(model)
    path = tmp_path / "m.mlmodel"
    export_torch(
        before, x[:1], path, loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(before.head.parameters(), lr=0.1), batch_size=BATCH,
        epochs=EPOCHS, shuffle=False, class_labels=[0, 1, 2],
    )  # fmt: skip
    train_torch(
        model, torch.optim.SGD(model.head.parameters(), lr=0.1), nn.CrossEntropyLoss(), x, y
    )
    runtime = load(path)
    result = runtime.update({"x": x.numpy()[:, None], "classLabel": y.numpy()})
    assert assert_same_update(before, model, result.model, ["head"]) <= 1e-4
