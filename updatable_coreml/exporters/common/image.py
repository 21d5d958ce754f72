"""``image_input``, read the same way by every frontend: which input becomes an image, and how
its pixels map to the tensor the model expects (the backend writes it as Core ML's image
input with preprocessing; see ``backend``)."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ...ir import TensorSpec

COLORS = ("rgb", "bgr", "grayscale")
KEYS = ("name", "color", "scale", "bias")


def apply_image_input(image_input: Any, inputs: list[TensorSpec]) -> None:
    """Make one of ``inputs`` an image (``TensorSpec.image``).

    ``image_input`` is None/False (no image), True (the first input; its channel count picks
    RGB or grayscale), a colour (``'rgb'``, ``'bgr'``, ``'grayscale'``), or a dict
    ``{"name"?, "color"?, "scale"?, "bias"?}``: the input called ``name`` (default the first)
    becomes an image whose pixels are ``scale * pixel + bias`` (per channel) in the model.
    """
    if image_input is None or image_input is False:
        return
    if image_input is True:
        options: dict = {}
    elif isinstance(image_input, str):
        options = {"color": image_input}
    elif isinstance(image_input, dict):
        options = dict(image_input)
    else:
        raise ConfigError(
            f"--image-input (image_input=): expected True, a colour or a dict, got "
            f"{type(image_input).__name__}"
        )
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"--image-input (image_input=): unknown key(s) {unknown}; use " + ", ".join(KEYS)
        )
    if options.get("color", "rgb") not in COLORS:
        raise ConfigError(
            f"--image-input (image_input=): color {options['color']!r}; use "
            + ", ".join(map(repr, COLORS))
        )
    if not inputs:
        raise ConfigError("image_input: the model has no input")
    name = options.pop("name", None) or inputs[0].name
    spec = next((s for s in inputs if s.name == name), None)
    if spec is None:
        raise ConfigError(
            f"image_input names {name!r}, but the model's inputs are {[s.name for s in inputs]}"
        )
    if image_input is True:  # the colour from the channels (a dict leaves it to the backend)
        if len(spec.shape) != 3 or spec.shape[0] not in (1, 3):
            raise ConfigError(
                f"image_input: the input shape {spec.shape} (C, H, W) is not an "
                "RGB or grayscale image"
            )
        options["color"] = "rgb" if spec.shape[0] == 3 else "grayscale"
    spec.image = options
