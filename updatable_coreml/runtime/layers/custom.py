"""``custom`` layers: on device Core ML hands them to the app's class named ``className`` (a
Swift or Objective-C class conforming to ``MLCustomLayer``); the file holds only that name,
the weights and a parameter map, never the code. So the runtime runs a custom layer only
through a Python implementation the user registers for its class name:

.. code:: python

    from updatable_coreml.runtime import register_custom_layer

    @register_custom_layer("MySwish")
    def my_swish(inputs, weights, parameters):
        (x,) = inputs  # batch first, as every blob in the runtime
        return [x / (1 + np.exp(-parameters.get("beta", 1.0) * x))]

``inputs`` are the input blobs in ``layer.input`` order, ``weights`` the decoded
``CustomLayerParams.weights`` (flat float32 arrays, in order), ``parameters`` the
``parameters`` map with plain Python values; it returns one array per ``layer.output``.
Without a registration the layer is refused, naming the layer and its class.
"""

from __future__ import annotations

import numpy as np

from ...errors import RuntimeLayerError, first_line
from ..registry import CUSTOM_LAYERS, WeightGetter, decode_weights, register_forward
from .common import Blobs, _fail


def parameter_values(params) -> dict[str, object]:
    """The ``parameters`` map with each ``CustomLayerParamValue`` as its Python value."""
    values: dict[str, object] = {}
    for key, value in params.parameters.items():
        kind = value.WhichOneof("value")
        values[key] = getattr(value, kind) if kind else None
    return values


@register_forward("custom")
def custom(layer, inputs: Blobs, weight: WeightGetter) -> list:
    params = layer.custom
    implementation = CUSTOM_LAYERS.get(params.className)
    if implementation is None:
        raise _fail(
            layer,
            f"class {params.className!r} is app code (an MLCustomLayer in Swift or "
            "Objective-C) that the model file does not hold; register a Python "
            "implementation with updatable_coreml.runtime.register_custom_layer("
            f"{params.className!r})",
        )
    weights = [
        decode_weights(w, f"layer {layer.name!r} weights[{i}]")
        for i, w in enumerate(params.weights)
    ]
    try:
        outputs = [
            np.asarray(out)
            for out in implementation(list(inputs), weights, parameter_values(params))
        ]
    except RuntimeLayerError:
        raise
    except Exception as exc:  # the user's code: say which layer it failed in
        raise _fail(
            layer,
            f"the registered implementation of {params.className!r} failed: {first_line(exc)}",
        ) from exc
    if len(outputs) != len(layer.output):
        raise _fail(
            layer,
            f"the registered implementation of {params.className!r} returned "
            f"{len(outputs)} outputs for the layer's {len(layer.output)}",
        )
    return outputs
