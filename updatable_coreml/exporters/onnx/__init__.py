"""ONNX frontend: ``export_onnx(model, path, loss=..., optimizer=...)``.

Layout: ``load`` (untrusted ONNX files, external data), ``translate`` (ONNX ops -> IR, one
converter per op type) and ``export`` (what trains, the entry point). onnx is imported inside
the functions that need it, so importing this package is cheap.
"""

from __future__ import annotations

from .export import export_onnx, onnx_to_graph, select_trainable, wants_logits
from .load import load_onnx

__all__ = ["export_onnx", "load_onnx", "onnx_to_graph", "select_trainable", "wants_logits"]
