"""Capture a torch module with ``torch.export`` (torch is imported inside the functions)."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError, UnsupportedError, first_line


def as_example_inputs(example_inputs: Any) -> tuple:
    """A tensor, or a tuple/list of tensors, as the positional-argument tuple export wants."""
    import torch

    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and all(
        isinstance(t, torch.Tensor) for t in example_inputs
    ):
        return tuple(example_inputs)
    raise ConfigError("example_inputs must be a tensor or a tuple of tensors (with a batch axis)")


def capture(module: Any, example_inputs: Any) -> Any:
    """``torch.export`` the module in eval mode (restoring its mode), or pass a program through."""
    import torch

    if isinstance(module, torch.export.ExportedProgram):
        return module
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(
            f"expected a torch.nn.Module or an ExportedProgram, got {type(module).__name__}"
        )
    inputs = as_example_inputs(example_inputs)
    was_training = module.training
    module.eval()
    try:
        return torch.export.export(module, inputs)
    except Exception as exc:
        _raise_if_eager_fails(module, inputs)
        raise UnsupportedError(
            f"torch.export could not capture the model: {first_line(exc).rstrip('.')}; "
            "make forward() traceable (no data-dependent control flow)"
        ) from exc
    finally:
        module.train(was_training)


def _raise_if_eager_fails(module: Any, inputs: tuple) -> None:
    """Tell a model that cannot run on ``example_inputs`` apart from one export cannot trace."""
    import torch

    try:
        with torch.no_grad():
            module(*inputs)
    except Exception as exc:
        raise ConfigError(
            f"the model fails on example_inputs (shapes "
            f"{[list(t.shape) for t in inputs]}): {first_line(exc).rstrip('.')}"
        ) from exc
