"""``export_keras(model, path)``: a built Keras 3 model -> IR graph -> updatable ``.mlmodel``.

What trains comes from ``layer.trainable`` (or an explicit list), the loss and optimizer from
``model.compile`` (or arguments), and everything we had to decide for the user is recorded in
the returned ``ExportReport``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ...options import ExportOptions
from ..common.coremltools import translate_or_convert
from .backbone import keras_head
from .context import PathLike, _keras
from .trace import keras_to_graph
from .training import _non_unit_loss_weights, map_loss, map_optimizer

if TYPE_CHECKING:
    from ...export import ExportReport


def export_keras(
    model,
    path: PathLike,
    *,
    loss=None,
    optimizer=None,
    options: Optional[ExportOptions] = None,
    **kwargs: Any,
) -> ExportReport:
    """Export a built Keras 3 model to an updatable Core ML ``.mlmodel`` at ``path``.

    Defaults come from the model: ``layer.trainable`` decides which Dense/Conv layers train
    on device (or name them in ``trainable``), the compiled loss and optimizer decide the
    update parameters (or pass ``loss``/``optimizer``: a Keras loss/optimizer or our
    ``SGD``/``Adam``). Everything else is an ``ExportOptions`` field, given as ``options`` or
    as keywords: ``class_labels`` makes a classifier (``extra_class_slots`` adds placeholder
    labels ``user0``… for classes the app learns later); options Core ML cannot carry raise
    ``UnsupportedError`` unless ``allow_unsupported=True`` turns them into report warnings;
    ``pipeline=True`` writes a frozen backbone + updatable head pipeline whose backbone is
    made by ``backbone='frontend'|'coremltools'|'auto'`` (see ``backbone.py``).
    Returns an ``ExportReport``; writes nothing when the export fails.
    """
    from ...export import export_graph

    options = ExportOptions.build(options, **kwargs)
    keras = _keras()
    trainable, image_input, allow = (
        options.trainable,
        options.image_input,
        options.allow_unsupported,
    )
    (graph, ctx), converted = translate_or_convert(  # pipeline=True: see backbone.py
        options.backbone,
        options.pipeline,
        lambda: keras_to_graph(
            model, trainable=trainable, image_input=image_input, allow_unsupported=allow
        ),
        lambda reason: keras_head(
            model,
            trainable=trainable,
            image_input=image_input,
            allow_unsupported=allow,
            reason=reason,
        ),
    )
    loss_map = map_loss(loss if loss is not None else getattr(model, "loss", None), ctx)
    if _non_unit_loss_weights(model):
        ctx.refuse(
            "compile(loss_weights=...) cannot be carried: Core ML trains one unweighted loss"
        )
    opt, notes = map_optimizer(
        optimizer if optimizer is not None else getattr(model, "optimizer", None), ctx
    )
    assumptions = list(notes) + options.default_notes()
    if loss_map.source_name == "categorical_crossentropy":
        assumptions.append(
            "categorical_crossentropy: on device the target is the class label "
            "(or index), not a one-hot vector"
        )
    return export_graph(
        graph,
        path,
        loss=loss_map.kind,
        optimizer=opt,
        from_logits=loss_map.from_logits,
        options=options,
        source=f"keras=={keras.__version__} ({keras.backend.backend()} backend)",
        assumptions=assumptions,
        warnings=ctx.warnings,
        backbone=converted,
    )
