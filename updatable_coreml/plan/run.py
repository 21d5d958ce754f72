"""Evaluate user x candidate runs with the reference runtime, the frozen part computed once.

The runtime already caches the frozen prefix inside one update (``runtime.update``'s
``FrontierSource``: the layers no updatable layer feeds run once per example). A plan goes one
step further: it runs that prefix once per example for the whole plan (``make_plan`` says which
layers and which blobs), and trains a *head model*, the same network without its prefix, whose
inputs are those blobs. Training the head gives the same weights as training the whole model
(same blobs in, same layers, same update task); ``verify`` checks it on the written model.

Every job is a pure function of its arguments (the user's draws come from the plan seed), so
the results do not depend on the joblib backend or on how jobs are spread over workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._proto import FeatureTypes_pb2, Model_pb2
from ..errors import ConfigError, ModelFileError
from .candidates import Candidate
from .users import SimUser

CHUNK = 256


# -- the head models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """The trainable part of the network for one choice of trainable layers."""

    trainable: str
    spec: bytes  # head model: inputs are the frontier blobs
    frontier: tuple  # blob names, in the head's input order
    features: dict  # blob name -> (N, ...) array for every pooled example
    prefix_macs: int  # multiply-adds of the frozen prefix, per example
    forward_macs: int  # of the head's layers, per example
    train_macs: int  # forward + gradients of one training example


def layer_macs(layer, out_shape: tuple) -> int:
    """Multiply-adds of a convolution or inner-product layer for one example (other layers
    are counted as free: they are elementwise or cheap next to these)."""
    kind = layer.WhichOneof("layer")
    if kind == "innerProduct":
        p = layer.innerProduct
        rows = int(np.prod(out_shape)) // max(1, int(p.outputChannels))
        return int(p.inputChannels) * int(p.outputChannels) * max(1, rows)
    if kind == "convolution":
        p = layer.convolution
        size = list(p.kernelSize) or [3, 3]
        return int(np.prod(out_shape)) * int(p.kernelChannels) * int(np.prod(size))
    return 0


def _with_trainable(spec: Model_pb2.Model, trainable: str) -> Model_pb2.Model:
    """A copy of the network spec where only the last updatable layer trains (``last``)."""
    from ..spec_io import neural_network

    copy = Model_pb2.Model()
    copy.CopyFrom(spec)
    if trainable == "last":
        layers = neural_network(copy).layers
        updatable = [i for i, layer in enumerate(layers) if layer.isUpdatable]
        for i in updatable[:-1]:
            layers[i].isUpdatable = False
    return copy


def _network_spec(model) -> Model_pb2.Model:
    return model.trainable().spec


def build_heads(model, inputs: np.ndarray, trainable: Sequence[str], assumptions) -> dict:
    """One ``Head`` per trainable choice; features of every row of ``inputs`` computed once."""
    from ..runtime import load
    from ..runtime.features import batch_features
    from ..runtime.update import make_plan, read_training_setup
    from ..spec_io import neural_network

    network = model.trainable()
    description = single_input(model)
    input_name = description.name
    heads = {}
    for choice in trainable:
        spec = _with_trainable(network.spec, choice)
        sub = load(spec).trainable()
        setup = read_training_setup(sub, assumptions)
        plan = make_plan(sub, setup)
        prefix = set(plan.prefix)
        parts: dict[str, list] = {name: [] for name in plan.frontier}
        shapes: dict[str, tuple] = {}
        for start in range(0, len(inputs), CHUNK):
            # images (H, W, C as decoded) become the model's (C, H, W) as predict() makes them
            chunk, _, _ = batch_features(
                [description], {input_name: inputs[start : start + CHUNK]}, batched=True
            )
            batch = model.training_features(chunk)
            blobs = sub.input_blobs(batch)
            sub.run(blobs, plan.prefix)
            for name in plan.frontier:
                parts[name].append(blobs[name])
            if start == 0:  # blob shapes of one example, for the multiply-add counts
                one = sub.run(
                    {k: v[:1] for k, v in sub.input_blobs(batch).items()}, range(len(sub.layers))
                )
                shapes = {k: tuple(v.shape[1:]) for k, v in one.items()}
        features = {name: np.concatenate(values) for name, values in parts.items()}
        layers = neural_network(spec).layers
        macs = [layer_macs(layer, shapes.get(layer.output[0], ())) for layer in layers]
        trained = {k[0] for k in plan.keys}
        first = min(plan.section)
        train = sum(macs[i] * (1 + (i in trained) + (i != first)) for i in plan.section)
        heads[choice] = Head(
            choice,
            head_spec(spec, prefix, features, setup).SerializeToString(),
            tuple(plan.frontier),
            features,
            sum(macs[i] for i in plan.prefix),
            sum(macs[i] for i in range(len(layers)) if i not in prefix),
            train,
        )
    return heads


def single_input(model) -> Any:
    """The model's one prediction input (its FeatureDescription); plan feeds only one."""
    inputs = list(model.description.input)
    if len(inputs) != 1:
        names = ", ".join(d.name for d in inputs)
        raise ConfigError(f"plan needs a model with one input; this one takes {names}")
    return inputs[0]


