"""What an exported model says about an input whose layout is not the source framework's, in
the words the app developer reads (the feature's shortDescription, shown by Xcode)."""

from __future__ import annotations


def width_description(channels: int, steps: int) -> str:
    """A time series read by 1-D convolutions or pooling is declared ``(C, 1, steps)``: the
    layout Core ML's 2-D convolution works in, so no permute runs on device (the torch and
    Keras frontends both declare it so)."""
    return (
        f"Time series of {steps} steps of {channels} channels, as a MultiArray "
        f"[{channels}, 1, {steps}] (channels, 1, steps): a (steps, channels) window is "
        "transposed and given a middle axis of 1"
    )
