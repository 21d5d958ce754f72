"""Small Core ML models built with coremltools' builder, shared by the tests."""

from __future__ import annotations

import numpy as np


def squeezenet_like(num_classes: int = 3, seed: int = 0, size: int = 16):
    """A SqueezeNet-style classifier: conv -> fire (concat) -> conv10 -> pool -> fc -> softmax.

    Labels are strings ``class0``...; the input is a (3, size, size) MultiArray.
    """
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(seed)

    def w(*shape):
        return rng.normal(0, 0.3, shape).astype(np.float32)

    builder = NeuralNetworkBuilder([("image", datatypes.Array(3, size, size))],
                                   [("classLabelProbs", None)], mode="classifier")
    builder.add_convolution("conv1", 3, 8, 3, 3, 1, 1, "same", 1, w(3, 3, 3, 8), w(8), True,
                            input_name="image", output_name="conv1_out")
    builder.add_activation("relu1", "RELU", "conv1_out", "relu1_out")
    builder.add_pooling("pool1", 2, 2, 2, 2, "MAX", "VALID", "relu1_out", "pool1_out")
    builder.add_convolution("fire2/squeeze", 8, 4, 1, 1, 1, 1, "valid", 1, w(1, 1, 8, 4), w(4), True,
                            input_name="pool1_out", output_name="sq_out")
    builder.add_activation("fire2/relu_squeeze", "RELU", "sq_out", "sq_relu")
    builder.add_convolution("fire2/expand1x1", 4, 8, 1, 1, 1, 1, "valid", 1, w(1, 1, 4, 8), w(8), True,
                            input_name="sq_relu", output_name="e1_out")
    builder.add_convolution("fire2/expand3x3", 4, 8, 3, 3, 1, 1, "same", 1, w(3, 3, 4, 8), w(8), True,
                            input_name="sq_relu", output_name="e3_out")
    builder.add_elementwise("fire2/concat", ["e1_out", "e3_out"], "concat_out", mode="CONCAT")
    builder.add_convolution("conv10", 16, 16, 1, 1, 1, 1, "valid", 1, w(1, 1, 16, 16), w(16), True,
                            input_name="concat_out", output_name="conv10_out")
    builder.add_activation("relu10", "RELU", "conv10_out", "relu10_out")
    builder.add_pooling("pool10", 1, 1, 1, 1, "AVERAGE", "VALID", "relu10_out", "pool10_out",
                        is_global=True)
    builder.add_flatten("flatten", 0, "pool10_out", "flat")
    builder.add_inner_product("fc", w(num_classes, 16), w(num_classes), 16, num_classes, True,
                              "flat", "fc_out")
    builder.add_softmax("softmax", "fc_out", "classLabelProbs")
    builder.set_class_labels([f"class{i}" for i in range(num_classes)],
                             predicted_feature_name="classLabel",
                             prediction_blob="classLabelProbs")
    return builder.spec


def mlp_regressor(n_in: int = 4, n_hidden: int = 8, n_out: int = 2, seed: int = 0):
    """Plain network: innerProduct -> tanh -> innerProduct, output 'y' (n_out,)."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(seed)
    builder = NeuralNetworkBuilder([("x", datatypes.Array(n_in))], [("y", datatypes.Array(n_out))])
    builder.add_inner_product("hidden", rng.normal(0, 0.5, (n_hidden, n_in)).astype(np.float32),
                              np.zeros(n_hidden, np.float32), n_in, n_hidden, True, "x", "h")
    builder.add_activation("tanh", "TANH", "h", "h_act")
    builder.add_inner_product("out", rng.normal(0, 0.5, (n_out, n_hidden)).astype(np.float32),
                              np.zeros(n_out, np.float32), n_hidden, n_out, True, "h_act", "y")
    return builder.spec
