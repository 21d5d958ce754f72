"""The k-nearest-neighbors classifier of the reference runtime: predict and update.

What Apple documents (``NearestNeighbors.proto``) and we follow exactly: the distance is the
squared Euclidean distance; the ``k`` nearest stored examples vote; with inverse-distance
weighting the label with the highest sum of ``1 / distance`` wins; the default label answers
when the model holds no example; an update appends the examples (feature vector + label).
The kd-tree index is a real kd-tree (split on the widest dimension, ``leafSize`` examples per
leaf) searched exactly, so it returns the same neighbors as the linear index.

What Apple does not document, chosen here and listed in ``KNN_ASSUMPTIONS``:

* equal distances are ordered by example index (earlier examples first), in both indexes;
* ``1 / distance`` uses the squared distance the index computes; an exact match (distance 0)
  outvotes everything: only the exact matches vote, one vote each;
* a tie between labels goes to the tied label whose nearest voter is closest;
* the probabilities output gives each label its share of the total vote (labels of the model
  that no neighbor voted for get 0); with no examples it is empty;
* with fewer than ``k`` examples, all of them vote.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from .._proto import Model_pb2
from ..errors import ConfigError, ModelFileError
from .base import Model
from .update import UpdateResult, training_batch

KNN_ASSUMPTIONS = (
    "equal distances are ordered by example index (earlier first)",
    "inverse-distance weight is 1 / squared distance; exact matches (distance 0) alone vote",
    "a tie between labels goes to the tied label with the closest voter",
    "probabilities are each label's share of the vote",
)

Label = Union[str, int]
CHUNK_VALUES = 1 << 22  # float64 values of query-sample differences computed at once


# -- distances and the two indexes -------------------------------------------------------------


def squared_distances(queries: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """``(B, N)`` squared Euclidean distances, summed per pair so both indexes agree bit for bit
    (the ``|q|^2 - 2 q.s + |s|^2`` shortcut rounds differently and breaks exact ties)."""
    difference = queries[:, None, :] - samples[None, :, :]
    return np.einsum("bnd,bnd->bn", difference, difference)


def linear_neighbors(
    queries: np.ndarray, samples: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances ``(B, k)`` of the ``k`` nearest samples, brute force (queries in
    chunks so the ``(B, N, D)`` differences stay small)."""
    chunk = max(1, CHUNK_VALUES // max(1, samples.size))
    indices, distances = [], []
    for start in range(0, len(queries), chunk):
        block = squared_distances(queries[start : start + chunk], samples)
        order = np.argsort(block, axis=1, kind="stable")[:, :k]
        indices.append(order)
        distances.append(np.take_along_axis(block, order, axis=1))
    return np.concatenate(indices), np.concatenate(distances)


@dataclass
class KdNode:
    """A kd-tree node: the bounding box of its examples, and either children or a leaf."""

    low: np.ndarray
    high: np.ndarray
    indices: np.ndarray | None = None  # leaf: example indices
    children: tuple = ()


def build_kd_tree(samples: np.ndarray, leaf_size: int) -> KdNode:
    """Split on the widest dimension at the median until leaves hold ``leaf_size`` examples."""

    def build(indices: np.ndarray) -> KdNode:
        points = samples[indices]
        low, high = points.min(axis=0), points.max(axis=0)
        if len(indices) <= leaf_size:
            return KdNode(low, high, indices=indices)
        axis = int(np.argmax(high - low))
        order = indices[np.argsort(points[:, axis], kind="stable")]
        middle = len(order) // 2
        return KdNode(low, high, children=(build(order[:middle]), build(order[middle:])))

    return build(np.arange(len(samples)))


def _box_distance(node: KdNode, query: np.ndarray) -> float:
    """A lower bound of the squared distance from ``query`` to any example in ``node``."""
    gap = np.maximum(node.low - query, 0.0) + np.maximum(query - node.high, 0.0)
    return float(gap @ gap)


def kd_tree_neighbors(
    tree: KdNode, samples: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The same answer as ``linear_neighbors``, found by best-first search of the tree.

    A node is skipped only when its box is strictly farther than the current k-th neighbor,
    so examples at exactly that distance are still seen and the index tie-break holds.
    """
    found_indices, found_distances = [], []
    for query in queries:
        best: list[tuple[float, int]] = []  # max-heap of (-distance, -index), size <= k
        frontier = [(_box_distance(tree, query), 0, tree)]
        counter = 1
        while frontier:
            bound, _, node = heapq.heappop(frontier)
            if len(best) == k and bound > -best[0][0]:
                break
            if node.indices is None:
                for child in node.children:
                    heapq.heappush(frontier, (_box_distance(child, query), counter, child))
                    counter += 1
                continue
            distances = squared_distances(query[None], samples[node.indices])[0]
            for distance, index in zip(distances.tolist(), node.indices.tolist()):
                entry = (-distance, -index)
                if len(best) < k:
                    heapq.heappush(best, entry)
                elif entry > best[0]:
                    heapq.heapreplace(best, entry)
        ranked = sorted((-d, -i) for d, i in best)
        found_indices.append([i for _, i in ranked])
        found_distances.append([d for d, _ in ranked])
    return np.asarray(found_indices, dtype=np.int64), np.asarray(found_distances)


# -- voting ------------------------------------------------------------------------------------


def vote(labels: list, distances: np.ndarray, inverse_distance: bool) -> tuple[Label, dict]:
    """The winning label and each voted label's share, for one query's neighbors (nearest
    first)."""
    if inverse_distance:
        exact = distances == 0
        weights = exact.astype(np.float64) if exact.any() else 1.0 / distances
    else:
        weights = np.ones(len(labels))
    totals: dict = {}
    for label, weight in zip(labels, weights.tolist()):
        totals[label] = totals.get(label, 0.0) + weight
    top = max(totals.values())
    winner = next(label for label in labels if totals[label] == top)  # nearest voter first
    whole = sum(totals.values())
    return winner, {label: weight / whole for label, weight in totals.items()}


# -- the model ---------------------------------------------------------------------------------


class KNNModel(Model):
    """A ``kNearestNeighborsClassifier`` spec; ``update`` returns a model with the examples
    appended (the spec is only rewritten when asked for)."""

    def __init__(
        self,
        spec: Model_pb2.Model,
        dtype: np.dtype,
        samples: np.ndarray | list | None = None,
        labels: list | None = None,
    ) -> None:
        super().__init__(spec, dtype)
        knn = spec.kNearestNeighborsClassifier
        self.knn = knn
        index = knn.nearestNeighborsIndex
        self.dimensions = int(index.numberOfDimensions)
        self.k = int(knn.numberOfNeighbors.defaultValue)
        if self.k < 1:
            raise ModelFileError(f"the k-NN classifier has k={self.k}; k must be positive")
        self.inverse_distance = knn.WhichOneof("WeightingScheme") == "inverseDistanceWeighting"
        self.leaf_size = (
            max(int(index.singleKdTreeIndex.leafSize), 1)
            if index.WhichOneof("IndexType") == "singleKdTreeIndex"
            else None
        )
        self._modified = samples is not None
        if samples is None:
            samples = [list(s.vector) for s in index.floatSamples]
            kind = knn.WhichOneof("ClassLabels")
            labels = (
                []
                if kind is None
                else [v if isinstance(v, str) else int(v) for v in getattr(knn, kind).vector]
            )
        try:
            self.samples = np.asarray(samples, dtype=np.float32).reshape(-1, self.dimensions)
        except ValueError:  # ragged vectors, or numberOfDimensions not their length
            raise ModelFileError(
                f"the k-NN classifier's stored examples are not all "
                f"{self.dimensions}-dimensional (numberOfDimensions); the file "
                "is damaged"
            ) from None
        self.labels = list(labels or [])
        if len(self.labels) != len(self.samples):
            raise ModelFileError(
                f"the k-NN classifier has {len(self.samples)} examples but "
                f"{len(self.labels)} labels"
            )
        self._tree: Any = None

    # -- prediction --------------------------------------------------------------------------

    @property
    def integer_labels(self) -> bool:
        return (
            self.knn.WhichOneof("ClassLabels") == "int64ClassLabels"
            or self.knn.WhichOneof("DefaultClassLabel") == "defaultInt64Label"
        )

    def default_label(self) -> Label:
        kind = self.knn.WhichOneof("DefaultClassLabel")
        if kind is None:
            raise ModelFileError("the k-NN classifier holds no example and has no default label")
        value = getattr(self.knn, kind)
        return value if isinstance(value, str) else int(value)

    def neighbors(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices and squared distances of each query's ``k`` nearest examples (all of them
        when there are fewer), nearest first."""
        samples = self.samples.astype(np.float64)
        count = min(self.k, len(samples))
        if queries.shape[1] != self.dimensions:
            raise ConfigError(
                f"the k-NN classifier takes {self.dimensions}-dimensional feature "
                f"vectors, got {queries.shape[1]}"
            )
        if self.leaf_size is None:
            return linear_neighbors(queries, samples, count)
        if self._tree is None:
            self._tree = build_kd_tree(samples, self.leaf_size)
        return kd_tree_neighbors(self._tree, samples, queries, count)

    def predict_batched(self, batch: Mapping[str, Any]) -> dict:
        if not self.description.input:
            raise ModelFileError("the k-NN classifier declares no input feature")
        name = self.description.input[0].name
        if name not in batch:
            raise ConfigError(f"missing input feature {name!r} of the k-NN classifier")
        queries = np.asarray(batch[name], dtype=np.float64)
        queries = queries.reshape(len(queries), -1)  # (B, D) or the extractor's (B, D, 1, 1)
        if not self.labels:
            predicted = [self.default_label()] * len(queries)
            shares: list[dict] = [{} for _ in predicted]
        else:
            indices, distances = self.neighbors(queries)
            known = dict.fromkeys(self.labels, 0.0)
            results = [
                vote([self.labels[i] for i in row], dist, self.inverse_distance)
                for row, dist in zip(indices.tolist(), distances)
            ]
            predicted = [winner for winner, _ in results]
            shares = [{**known, **share} for _, share in results]
        description = self.description
        outputs: dict[str, Any] = {description.predictedFeatureName: np.asarray(predicted)}
        if description.predictedProbabilitiesName:
            outputs[description.predictedProbabilitiesName] = shares
        return outputs

    # -- update ------------------------------------------------------------------------------

    def appended(self, features: np.ndarray, labels: Iterable) -> KNNModel:
        """A model that also holds ``features`` (one row per example) with ``labels``."""
        labels = [self._label(value) for value in labels]
        features = np.asarray(features, dtype=np.float32)
        if features.size != len(labels) * self.dimensions:
            raise ConfigError(
                f"{len(labels)} labels need {len(labels)} feature vectors of "
                f"{self.dimensions} values; got {features.size} values"
            )
        return KNNModel(
            self._spec,
            self.dtype,
            np.concatenate([self.samples, features.reshape(len(labels), -1)]),
            self.labels + labels,
        )

    def _label(self, value: Any) -> Label:
        """A training label checked against the model's label type (String or Int64)."""
        if self.integer_labels:
            if isinstance(value, (str, bytes, bool, np.bool_)) or float(value) != int(value):
                raise ConfigError(f"label {value!r}: this k-NN classifier has Int64 labels")
            return int(value)
        if not isinstance(value, (str, np.str_)):
            raise ConfigError(f"label {value!r}: this k-NN classifier has String labels")
        return str(value)

    def update(self, examples, **options):
        """Append ``examples`` (a k-NN update has no epochs, optimizer or progress events:
        ``progress`` and ``assumptions`` are accepted like a network's and unused)."""
        return update_nearest_neighbors(self, self, examples, _parameters(options))

    def update_in_pipeline(self, pipeline: Model, examples, **options):
        """Append ``examples`` whose feature vectors the pipeline's earlier models compute."""
        return update_nearest_neighbors(pipeline, self, examples, _parameters(options))

    def with_trainable(self, network: Model) -> Model:
        return network

    @property
    def modified(self) -> bool:
        return self._modified

    @property
    def spec(self) -> Model_pb2.Model:
        if not self._modified:
            return self._spec
        spec = Model_pb2.Model()
        spec.CopyFrom(self._spec)
        knn = spec.kNearestNeighborsClassifier
        index = knn.nearestNeighborsIndex
        index.ClearField("floatSamples")
        for row in self.samples:
            index.floatSamples.add().vector.extend(row.tolist())
        vector = knn.int64ClassLabels if self.integer_labels else knn.stringClassLabels
        vector.ClearField("vector")
        vector.vector.extend(self.labels)
        return spec


def _parameters(options: Mapping[str, Any]) -> Mapping[str, Any] | None:
    unknown = set(options) - {"parameters", "progress", "assumptions"}
    if unknown:
        raise TypeError(f"update() got unexpected keyword argument(s) {', '.join(sorted(unknown))}")
    return options.get("parameters")


def update_nearest_neighbors(
    host: Model, knn: KNNModel, examples, parameters: Mapping[str, Any] | None
):
    """Append the examples to ``knn``, the k-NN ``host`` ends in (``host`` is the k-NN itself,
    or a pipeline whose earlier models compute the feature vectors); returns an
    ``UpdateResult``."""
    if parameters:
        raise ConfigError(
            f"a k-NN update takes no parameters, got {', '.join(map(repr, parameters))}"
        )
    if not host.spec.isUpdatable:
        raise ModelFileError("the model is not updatable (isUpdatable is false)")
    batch, _ = training_batch(host, examples)
    features = host.training_features(batch)
    feature_name = knn.description.input[0].name
    label_name = knn.description.predictedFeatureName
    missing = [name for name in (feature_name, label_name) if name not in features]
    if missing:
        raise ConfigError(f"the training examples have no {' or '.join(map(repr, missing))}")
    updated = knn.appended(
        features[feature_name], np.asarray(features[label_name]).reshape(-1).tolist()
    )
    return UpdateResult(host.with_trainable(updated), cancelled=False)
