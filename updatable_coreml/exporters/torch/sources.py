"""Torch models from files, for the CLI: a ``.pt2`` program or a factory plus weights."""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ...errors import ConfigError, ModelFileError, UntrustedSourceError, first_line
from ...options import EXAMPLE_DTYPES


@dataclass
class TorchSource:
    """A model loaded from files: a module or an ExportedProgram, plus example inputs."""

    model: Any
    example_inputs: tuple


def load_torch_source(
    spec: str,
    weights: Optional[Union[str, os.PathLike]] = None,
    example_shape: Optional[Sequence[int]] = None,
    *,
    trust_source: bool = False,
    example_dtype: str = EXAMPLE_DTYPES[0],
) -> TorchSource:
    """Load ``model.pt2`` (``torch.export.save``) or ``module:factory`` / ``file.py:factory``.

    A factory is called without arguments (it is the user's own code, imported as such);
    ``weights`` is a state dict loaded with ``weights_only=True`` (never arbitrary
    unpickling). ``example_shape`` is one example's shape, e.g. ``(3, 224, 224)``, filled with
    zeros of ``example_dtype`` (``"int64"`` for token ids); a ``.pt2`` carries its own example
    inputs. ``torch.export.load`` unpickles parts of a ``.pt2``
    without ``weights_only`` (a crafted file runs code), so a ``.pt2`` is only loaded with
    ``trust_source=True`` (``--trust-source``): for files you made yourself.
    """
    if spec.endswith(".pt2"):
        if not trust_source:
            raise UntrustedSourceError(
                f"{spec}: a .pt2 program is read by torch.export.load, which unpickles parts of "
                "the file and can run code stored in it; pass --trust-source (trust_source=True) "
                "only for a file you made, or export the model to ONNX, or give module:factory "
                "with --weights (a state dict, loaded safely)"
            )
        program = _load_program(Path(spec))
        inputs = (
            _example_from_shape(example_shape, example_dtype)
            if example_shape
            else tuple(program.example_inputs[0])
            if program.example_inputs
            else None
        )
        if inputs is None:
            raise ConfigError(f"{spec}: the program stores no example inputs; give example_shape")
        if weights is not None:
            raise ConfigError(f"{spec}: a .pt2 program carries its weights; drop weights")
        return TorchSource(program, inputs)
    if example_shape is None:
        raise ConfigError(f"{spec}: give example_shape, one example's input shape, e.g. 3,224,224")
    module = _call_factory(spec)
    if weights is not None:
        state = _load_state_dict(Path(weights))
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3]) or first_line(
                exc
            ).rstrip(".")
            raise ModelFileError(
                f"{weights}: does not match {spec} ({detail[:300]}); save the "
                "state dict of the same architecture"
            ) from None
    return TorchSource(module, _example_from_shape(example_shape, example_dtype))


def _example_from_shape(shape: Sequence[int], dtype: str = EXAMPLE_DTYPES[0]) -> tuple:
    import torch

    dims = [int(d) for d in shape]
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"example shape {list(shape)} must be positive integers")
    if dtype not in EXAMPLE_DTYPES:
        raise ConfigError(f"example dtype {dtype!r}: choose one of {', '.join(EXAMPLE_DTYPES)}")
    return (torch.zeros(1, *dims, dtype=getattr(torch, dtype)),)


def _load_program(path: Path) -> Any:
    import torch

    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        return torch.export.load(str(path))
    except Exception as exc:
        raise ModelFileError(
            f"{path}: not a torch.export program ({first_line(exc).rstrip('.')})"
        ) from None


def _load_state_dict(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(
            f"{path}: not a state dict loadable with weights_only=True "
            f"({type(exc).__name__}); save it with torch.save(model.state_dict())"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: holds a {type(state).__name__}, expected a state dict")
    return state


def _call_factory(spec: str) -> Any:
    import torch

    target, _, factory = spec.rpartition(":")
    if not target or not factory:
        raise ConfigError(
            f"{spec!r}: expected a .pt2 file or 'package.module:factory' / 'file.py:factory'"
        )
    module = _import_target(target)
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ConfigError(f"{target} has no callable {factory!r}")
    model = fn()
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"{spec} returned a {type(model).__name__}, expected a torch.nn.Module")
    return model


def _import_target(target: str) -> Any:
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such file")
        loader_spec = importlib.util.spec_from_file_location(path.stem, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ModelFileError(f"{path}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise ConfigError(f"cannot import {target!r}: {exc}") from None
