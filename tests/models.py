"""Small Core ML models built with coremltools' builder, shared by the tests."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from make_updatable_existing import squeezenet_style_classifier


def squeezenet_like(num_classes: int = 3, seed: int = 0, size: int = 16):
    """The SqueezeNet-style classifier of examples/make_updatable_existing.py: conv -> fire
    (concat) -> conv10 -> pool -> fc -> softmax, labels ``class0``..., input ``image``."""
    return squeezenet_style_classifier(
        [f"class{i}" for i in range(num_classes)],
        size,
        seed,
        probs="classLabelProbs",
        label="classLabel",
    )


def mlp_regressor(n_in: int = 4, n_hidden: int = 8, n_out: int = 2, seed: int = 0):
    """Plain network: innerProduct -> tanh -> innerProduct, output 'y' (n_out,)."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(seed)
    builder = NeuralNetworkBuilder([("x", datatypes.Array(n_in))], [("y", datatypes.Array(n_out))])
    builder.add_inner_product(
        "hidden",
        rng.normal(0, 0.5, (n_hidden, n_in)).astype(np.float32),
        np.zeros(n_hidden, np.float32),
        n_in,
        n_hidden,
        True,
        "x",
        "h",
    )
    builder.add_activation("tanh", "TANH", "h", "h_act")
    builder.add_inner_product(
        "out",
        rng.normal(0, 0.5, (n_out, n_hidden)).astype(np.float32),
        np.zeros(n_out, np.float32),
        n_hidden,
        n_out,
        True,
        "h_act",
        "y",
    )
    return builder.spec


def image_classifier_builder(labels, rng: np.random.Generator):
    """8x8 RGB image (scale 1/255) -> conv -> relu -> global pool -> flatten -> fc -> softmax,
    ``fc`` updatable with CCE; the caller sets the optimizer, epochs and shuffle."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder(
        [("image", datatypes.Array(3, 8, 8))],
        [("probs", datatypes.Array(len(labels)))],
        mode="classifier",
    )
    b.add_convolution(
        "conv",
        3,
        4,
        3,
        3,
        1,
        1,
        "valid",
        1,
        rng.normal(size=(3, 3, 3, 4)).astype(np.float32) * 0.3,
        None,
        False,
        input_name="image",
        output_name="c",
    )
    b.add_activation("relu", "RELU", "c", "r")
    b.add_pooling("gap", 1, 1, 1, 1, "AVERAGE", "VALID", "r", "p", is_global=True)
    b.add_flatten("flat", 0, "p", "f")
    b.add_inner_product(
        "fc",
        rng.normal(size=(len(labels), 4)).astype(np.float32) * 0.3,
        np.zeros(len(labels), np.float32),
        4,
        len(labels),
        True,
        "f",
        "logits",
    )
    b.add_softmax("softmax", "logits", "probs")
    b.set_class_labels(list(labels), predicted_feature_name="label", prediction_blob="probs")
    b.set_pre_processing_parameters(image_input_names=["image"], image_scale=1 / 255)
    b.make_updatable(["fc"])
    b.set_categorical_cross_entropy_loss("loss", "probs")
    return b
