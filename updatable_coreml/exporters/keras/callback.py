"""``UpdatableCoreMLExport``: a Keras callback that exports the model being trained.

An ordinary class: this module imports Keras when it is imported, which the package does
only when ``UpdatableCoreMLExport`` is first asked for (``exporters.keras.__getattr__``), so
importing the package stays free of Keras.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Union

from ...errors import ConfigError, UnsupportedError
from ...frameworks import quiet_import
from ...options import ExportOptions
from .context import Context, PathLike
from .export import export_keras
from .training import fit_arguments, map_loss, map_optimizer

if TYPE_CHECKING:
    from ...export import ExportReport

keras: Any = quiet_import("keras")  # Any: the base class below comes from the imported module


class UpdatableCoreMLExport(keras.callbacks.Callback):
    """Export the model being trained to an updatable ``.mlmodel`` when ``fit`` ends.

    ``path`` may contain ``{epoch}`` when ``every_n_epochs`` is set (like ModelCheckpoint).
    The batch size of the ``fit`` call is used unless given. The device's default epochs
    are ``epochs`` if given, else the on-device default (``options.DEFAULTS``), never the
    server's ``fit(epochs=...)`` unless asked with ``epochs="fit"``. Every other keyword
    is an ``ExportOptions`` field for ``export_keras``. Quiet like Keras's own callbacks;
    ``verbose=True`` prints the report. Options Core ML cannot carry (class weights, label
    smoothing, nesterov…) are refused when training *begins*, not after it. The written
    file is validated again from disk; ``self.report`` holds the last ``ExportReport``.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        every_n_epochs: Optional[int] = None,
        batch_size: Optional[int] = None,
        epochs: Union[int, str, None] = None,
        verbose: bool = False,
        **export_options,
    ) -> None:
        super().__init__()
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ConfigError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if isinstance(epochs, str) and epochs != "fit":
            raise ConfigError(
                f"epochs={epochs!r}: give a number, or 'fit' to copy the epochs of the fit call"
            )
        ExportOptions.build(
            **{k: v for k, v in export_options.items() if k not in ("loss", "optimizer")}
        )  # refuse typos now
        self.path = str(path)
        self.every_n_epochs = every_n_epochs
        self.batch_size = batch_size
        self.epochs = epochs
        self.verbose = verbose
        self.export_options = export_options
        self.report: Optional[ExportReport] = None
        self._fit_batch_size: Optional[int] = None
        self._warnings: list[str] = []
        self._epochs_done = 0
        self._exported_epoch: Optional[int] = None

    def on_train_begin(self, logs=None) -> None:
        fit = fit_arguments(self.model)
        self._fit_batch_size = fit.get("batch_size")
        self._epochs_done, self._exported_epoch = 0, None
        ctx = Context(None, self.export_options.get("allow_unsupported", False))
        if fit.get("class_weight"):
            ctx.refuse(
                "fit(class_weight=...) cannot be carried: Core ML weighs every example the same"
            )
        map_loss(self.export_options.get("loss") or self.model.loss, ctx)
        map_optimizer(self.export_options.get("optimizer") or self.model.optimizer, ctx)
        self._warnings = ctx.warnings

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self._epochs_done = epoch + 1
        if self.every_n_epochs and self._epochs_done % self.every_n_epochs == 0:
            self._export(self.path.format(epoch=self._epochs_done))

    def on_train_end(self, logs=None) -> None:
        if self._exported_epoch != self._epochs_done:  # not just written by on_epoch_end
            self._export(self.path.format(epoch=self._epochs_done))

    def _export(self, path: str) -> None:
        from ...validator import is_valid, validate

        options = dict(self.export_options)
        options.setdefault("batch_size", self.batch_size or self._fit_batch_size)
        epochs = self.params.get("epochs") if self.epochs == "fit" else self.epochs
        if epochs is not None:
            options.setdefault("epochs", epochs)
        report = export_keras(self.model, path, **options)
        report.warnings[:0] = self._warnings
        findings = validate(path)
        if not is_valid(findings):
            raise UnsupportedError(
                f"{path}: the written model does not validate: " + "; ".join(map(str, findings))
            )
        self.report = report
        self._exported_epoch = self._epochs_done
        if self.verbose:
            print(report.summary())