def head_spec(spec: Model_pb2.Model, prefix: set, features: dict, setup) -> Model_pb2.Model:
    """The network without its frozen prefix, reading the prefix's output blobs as inputs."""
    from ..spec_io import model_type, neural_network

    head = Model_pb2.Model()
    head.CopyFrom(spec)
    nn = neural_network(head)
    kept = [layer for i, layer in enumerate(nn.layers) if i not in prefix]
    nn.ClearField("layers")
    nn.layers.extend(kept)
    if model_type(head) != "neuralNetworkClassifier":
        raise ModelFileError(
            "plan compares classifiers: the model must be a neural network "
            "classifier (or a pipeline ending in one)"
        )
    nn.ClearField("preprocessing")
    description = head.description
    targets = [
        d for d in description.trainingInput if d.name not in {i.name for i in description.input}
    ]
    del description.input[:]
    new_inputs = []
    for name, values in features.items():
        item = description.input.add()
        item.name = name
        item.type.multiArrayType.dataType = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
        item.type.multiArrayType.shape.extend(int(v) for v in values.shape[1:])
        new_inputs.append(item)
    kept_targets = []
    for target in targets:
        copy = type(target)()
        copy.CopyFrom(target)
        kept_targets.append(copy)
    del description.trainingInput[:]
    for item in new_inputs:
        description.trainingInput.add().CopyFrom(item)
    for target in kept_targets:
        description.trainingInput.add().CopyFrom(target)
    widen_update_ranges(nn)
    return head


def widen_update_ranges(nn) -> None:
    """Let the head model accept any epochs, batch size and learning rate: the plan explores
    beyond what the shipped model allows (the head is never written)."""
    params = nn.updateParams
    optimizer = getattr(params.optimizer, params.optimizer.WhichOneof("OptimizerType"))
    for message, low, high in (
        (params.epochs, 1, 1 << 30),
        (optimizer.miniBatchSize, 1, 1 << 30),
        (optimizer.learningRate, 0.0, 1e30),
    ):
        allowed = message.WhichOneof("AllowedValues")
        if allowed:
            message.ClearField(allowed)
        message.range.minValue = low
        message.range.maxValue = high


