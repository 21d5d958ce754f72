"""``export_torch(module, example_inputs, path, loss=..., optimizer=...)``.

The module is captured with ``torch.export`` in eval mode, translated op by op into the IR
(``translate``), and handed to the shared ``export_graph`` pipeline, with the loss and
optimizer mapped by ``training``. torch is imported inside the functions that need it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional, Union

from ...options import ExportOptions
from ..common.coremltools import translate_or_convert
from ..common.refusals import Refusals
from .backbone import torch_head
from .graph import torch_to_graph
from .training import map_loss, map_optimizer, optimizer_assumptions

if TYPE_CHECKING:
    from ...export import ExportReport


def export_torch(
    module: Any,
    example_inputs: Any,
    path: Union[str, os.PathLike],
    *,
    loss: Any,
    optimizer: Any = None,
    options: Optional[ExportOptions] = None,
    **kwargs: Any,
) -> ExportReport:
    """Export a torch module (or a ``torch.export`` program) as an updatable Core ML model.

    ``optimizer`` is a ``torch.optim.SGD``/``Adam`` (its hyperparameters and the parameters it
    holds define the training), one of our ``SGD``/``Adam``, or None (SGD, lr 0.01).
    ``loss`` is ``nn.CrossEntropyLoss()``, ``nn.NLLLoss()`` (after log_softmax) or
    ``nn.MSELoss()``. Everything else is an ``ExportOptions`` field, given as ``options`` or
    as keywords: ``trainable`` names modules/parameters to train instead of the optimizer's;
    inputs keep forward()'s argument names unless ``input_names`` renames them;
    ``image_input`` (``{"color": "rgb", "scale": 1/255, "bias": [...]}``) makes the first
    input an image whose preprocessing gives the tensor the module expects; ``pipeline=True``
    writes a frozen backbone and the updatable head as a pipeline, ``backbone`` says who makes
    the backbone: ``'frontend'`` (us), ``'coremltools'`` (``ct.convert`` of the captured
    graph up to the tensor the first trainable layer reads, for any module) or ``'auto'``
    (coremltools only when we refuse an op; see ``backbone.py``). Returns the ``ExportReport``.
    """
    import torch

    from ...export import export_graph

    options = ExportOptions.build(options, **kwargs)
    refusals = Refusals(options.allow_unsupported)
    image_input, input_names, trainable = (
        options.image_input,
        options.input_names,
        options.trainable,
    )
    state, converted = translate_or_convert(
        options.backbone,
        options.pipeline,
        lambda: torch_to_graph(
            module,
            example_inputs,
            optimizer=optimizer,
            trainable=trainable,
            image_input=image_input,
            input_names=input_names,
            refusals=refusals,
        ),
        lambda reason: torch_head(
            module,
            example_inputs,
            optimizer=optimizer,
            trainable=trainable,
            image_input=image_input,
            input_names=input_names,
            refusals=refusals,
            reason=reason,
        ),
    )
    plan = map_loss(loss, state, refusals)
    core_optimizer = map_optimizer(optimizer, refusals)
    assumptions = optimizer_assumptions(optimizer, core_optimizer) + options.default_notes()
    return export_graph(
        state.graph,
        path,
        loss=plan.kind,
        from_logits=plan.from_logits,
        optimizer=core_optimizer,
        options=options,
        source=f"torch=={torch.__version__}",
        assumptions=assumptions,
        warnings=refusals.warnings,
        backbone=converted,
    )
