"""Keras sequence models: Embedding and LSTM exported, run and trained through the runtime.

Inputs travel in Core ML's rank-5 layout: an input declared ``[C]`` takes one example as
``[Seq, 1, C]`` (token ids: ``[Seq, 1, 1]``), a batch adds a leading axis. Forward parity is
max abs diff <= 1e-4 against ``model.predict``; training parity is <= 1e-4 relative against
``train_on_batch`` on the same mini-batches (SGD with momentum, shuffle off).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_helpers import TOLERANCE, randomize, relative_diff
from updatable_coreml.errors import NotUpdatableError, UnsupportedError
from updatable_coreml.exporters.keras import export_keras
from updatable_coreml.runtime import load
from updatable_coreml.spec_io import neural_network

L = keras.layers
VOCAB, STEPS, BATCH, BATCHES = 12, 6, 4, 3
GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")


def core_ml_layout(x: np.ndarray) -> np.ndarray:
    """Keras (B, steps[, features]) -> Core ML's per-example [Seq, 1, C], batched."""
    x = x.reshape(x.shape[0], x.shape[1], -1)
    return x[:, :, None, :]


def token_classifier(lstm_trainable: bool) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((STEPS,), dtype="int32"),
            L.Embedding(VOCAB, 5, name="embed", trainable=False),
            L.LSTM(4, name="lstm", trainable=lstm_trainable),
            L.Dense(3, activation="softmax", name="head"),
        ]
    )
    return randomize(model, seed=1, scale=0.5)


def sequence_regressor() -> keras.Model:
    """Stacked LSTMs on float sequences, every activation Core ML's LSTM takes from Keras."""
    model = keras.Sequential(
        [
            keras.Input((STEPS, 3)),
            L.LSTM(5, return_sequences=True, use_bias=False, name="lstm_1"),
            L.LSTM(4, activation="sigmoid", recurrent_activation="tanh", name="lstm_2"),
            L.Dense(2, activation="tanh", name="head"),
        ]
    )
    for layer in model.layers[:2]:
        layer.trainable = False
    return randomize(model, seed=2, scale=0.6)


def probabilities(path, x: np.ndarray) -> np.ndarray:
    model = load(path)
    out = model.predict({model.description.input[0].name: x})
    rows = out[model.description.predictedProbabilitiesName]
    return np.array([[row[label] for label in model.class_labels()] for row in rows])


def export(model, path, **options):
    options.setdefault("optimizer", keras.optimizers.SGD(0.1, momentum=0.9))
    return export_keras(model, path, batch_size=BATCH, epochs=1, shuffle=False, **options)


# -- forward --------------------------------------------------------------------------------


def test_embedding_lstm_classifier_predicts_like_keras(tmp_path):
    model = token_classifier(lstm_trainable=False)
    path = tmp_path / "tokens.mlmodel"
    report = export(
        model, path, loss="sparse_categorical_crossentropy", class_labels=["a", "b", "c"]
    )
    tokens = np.random.default_rng(0).integers(0, VOCAB, (8, STEPS))
    got = probabilities(path, core_ml_layout(tokens))
    assert np.abs(got - model.predict(tokens, verbose=0)).max() <= TOLERANCE
    runtime = load(path)
    name = runtime.description.input[0].name
    single = runtime.predict({name: core_ml_layout(tokens)[0]})
    assert single["classLabel"] == ["a", "b", "c"][int(got[0].argmax())]
    assert report.inputs == {name: [1]}
    assert any("LSTM_BEFORE_UPDATABLE" in finding for finding in report.findings)


def test_stacked_lstms_on_float_sequences_predict_like_keras(tmp_path):
    model = sequence_regressor()
    path = tmp_path / "series.mlmodel"
    export(model, path, loss="mse")
    x = np.random.default_rng(1).normal(size=(5, STEPS, 3)).astype(np.float32)
    runtime = load(path)
    got = runtime.predict({runtime.description.input[0].name: core_ml_layout(x)})["head"]
    assert np.abs(got - model.predict(x, verbose=0)).max() <= TOLERANCE
    description = runtime.description.input[0]
    assert list(description.type.multiArrayType.shape) == [3]
    assert f"[{STEPS}, 1, 3]" in description.shortDescription


