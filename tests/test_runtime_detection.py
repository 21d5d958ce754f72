"""NonMaximumSuppression and cropResize against hand-made cases, an independent brute-force
NMS written differently (per class, then merged), and torch's grid_sample as the bilinear
reference for cropResize boxes inside the image (torchvision's compiled ops are not
available here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder

from updatable_coreml._proto import NeuralNetwork_pb2 as nn_pb
from updatable_coreml.errors import RuntimeLayerError
from updatable_coreml.runtime import layers  # noqa: F401  (registers the ops)
from updatable_coreml.runtime.model import load
from updatable_coreml.runtime.registry import forward_op

RNG = np.random.default_rng(14)
Sampling = nn_pb.SamplingMode
Boxes = nn_pb.BoxCoordinatesMode


def layer_of(kind: str, inputs: int, outputs: int, **fields) -> nn_pb.NeuralNetworkLayer:
    layer = nn_pb.NeuralNetworkLayer(
        name=f"my_{kind}",
        input=[f"x{i}" for i in range(inputs)],
        output=[f"y{i}" for i in range(outputs)],
    )
    params = getattr(layer, kind)
    params.SetInParent()
    for name, value in fields.items():
        if name == "targetSize":
            params.targetSize.extend(value)
        elif name == "mode":
            params.mode.samplingMethod = value
        elif name == "boxIndicesMode":
            params.boxIndicesMode.boxMode = value
        else:
            setattr(params, name, value)
    return layer


def run(layer, *inputs) -> list[np.ndarray]:
    return forward_op(layer)(layer, [np.asarray(x) for x in inputs], lambda field: None)


# -- NonMaximumSuppression ----------------------------------------------------------------------


def nms(boxes, scores, *overrides, **fields) -> list[np.ndarray]:
    """One example whose tensors are ``boxes`` (B, N, 4) and ``scores`` (B, N, C)."""
    layer = layer_of("NonMaximumSuppression", 2 + len(overrides), 4, **fields)
    extra = [np.asarray([[value]], dtype=np.float32) for value in overrides]
    return run(layer, np.asarray(boxes)[None], np.asarray(scores)[None], *extra)


#: (x_center, y_center, width, height): 0 and 1 overlap (IoU 0.5 exactly: [0, 3] and [1, 4]
#: on x, the same rows), 2 is apart
BOXES = [[1.5, 0.5, 3.0, 1.0], [2.5, 0.5, 3.0, 1.0], [10.0, 10.0, 2.0, 2.0]]


def test_nms_hand_made_case_with_padding():
    scores = [[0.6], [0.9], [0.3]]
    out_boxes, out_scores, indices, count = nms(
        [BOXES], [scores], iouThreshold=0.4, scoreThreshold=0.1, maxBoxes=4
    )
    assert out_boxes.shape == (1, 1, 4, 4) and out_scores.shape == (1, 1, 4, 1)
    np.testing.assert_array_equal(indices, [[[1, 2, -1, -1]]])
    np.testing.assert_array_equal(count, [[2]])
    np.testing.assert_array_equal(out_boxes[0, 0], [BOXES[1], BOXES[2], [0] * 4, [0] * 4])
    np.testing.assert_array_equal(out_scores[0, 0, :, 0], [0.9, 0.3, 0, 0])


def test_nms_iou_equal_to_the_threshold_is_not_suppressed():
    """The threshold is the IoU "over which boxes are suppressed"."""
    scores = [[0.6], [0.9], [0.3]]
    assert nms([BOXES], [scores], iouThreshold=0.5, maxBoxes=3)[3][0, 0] == 3
    assert nms([BOXES], [scores], iouThreshold=0.49, maxBoxes=3)[3][0, 0] == 2


def test_nms_score_threshold_and_the_no_survivor_rule():
    scores = np.asarray([[0.6], [0.2], [0.3]], dtype=np.float32)  # as the threshold is
    _, _, indices, count = nms([BOXES], [scores], iouThreshold=0.9, scoreThreshold=0.3, maxBoxes=3)
    np.testing.assert_array_equal(indices, [[[0, 2, -1]]])  # 0.3 is not below 0.3
    # no box reaches the threshold: count 1 and the best box, not an empty output
    out_boxes, out_scores, indices, count = nms(
        [BOXES], [scores], iouThreshold=0.9, scoreThreshold=0.95, maxBoxes=2
    )
    np.testing.assert_array_equal(indices, [[[0, -1]]])
    np.testing.assert_array_equal(count, [[1]])
    np.testing.assert_array_equal(out_boxes[0, 0, 0], BOXES[0])
    np.testing.assert_allclose(out_scores[0, 0, :, 0], [0.6, 0])


def test_nms_scores_are_the_max_over_classes_and_per_class_suppression():
    # box 0 is class 0, box 1 class 1; they overlap (IoU 0.5)
    scores = [[0.7, 0.1], [0.2, 0.8], [0.1, 0.05]]
    _, out_scores, indices, _ = nms([BOXES], [scores], iouThreshold=0.3, maxBoxes=3)
    np.testing.assert_array_equal(indices, [[[1, 2, -1]]])
    np.testing.assert_allclose(out_scores[0, 0, :2], [[0.2, 0.8], [0.1, 0.05]])
    _, _, indices, _ = nms(
        [BOXES], [scores], iouThreshold=0.3, maxBoxes=3, perClassSuppression=True
    )
    np.testing.assert_array_equal(indices, [[[1, 0, 2]]])


def test_nms_max_boxes_cuts_the_survivors():
    scores = [[0.6], [0.9], [0.3]]
    _, _, indices, count = nms([BOXES], [scores], iouThreshold=0.9, maxBoxes=2)
    np.testing.assert_array_equal(indices, [[[1, 0]]])
    np.testing.assert_array_equal(count, [[2]])


def test_nms_inputs_3_to_5_overwrite_the_parameters():
    scores = [[0.6], [0.9], [0.3]]
    base = {"iouThreshold": 0.9, "scoreThreshold": 0.0, "maxBoxes": 1}
    _, _, indices, count = nms([BOXES], [scores], 0.4, 0.35, 3, **base)
    np.testing.assert_array_equal(indices, [[[1, -1, -1]]])
    np.testing.assert_array_equal(count, [[1]])
    assert nms([BOXES], [scores], 0.4, **base)[2].shape == (1, 1, 1)


def test_nms_refusals_name_the_layer():
    with pytest.raises(RuntimeLayerError, match="'my_NonMaximumSuppression'.*maxBoxes 0"):
        nms([BOXES], [[[0.5]] * 3])
    with pytest.raises(RuntimeLayerError, match="scores .* do not match boxes"):
        nms([BOXES], [[[0.5]] * 2], maxBoxes=2)


def reference_nms(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class):
    """Brute force, written another way: per class (or one class), repeatedly take the best
    remaining box and drop every box overlapping it; then merge the classes by score."""
    n = len(boxes)
    best = [max(row) for row in scores]
    label = [int(np.argmax(row)) for row in scores]

    def iou(i, j):
        ax0, ay0 = boxes[i][0] - boxes[i][2] / 2, boxes[i][1] - boxes[i][3] / 2
        ax1, ay1 = ax0 + boxes[i][2], ay0 + boxes[i][3]
        bx0, by0 = boxes[j][0] - boxes[j][2] / 2, boxes[j][1] - boxes[j][3] / 2
        bx1, by1 = bx0 + boxes[j][2], by0 + boxes[j][3]
        inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
        union = boxes[i][2] * boxes[i][3] + boxes[j][2] * boxes[j][3] - inter
        return inter / union if union > 0 else 0.0

    groups = sorted(set(label)) if per_class else [None]
    kept = []
    for group in groups:
        remaining = [
            i for i in range(n) if best[i] >= score_threshold and group in (None, label[i])
        ]
        while remaining:
            top = max(remaining, key=lambda i: (best[i], -i))
            kept.append(top)
            remaining = [i for i in remaining if i != top and iou(top, i) <= iou_threshold]
    kept.sort(key=lambda i: (-best[i], i))
    if not kept:
        kept = [max(range(n), key=lambda i: (best[i], -i))]
    return kept[:max_boxes]


@pytest.mark.parametrize("per_class", [False, True])
def test_nms_against_a_brute_force_reference(per_class):
    for trial in range(40):
        n, classes = int(RNG.integers(1, 25)), int(RNG.integers(1, 4))
        centres = RNG.uniform(0, 10, size=(2, n, 2))
        sizes = RNG.uniform(0.5, 6, size=(2, n, 2))
        boxes = np.concatenate([centres, sizes], axis=-1)
        scores = RNG.uniform(0, 1, size=(2, n, classes))
        iou_t, score_t, max_boxes = float(RNG.uniform(0.1, 0.8)), float(RNG.uniform(0, 0.7)), 6
        out_boxes, out_scores, indices, count = nms(
            boxes, scores, iou_t, score_t, max_boxes, perClassSuppression=per_class
        )
        for b in range(2):
            want = reference_nms(boxes[b], scores[b], iou_t, score_t, max_boxes, per_class)
            got = indices[0, b]
            assert got[: len(want)].tolist() == want, (trial, b)
            assert np.all(got[len(want) :] == -1) and count[0, b] == len(want)
            np.testing.assert_array_equal(out_boxes[0, b, : len(want)], boxes[b][want])
            np.testing.assert_array_equal(out_scores[0, b, : len(want)], scores[b][want])
            assert not out_boxes[0, b, len(want) :].any()


# -- cropResize ---------------------------------------------------------------------------------


def crop(image, rois, **fields) -> np.ndarray:
    """ND reading: image tensor [1, Batch, C, H, W], RoIs [N, 1, 4 or 5, 1, 1], one example."""
    rois = np.asarray(rois, dtype=np.float64)
    layer = layer_of("cropResize", 2, 1, **fields)
    (out,) = run(layer, np.asarray(image)[None, None], rois.reshape(1, len(rois), 1, -1, 1, 1))
    return out[0]


IMAGE = np.arange(2 * 1 * 5 * 6, dtype=np.float64).reshape(2, 1, 5, 6)  # Batch 2, C 1, 5 x 6


def test_crop_strict_align_on_whole_pixels_is_a_plain_crop():
    out = crop(IMAGE, [[1, 2, 3, 4]], targetSize=[3, 3], mode=Sampling.STRICT_ALIGN_ENDPOINTS_MODE)
    assert out.shape == (1, 2, 1, 3, 3)
    np.testing.assert_array_equal(out[0], IMAGE[:, :, 1:4, 2:5])


def test_crop_align_endpoints_with_one_sample_takes_the_box_centre():
    out = crop(IMAGE, [[1, 2, 2, 5]], targetSize=[1, 1], mode=Sampling.ALIGN_ENDPOINTS_MODE)
    # centre (1.5, 3.5): the mean of the four pixels around it
    np.testing.assert_allclose(out[0, :, 0, 0, 0], IMAGE[:, 0, 1:3, 3:5].mean(axis=(1, 2)))


def test_crop_roi_align_and_upsample_grids_hand_computed():
    # box rows [0, 4], N = 2: ROI_ALIGN spacing max(1, 4) / 2 = 2, points 1 and 3;
    # UPSAMPLE: linspace(0, 5 - 5 / 2, 2) = 0, 2.5
    out = crop(IMAGE, [[0, 0, 4, 0]], targetSize=[2, 1], mode=Sampling.ROI_ALIGN_MODE)
    np.testing.assert_allclose(out[0, 0, 0, :, 0], IMAGE[0, 0, [1, 3], 0])
    out = crop(IMAGE, [[0, 0, 4, 0]], targetSize=[2, 1], mode=Sampling.UPSAMPLE_MODE)
    np.testing.assert_allclose(out[0, 0, 0, :, 0], [IMAGE[0, 0, 0, 0], IMAGE[0, 0, 2:4, 0].mean()])


def test_crop_five_coordinates_pick_the_batch_index():
    out = crop(IMAGE, [[1, 1, 2, 3, 4], [0, 0, 0, 1, 1]], targetSize=[3, 3])
    assert out.shape == (2, 1, 1, 3, 3)
    np.testing.assert_array_equal(out[0, 0], IMAGE[1, :, 1:4, 2:5])
    np.testing.assert_allclose(out[1, 0, 0], np.asarray([[0, 0.5, 1], [3, 3.5, 4], [6, 6.5, 7]]))
    with pytest.raises(RuntimeLayerError, match="'my_cropResize'.*batch index 2"):
        crop(IMAGE, [[2, 1, 2, 3, 4]])


def test_crop_box_modes_normalized_coordinates_and_spatial_scale_agree():
    corners = crop(IMAGE, [[1, 2, 3, 4]], targetSize=[3, 4])
    same = {
        Boxes.CORNERS_WIDTH_FIRST: [2, 1, 4, 3],
        Boxes.CENTER_SIZE_HEIGHT_FIRST: [2, 3, 2, 2],
        Boxes.CENTER_SIZE_WIDTH_FIRST: [3, 2, 2, 2],
    }
    for mode, box in same.items():
        np.testing.assert_allclose(
            crop(IMAGE, [box], targetSize=[3, 4], boxIndicesMode=mode), corners
        )
    normalized = crop(
        IMAGE, [[1 / 4, 2 / 5, 3 / 4, 4 / 5]], targetSize=[3, 4], normalizedCoordinates=True
    )
    np.testing.assert_allclose(normalized, corners)
    scaled = crop(IMAGE, [[2, 4, 6, 8]], targetSize=[3, 4], spatialScale=0.5)
    np.testing.assert_allclose(scaled, corners)


def test_crop_samples_outside_the_image_are_zero():
    out = crop(IMAGE, [[-2, 0, 2, 0]], targetSize=[5, 1])
    np.testing.assert_array_equal(out[0, 0, 0, :, 0], [0, 0, IMAGE[0, 0, 0, 0], 6, 12])


def proto_grid(start: float, end: float, n: int, mode: int) -> np.ndarray:
    """The SamplingMode formulas, written from the proto for an interval of X - 1 = end - start."""
    x = end - start + 1
    if mode == Sampling.STRICT_ALIGN_ENDPOINTS_MODE:
        return start + np.linspace(0, x - 1, n)
    if mode == Sampling.ALIGN_ENDPOINTS_MODE:
        return start + (np.full(n, (x - 1) / 2) if n == 1 else np.linspace(0, x - 1, n))
    if mode == Sampling.UPSAMPLE_MODE:
        return start + np.minimum(x - 1, np.linspace(0, x - x / n, n))
    spacing = max(1, x - 1) / n
    return start + np.minimum(
        x - 1, np.linspace(0.5 * spacing, 0.5 * spacing + (n - 1) * spacing, n)
    )


@pytest.mark.parametrize("mode", sorted(Sampling.Method.values()))
def test_crop_matches_grid_sample_inside_the_image(mode):
    image = RNG.normal(size=(2, 3, 9, 11))
    rois, want = [], []
    for _ in range(5):
        h0, h1 = np.sort(RNG.uniform(0, 8, size=2))
        w0, w1 = np.sort(RNG.uniform(0, 10, size=2))
        rois.append([h0, w0, h1, w1])
        ys, xs = proto_grid(h0, h1, 4, mode), proto_grid(w0, w1, 5, mode)
        gy, gx = np.meshgrid(2 * ys / 8 - 1, 2 * xs / 10 - 1, indexing="ij")
        grid = torch.from_numpy(np.stack([gx, gy], axis=-1)[None].repeat(2, axis=0))
        sampled = F.grid_sample(torch.from_numpy(image), grid, align_corners=True)
        want.append(sampled.numpy())
    got = crop(image, rois, targetSize=[4, 5], mode=mode)
    np.testing.assert_allclose(got, np.stack(want), rtol=0, atol=1e-9)


def test_crop_rank5_mapping_carries_the_rois_on_the_sequence_axis():
    """A rank-5-mapped model: image blob (Batch, C, H, W), RoIs (1, N, 4, 1, 1), output
    (Batch, N, C, h, w), the same values as the ND reading."""
    rois = np.asarray([[1, 2, 3, 4], [0, 0, 4, 5]], dtype=np.float64)
    layer = layer_of("cropResize", 2, 1, targetSize=[2, 3])
    (out,) = run(layer, IMAGE, rois.reshape(1, 2, 4, 1, 1))
    np.testing.assert_allclose(out, crop(IMAGE, rois, targetSize=[2, 3]).swapaxes(0, 1))


def test_crop_resize_and_nms_in_models_built_by_coremltools():
    b = NeuralNetworkBuilder(
        [("image", datatypes.Array(1, 2, 1, 5, 6)), ("rois", datatypes.Array(1, 1, 4, 1, 1))],
        [("crops", None)],
        disable_rank5_shape_mapping=True,
    )
    b.add_crop_resize("crop", ["image", "rois"], "crops", target_height=3, target_width=3)
    got = load(b.spec).predict(
        {"image": IMAGE[None], "rois": np.reshape([1, 2, 3, 4], (1, 1, 4, 1, 1))}
    )
    np.testing.assert_allclose(got["crops"][0], IMAGE[:, :, 1:4, 2:5])

    b = NeuralNetworkBuilder(
        [("boxes", datatypes.Array(1, 3, 4)), ("scores", datatypes.Array(1, 3, 1))],
        [("kept", None), ("kept_scores", None), ("indices", None), ("count", None)],
        disable_rank5_shape_mapping=True,
    )
    b.add_nms(
        "nms", ["boxes", "scores"], ["kept", "kept_scores", "indices", "count"],
        iou_threshold=0.4, max_boxes=3,
    )  # fmt: skip
    got = load(b.spec).predict(
        {"boxes": np.asarray([BOXES]), "scores": np.asarray([[[0.6], [0.9], [0.3]]])}
    )
    np.testing.assert_array_equal(got["indices"], [[1, 2, -1]])
    np.testing.assert_array_equal(got["count"], [2])


# -- through coremltools' TensorFlow converter: parity with the source framework ----------------


def tf_converted(fn):
    """``fn`` (a ``tf.function`` with an input signature) converted by coremltools to a
    NeuralNetwork and loaded by our runtime."""
    import coremltools as ct

    spec = ct.convert(
        [fn.get_concrete_function()], source="tensorflow", convert_to="neuralnetwork"
    ).get_spec()
    return spec, load(spec)


def test_tensorflow_crop_and_resize_through_coremltools():
    """coremltools writes ``crop_and_resize`` as cropResize with ALIGN_ENDPOINTS_MODE and
    normalized coordinates; boxes partly outside the image take TensorFlow's extrapolation
    value 0, and a 1-pixel crop samples the box centre. (A batch of two images fails
    inside coremltools 9.0's converter, so one image.)"""
    tf = pytest.importorskip("tensorflow")
    boxes = np.asarray(
        [[0.1, 0.2, 0.8, 0.9], [0.0, 0.0, 1.0, 1.0], [0.3, 0.5, 0.35, 0.9], [-0.2, 0.4, 0.6, 1.3]],
        dtype=np.float32,
    )
    x = RNG.normal(size=(1, 7, 9, 3)).astype(np.float32)
    for size in [(4, 5), (1, 1)]:

        @tf.function(input_signature=[tf.TensorSpec(x.shape, tf.float32)])
        def crop_and_resize(image):
            return tf.image.crop_and_resize(image, boxes, [0, 0, 0, 0], size)  # noqa: B023

        spec, model = tf_converted(crop_and_resize)
        assert "cropResize" in [layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers]
        (name,), (out,) = spec.description.input, spec.description.output
        got = model.predict({name.name: x})[out.name]
        want = crop_and_resize(x).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tensorflow_non_max_suppression_through_coremltools(seed):
    """coremltools writes ``tf.image.non_max_suppression`` (corner boxes) as the NMS layer
    behind a conversion to centre-size boxes; the kept boxes and their order match."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(seed)
    n = 24
    centres, sizes = rng.uniform(0, 10, (n, 2)), rng.uniform(1, 5, (n, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)

    @tf.function(
        input_signature=[tf.TensorSpec([n, 4], tf.float32), tf.TensorSpec([n], tf.float32)]
    )
    def kept_boxes(boxes, scores):
        kept = tf.image.non_max_suppression(
            boxes, scores, max_output_size=8, iou_threshold=0.3, score_threshold=0.25
        )
        return tf.gather(boxes, kept)

    spec, model = tf_converted(kept_boxes)
    assert "NonMaximumSuppression" in [
        layer.WhichOneof("layer") for layer in spec.neuralNetwork.layers
    ]
    names = [feature.name for feature in spec.description.input]
    (out,) = spec.description.output
    got = model.predict(dict(zip(names, [boxes, scores])))[out.name]
    want = kept_boxes(boxes, scores).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
