"""Updatable models whose generated Swift trainers are checked: parsed on Linux
(test_swift_syntax.py) and type-checked with swiftc on macOS (test_coreml_macos.py)."""

from __future__ import annotations

import numpy as np

from models import mlp_regressor, squeezenet_like
from updatable_coreml.surgery import make_updatable


def regressor_with_names(input_name: str, output_name: str, layer_name: str):
    """One updatable innerProduct regressor whose features and layer carry the given names."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    rng = np.random.default_rng(0)
    builder = NeuralNetworkBuilder(
        [(input_name, datatypes.Array(3))], [(output_name, datatypes.Array(2))], mode="regressor"
    )
    builder.add_inner_product(
        layer_name,
        rng.normal(0, 0.5, (2, 3)).astype(np.float32),
        np.zeros(2, np.float32),
        3,
        2,
        True,
        input_name,
        output_name,
    )
    return make_updatable(builder.spec, layers=[layer_name], loss="mse", batch_size=2, epochs=2)


FRESH = {
    "cce-sgd-conv": lambda: make_updatable(
        squeezenet_like(),
        layers=["fc"],
        loss="cce",
        lr=0.05,
        momentum=0.9,
        batch_size=4,
        epochs=3,
        allowed_epochs=[1, 3, 5],
        seed=7,
    ),
    "mse-adam-ranges": lambda: make_updatable(
        mlp_regressor(),
        layers=["hidden", "out"],
        loss="mse",
        optimizer="adam",
        lr=0.001,
        lr_range=(1e-5, 0.1),
        batch_size=4,
        allowed_batch_sizes=[1, 4, 16],
        epochs=2,
        shuffle=False,
    ),
    "keyword-names": lambda: regressor_with_names("class", "default", "self"),
    "escapes-in-names": lambda: regressor_with_names('in "put"\\1', "out\tput\n", "fc"),
}