def test_a_sequence_output_comes_back_in_core_ml_layout(tmp_path):
    model = randomize(
        keras.Sequential([keras.Input((STEPS, 3)), L.LSTM(4, return_sequences=True, name="lstm")]),
        seed=3,
    )
    path = tmp_path / "seq.mlmodel"
    export(model, path, loss="mse")
    x = np.random.default_rng(2).normal(size=(2, STEPS, 3)).astype(np.float32)
    runtime = load(path)
    got = runtime.predict({runtime.description.input[0].name: core_ml_layout(x)})["lstm"]
    assert got.shape == (2, STEPS, 1, 4)
    assert np.abs(got - core_ml_layout(model.predict(x, verbose=0))).max() <= TOLERANCE


# -- training -------------------------------------------------------------------------------


def lstm_weights_core_ml(spec, name: str) -> np.ndarray:
    layer = next(lyr for lyr in neural_network(spec).layers if lyr.name == name)
    params = layer.uniDirectionalLSTM.weightParams
    return np.concatenate(
        [
            np.asarray(getattr(params, g + kind).floatValue)
            for kind in ("WeightMatrix", "RecursionMatrix", "BiasVector")
            for g in GATES
        ]
    )


def lstm_weights_keras(layer) -> np.ndarray:
    """A Keras LSTM's kernel, recurrent kernel and bias in the order the spec stores them."""
    kernel, recurrent, bias = layer.get_weights()
    return np.concatenate(
        [
            np.concatenate([part.T.ravel() for part in np.split(w, 4, axis=-1)])
            for w in (kernel, recurrent, bias)
        ]
    )


def dense_weights(spec, name: str) -> np.ndarray:
    layer = next(lyr for lyr in neural_network(spec).layers if lyr.name == name)
    return np.concatenate(
        [layer.innerProduct.weights.floatValue, layer.innerProduct.bias.floatValue]
    )


def keras_dense(layer) -> np.ndarray:
    kernel, bias = layer.get_weights()
    return np.concatenate([kernel.T.ravel(), bias])


def train_both(model, x, y, path, **options):
    """Update the exported file through the runtime, and Keras on the same mini-batches."""
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        run_eagerly=True,
        loss=options.pop("loss"),
    )
    report = export(model, path, optimizer=None, **options)
    runtime = load(path)
    result = runtime.update(
        {
            runtime.description.input[0].name: core_ml_layout(x),
            runtime.description.trainingInput[-1].name: y,
        }
    )
    for step in range(BATCHES):
        rows = slice(step * BATCH, (step + 1) * BATCH)
        model.train_on_batch(x[rows], y[rows])
    return report, runtime.spec, result.model.spec


def test_training_an_lstm_and_its_head_matches_keras(tmp_path):
    model = token_classifier(lstm_trainable=True)
    before = lstm_weights_keras(model.get_layer("lstm"))
    rng = np.random.default_rng(4)
    tokens = rng.integers(0, VOCAB, (BATCH * BATCHES, STEPS))
    labels = rng.integers(0, 3, BATCH * BATCHES)
    report, original, trained = train_both(
        model,
        tokens,
        labels,
        tmp_path / "m.mlmodel",
        loss="sparse_categorical_crossentropy",
        class_labels=[0, 1, 2],
    )
    assert report.trainable == ["lstm", "head"]
    assert any("EXPERIMENTAL_LSTM_UPDATE" in f for f in report.findings)
    assert any("experimental" in w for w in report.warnings)
    got, want = lstm_weights_core_ml(trained, "lstm"), lstm_weights_keras(model.get_layer("lstm"))
    assert relative_diff(got, want) <= 1e-4
    assert np.abs(want - before).max() > 100 * np.abs(got - want).max(), "LSTM barely trained"
    assert (
        relative_diff(dense_weights(trained, "head"), keras_dense(model.get_layer("head"))) <= 1e-4
    )
    embedding = lambda spec: next(lyr for lyr in neural_network(spec).layers if lyr.name == "embed")  # noqa: E731
    assert embedding(trained) == embedding(original)