# -- one job ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What one worker needs: one user's rows and the shared held-out rows, already as
    features of every head, plus the candidates to run on them."""

    user: SimUser
    position: int
    labels: np.ndarray  # the user's labels (rows of user.index)
    features: dict  # trainable -> {blob: (n_user, ...)}
    shared_labels: np.ndarray
    shared_features: dict  # trainable -> {blob: (n_shared, ...)}
    heads: dict  # trainable -> head spec bytes
    candidates: tuple  # (index, Candidate)
    label_name: str
    assumptions: Any
    replay_labels: np.ndarray  # the replay store's labels, in store order
    replay_features: dict  # trainable -> {blob: (store size, ...)}


_MODELS: dict = {}


def _model(spec: bytes):
    """A process-wide cache of loaded head models (loading parses the protobuf)."""
    from ..runtime import load

    key = hashlib.sha256(spec).hexdigest()
    if key not in _MODELS:
        if len(_MODELS) > 16:
            _MODELS.clear()
        _MODELS[key] = load(spec)
    return _MODELS[key]


def _accuracy(predicted, truth: np.ndarray) -> float | None:
    if len(truth) == 0:
        return None
    return float(np.mean(np.asarray(predicted).astype(str) == truth.astype(str)))


def _knn_model(feature: str, dims: int, candidate: Candidate, integer: bool, label_name: str):
    from ..knn import knn_spec
    from ..runtime import load

    spec = knn_spec(
        feature,
        dims,
        k=candidate.k or 1,
        k_range=None,
        weighting=candidate.weighting or "uniform",
        labels="int" if integer else "string",
        label_name=label_name,
    )
    spec.isUpdatable = True
    return load(spec)


def run_job(job: Job) -> list[dict]:
    """Every candidate x shots count for one user: accuracy on the user's held-out examples
    and on the shared examples of the classes the user did not teach."""
    rows = []
    user = job.user
    mine = np.isin(job.shared_labels.astype(str), np.asarray(user.classes).astype(str))
    rest = ~mine
    held = user.held_out
    for index, candidate in job.candidates:
        trainable = candidate.trainable if candidate.kind == "head" else "last"
        feats = job.features[trainable]
        shared = job.shared_features[trainable]
        for shots, drawn in sorted(user.draws.items()):
            train = {name: values[drawn] for name, values in feats.items()}
            targets = job.labels[drawn]
            if candidate.replay:
                # A head trains on the user's examples, then the app's stored ones; a k-NN
                # ships holding the stored ones (written seeded with them) and adds the user's.
                stored = job.replay_features[trainable]
                kept = job.replay_labels[: candidate.replay]

                def joined(store: np.ndarray, own: np.ndarray, knn: bool = candidate.kind == "knn"):
                    return np.concatenate([store, own] if knn else [own, store])

                train = {
                    name: joined(stored[name][: candidate.replay], values)
                    for name, values in train.items()
                }
                targets = joined(kept, targets)
            if candidate.kind == "knn":
                ((name, values),) = train.items()
                flat = values.reshape(len(values), -1)
                integer = job.labels.dtype.kind in "iu"
                model = _knn_model(name, flat.shape[1], candidate, integer, job.label_name)
                model = model.update({name: flat, job.label_name: targets}).model
            else:
                model = _model(job.heads[trainable])
                if candidate.kind == "head":
                    parameters = {
                        "epochs": candidate.epochs,
                        "learningRate": candidate.lr,
                        "miniBatchSize": candidate.batch,
                    }
                    train[job.label_name] = targets
                    model = model.update(
                        train, parameters=parameters, assumptions=job.assumptions
                    ).model

            def predict(batch: dict, model: Any = model, knn: bool = candidate.kind == "knn"):
                if knn:  # the k-NN reads flat feature vectors
                    batch = {k: v.reshape(len(v), -1) for k, v in batch.items()}
                return model.predict(batch)[job.label_name]

            user_acc = _accuracy(predict({n: v[held] for n, v in feats.items()}), job.labels[held])
            rest_acc = (
                _accuracy(predict({n: v[rest] for n, v in shared.items()}), job.shared_labels[rest])
                if rest.any()
                else None
            )
            rows.append(
                {
                    "user": user.name,
                    "user_position": job.position,
                    "candidate": index,
                    "shots": int(shots),
                    "examples": int(len(drawn)),
                    "user_accuracy": user_acc,
                    "rest_accuracy": rest_acc,
                }
            )
    return rows


def run_jobs(
    jobs: list[Job], n_jobs: int = -1, backend: str | None = None, verbose: int = 0
) -> list[dict]:
    """Run ``jobs`` with joblib (all cores by default; ``backend`` names any registered joblib
    backend, e.g. ``dask`` with a ``distributed.Client`` running); rows in a fixed order."""
    if n_jobs == 1 and backend is None:
        results = [run_job(job) for job in jobs]
    else:
        import joblib

        with joblib.parallel_config(backend=backend or "loky", n_jobs=n_jobs):
            results = joblib.Parallel(verbose=verbose)(joblib.delayed(run_job)(job) for job in jobs)
    rows = [row for result in results for row in result]
    rows.sort(key=lambda r: (r["candidate"], r["user_position"], r["shots"]))
    return rows