def test_training_a_head_behind_frozen_lstms_matches_keras(tmp_path):
    model = sequence_regressor()
    frozen = {n: model.get_layer(n).get_weights() for n in ("lstm_1", "lstm_2")}
    rng = np.random.default_rng(5)
    x = rng.normal(size=(BATCH * BATCHES, STEPS, 3)).astype(np.float32)
    y = rng.uniform(-0.8, 0.8, (BATCH * BATCHES, 2)).astype(np.float32)
    report, original, trained = train_both(model, x, y, tmp_path / "r.mlmodel", loss="mse")
    assert report.trainable == ["head"]
    assert (
        relative_diff(dense_weights(trained, "head"), keras_dense(model.get_layer("head"))) <= 1e-4
    )
    assert np.array_equal(
        lstm_weights_core_ml(trained, "lstm_2"), lstm_weights_core_ml(original, "lstm_2")
    )
    for name, weights in frozen.items():
        for old, new in zip(weights, model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(old, new)


# -- refusals -------------------------------------------------------------------------------


def test_a_trainable_embedding_is_refused_by_name(tmp_path):
    model = token_classifier(lstm_trainable=True)
    model.get_layer("embed").trainable = True
    with pytest.raises(NotUpdatableError, match="'embed'.*freeze it"):
        export(
            model,
            tmp_path / "x.mlmodel",
            loss="sparse_categorical_crossentropy",
            class_labels=[0, 1, 2],
        )
    assert not (tmp_path / "x.mlmodel").exists()


def test_an_lstm_passes_gradients_to_a_trainable_lstm_before_it(tmp_path):
    """Apple's released validators list uniDirectionalLSTM in isLayerSupportedForBackprop
    from coremltools 5.0b1 on (issue 13), so two trainable LSTMs in a row are valid."""
    from updatable_coreml.validator import is_valid, validate

    model = sequence_regressor()
    model.get_layer("lstm_1").trainable = True
    export(model, tmp_path / "x.mlmodel", loss="mse")
    findings = validate(tmp_path / "x.mlmodel")
    assert is_valid(findings)
    assert "lstm_1" in [f.layer for f in findings if f.code == "EXPERIMENTAL_LSTM_UPDATE"]


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"stateful": True}, "zero state"),
        ({"go_backwards": True}, "reverse the sequence"),
        ({"activation": "relu"}, "clips recurrent .LSTM. pre-activations"),
        ({"recurrent_activation": "hard_sigmoid"}, "only as 0.2 . x . 0.5"),
        ({"dropout": 0.2}, "Core ML has no dropout"),
    ],
)
def test_lstm_options_core_ml_cannot_carry_are_refused_with_the_reason(options, reason, tmp_path):
    batch = {"batch_size": 2} if options.get("stateful") else {}
    model = keras.Sequential(
        [
            keras.Input((STEPS, 3), **batch),
            L.LSTM(4, name="lstm", **options),
            L.Dense(2, name="head"),
        ]
    )
    with pytest.raises(UnsupportedError, match=f"'lstm'.*{reason}"):
        export(model, tmp_path / "x.mlmodel", loss="mse")


def test_masking_is_refused_and_dropout_becomes_a_warning_with_allow_unsupported(tmp_path):
    def model(mask_zero: bool) -> keras.Model:
        return keras.Sequential(
            [
                keras.Input((STEPS,), dtype="int32"),
                L.Embedding(VOCAB, 3, mask_zero=mask_zero, trainable=False, name="embed"),
                L.LSTM(4, recurrent_dropout=0.1, name="lstm"),
                L.Dense(2, activation="softmax", name="head"),
            ]
        )

    options = {"loss": "sparse_categorical_crossentropy", "allow_unsupported": True}
    with pytest.raises(UnsupportedError, match="'embed'.*masking"):
        export(model(True), tmp_path / "x.mlmodel", **options)
    report = export(model(False), tmp_path / "x.mlmodel", **options)
    assert any("recurrent_dropout=0.1" in w for w in report.warnings)


# -- GRU, SimpleRNN, Bidirectional(LSTM): frozen recurrent layers (issue 14) -----------------


def frozen(layers: list, inputs=(STEPS, 3), dtype="float32", seed: int = 6) -> keras.Model:
    """A model whose recurrent layers are frozen and whose last layer (the head) trains."""
    model = keras.Sequential([keras.Input(inputs, dtype=dtype), *layers])
    for layer in model.layers[:-1]:
        layer.trainable = False
    return randomize(model, seed=seed, scale=0.6)


RECURRENT_CASES = {
    "gru_text": lambda: frozen(
        [
            L.Embedding(VOCAB, 5, name="embed"),
            L.GRU(4, reset_after=False, return_sequences=True, name="gru_1"),
            L.GRU(3, reset_after=False, activation="sigmoid", use_bias=False, name="gru_2"),
            L.Dense(3, activation="softmax", name="head"),
        ],
        inputs=(STEPS,),
        dtype="int32",
    ),
    "gru_reset_after_text": lambda: frozen(
        [
            L.Embedding(VOCAB, 5, name="embed"),
            L.GRU(4, return_sequences=True, name="gru_1"),
            L.GRU(3, recurrent_activation="hard_sigmoid", activation="relu", name="gru_2"),
            L.Dense(3, activation="softmax", name="head"),
        ],
        inputs=(STEPS,),
        dtype="int32",
    ),
    "gru_reset_after_bias_free": lambda: frozen(
        [
            L.GRU(4, use_bias=False, name="gru"),
            L.Dense(3, activation="softmax", name="head"),
        ]
    ),
    "bidirectional_gru_text": lambda: frozen(
        [
            L.Embedding(VOCAB, 5, name="embed"),
            L.Bidirectional(L.GRU(4, return_sequences=True), name="bi_1"),
            L.Bidirectional(L.GRU(3, use_bias=False), name="bi_2"),
            L.Dense(3, activation="softmax", name="head"),
        ],
        inputs=(STEPS,),
        dtype="int32",
    ),
    "simple_rnn": lambda: frozen(
        [
            L.SimpleRNN(5, return_sequences=True, use_bias=False, name="rnn_1"),
            L.SimpleRNN(4, activation="sigmoid", name="rnn_2"),
            L.Dense(3, activation="softmax", name="head"),
        ]
    ),
    "bidirectional_lstm_text": lambda: frozen(
        [
            L.Embedding(VOCAB, 5, name="embed"),
            L.Bidirectional(L.LSTM(4, return_sequences=True), name="bi_1"),
            L.Bidirectional(L.LSTM(3, recurrent_activation="tanh", use_bias=False), name="bi_2"),
            L.Dense(3, activation="softmax", name="head"),
        ],
        inputs=(STEPS,),
        dtype="int32",
    ),
}


def _inputs(model, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keras inputs and their Core ML layout for ``model`` (token ids or float sequences)."""
    rng = np.random.default_rng(seed)
    if model.inputs[0].dtype == "int32":
        x = rng.integers(0, VOCAB, (rows, STEPS))
        return x, core_ml_layout(x).astype(np.float32)
    x = rng.normal(size=(rows, STEPS, 3)).astype(np.float32)
    return x, core_ml_layout(x)


@pytest.mark.parametrize("case", sorted(RECURRENT_CASES))
def test_frozen_recurrent_layers_predict_like_keras(case, tmp_path):
    from updatable_coreml.validator import is_valid, validate

    model = RECURRENT_CASES[case]()
    path = tmp_path / "m.mlmodel"
    report = export(
        model, path, loss="sparse_categorical_crossentropy", class_labels=["a", "b", "c"]
    )
    assert report.trainable == ["head"]
    unrolled = [w for w in report.warnings if "unrolled over its" in w]
    cells = [getattr(layer, "forward_layer", layer) for layer in model.layers]
    assert len(unrolled) == sum(isinstance(c, L.GRU) and c.reset_after for c in cells)
    x, core_ml = _inputs(model, 8, seed=7)
    got = probabilities(path, core_ml)
    assert np.abs(got - model.predict(x, verbose=0)).max() <= TOLERANCE
    assert is_valid(validate(path))


def test_a_frozen_sequence_output_comes_back_per_step(tmp_path):
    """Every step of a bidirectional LSTM and a GRU (Core ML's [forward, backward] pairing),
    read by a trainable LSTM that returns every step."""
    inputs = keras.Input((STEPS, 3))
    bi = L.Bidirectional(L.LSTM(3, return_sequences=True), name="bi")(inputs)
    gru = L.GRU(4, reset_after=False, return_sequences=True, name="gru")(bi)
    out = L.LSTM(2, return_sequences=True, name="lstm")(gru)
    model = randomize(keras.Model(inputs, out), seed=8, scale=0.6)
    path = tmp_path / "seq.mlmodel"
    export(model, path, loss="mse", trainable=["lstm"])
    x, core_ml = _inputs(model, 3, seed=9)
    runtime = load(path)
    got = runtime.predict({runtime.description.input[0].name: core_ml})["lstm"]
    assert np.abs(got - core_ml_layout(model.predict(x, verbose=0))).max() <= TOLERANCE


def test_training_a_head_behind_a_frozen_gru_matches_keras(tmp_path):
    model = RECURRENT_CASES["gru_text"]()
    rng = np.random.default_rng(10)
    tokens = rng.integers(0, VOCAB, (BATCH * BATCHES, STEPS))
    labels = rng.integers(0, 3, BATCH * BATCHES)
    before = dense_weights(
        export(
            model,
            tmp_path / "before.mlmodel",
            loss="sparse_categorical_crossentropy",
            class_labels=[0, 1, 2],
        )
        and load(tmp_path / "before.mlmodel").spec,
        "head",
    )
    report, original, trained = train_both(
        model,
        tokens,
        labels,
        tmp_path / "m.mlmodel",
        loss="sparse_categorical_crossentropy",
        class_labels=[0, 1, 2],
    )
    assert report.trainable == ["head"]
    want = keras_dense(model.get_layer("head"))
    got = dense_weights(trained, "head")
    assert relative_diff(got, want) <= 1e-4
    assert np.abs(want - before).max() > 100 * np.abs(got - want).max(), "head barely trained"
    gru = lambda spec: next(lyr for lyr in neural_network(spec).layers if lyr.name == "gru_1")  # noqa: E731
    assert gru(trained) == gru(original)


@pytest.mark.parametrize(
    "layer, reason",
    [
        (L.GRU(4, activation="gelu", name="rnn"), "'rnn'.*no single Core ML activation"),
        (L.GRU(4, reset_after=False, go_backwards=True, name="rnn"), "'rnn'.*reverse"),
        (L.SimpleRNN(4, activation="relu", name="rnn"), "'rnn'.*clips recurrent"),
        (L.Bidirectional(L.GRU(4, reset_after=False), name="rnn"), "'rnn'.*biDirectionalLSTM"),
        (L.Bidirectional(L.LSTM(4), merge_mode="sum", name="rnn"), "'rnn'.*merge_mode='sum'"),
    ],
    ids=["reset_after_gelu", "go_backwards", "relu", "bidirectional_gru", "merge_sum"],
)
def test_recurrent_options_core_ml_cannot_carry_are_refused(layer, reason, tmp_path):
    model = keras.Sequential([keras.Input((STEPS, 3)), layer, L.Dense(2, name="head")])
    with pytest.raises(UnsupportedError, match=reason):
        export(model, tmp_path / "x.mlmodel", loss="mse", trainable=["head"])
    assert not (tmp_path / "x.mlmodel").exists()


@pytest.mark.parametrize("reset_after", [False, True])
def test_a_trainable_gru_is_refused_by_name(reset_after, tmp_path):
    model = keras.Sequential(
        [
            keras.Input((STEPS, 3)),
            L.GRU(4, reset_after=reset_after, name="gru"),
            L.Dense(2, name="head"),
        ]
    )
    with pytest.raises(NotUpdatableError, match="'gru'.*freeze"):
        export(model, tmp_path / "x.mlmodel", loss="mse")


def per_step_dense_classifier() -> keras.Model:
    """Embedding -> Dense on every step (frozen) -> LSTM (frozen) -> Dense head."""
    model = keras.Sequential(
        [
            keras.Input((STEPS,)),
            L.Embedding(VOCAB, 4, name="embed"),
            L.Dense(5, activation="tanh", name="proj"),
            L.LSTM(3, name="lstm"),
            L.Dense(3, activation="softmax", name="head"),
        ]
    )
    for layer in model.layers[:-1]:
        layer.trainable = False
    return randomize(model, seed=4, scale=0.6)


def test_a_dense_on_every_step_predicts_like_keras(tmp_path):
    """Keras applies a Dense to a (steps, C) tensor step by step; Core ML's innerProduct does
    the same on a rank-5 sequence blob ((Seq * B, C) rows, NeuralNetwork.proto)."""
    model = per_step_dense_classifier()
    path = tmp_path / "per_step.mlmodel"
    export(model, path, loss="sparse_categorical_crossentropy", class_labels=["a", "b", "c"])
    layers = {layer.name: layer for layer in neural_network(load(path).spec).layers}
    assert layers["proj"].WhichOneof("layer") == "innerProduct"
    assert not layers["proj"].isUpdatable
    tokens = np.random.default_rng(3).integers(0, VOCAB, (8, STEPS))
    got = probabilities(path, core_ml_layout(tokens))
    assert np.abs(got - model.predict(tokens, verbose=0)).max() <= TOLERANCE


def test_a_trainable_dense_on_every_step_is_refused_by_name(tmp_path):
    model = per_step_dense_classifier()
    model.get_layer("proj").trainable = True
    with pytest.raises(NotUpdatableError, match="'proj'.*every step.*freeze it"):
        export(model, tmp_path / "x.mlmodel", loss="sparse_categorical_crossentropy")
    assert not (tmp_path / "x.mlmodel").exists()
