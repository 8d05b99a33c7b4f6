"""PyTorch Lightning: ``StabilityCallback`` forecasts loss spikes during ``Trainer.fit`` and can cap the lr.

``edgeflow.StabilityMonitor`` watches a training loop from its own iterates: it measures the effective
sharpness λ₁(P⁻¹H) (ηS for SGD and heavy-ball momentum), follows the optimizer's period-2 oscillation
along the top eigenvector of P⁻¹H, and forecasts when that oscillation's share of the loss catches up
with the loss itself (a loss spike). This callback builds one with
``StabilityMonitor.for_optimizer`` on the trainer's optimizer, the ``LightningModule`` (or a submodule
named by ``module``) and a sample of training data, updates it after every optimizer step, and writes
its report to the trainer's loggers::

    from edgeflow.integrations.lightning import StabilityCallback

    callback = StabilityCallback(data=(X[:512], Y[:512]), loss="mse", remedy="lr_cap")
    trainer = pl.Trainer(max_steps=1000, callbacks=[callback], logger=CSVLogger("logs"))
    trainer.fit(module, train_loader)

Needs PyTorch Lightning 2.x (the ``pytorch-lightning`` distribution, ``import pytorch_lightning``):
``pip install 'edgeflow[lightning]'``. Importing this module without it raises an ``ImportError``
that names the extra.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.monitor import StabilityMonitor
from edgeflow.optim import OscillationCapped
from edgeflow.oracle.problem import LOSSES

try:
    import pytorch_lightning as pl
except ImportError as err:
    raise ImportError(
        "edgeflow.integrations.lightning needs PyTorch Lightning 2.x: pip install 'edgeflow[lightning]' "
        f"(import pytorch_lightning failed: {err})",
        name="pytorch_lightning",
    ) from err

#: what ``remedy`` may be besides None (no remedy)
REMEDIES = ("lr_cap", "oscillation_cap")
#: the report's entries written to the loggers (each under ``prefix``), where finite
LOGGED = ("effective_sharpness", "threshold", "oscillation", "spike_in", "warning", "batch_sharpness")
#: the Lightning strategies the monitor's Hessian is right for: one process, or data-parallel
#: processes that each hold all the parameters (sharded ones are not the model's parameters)
STRATEGIES = ("SingleDeviceStrategy", "DDPStrategy")
#: StabilityMonitor's keyword options that the callback sets itself (from the live optimizer)
_SET_HERE = ("problem", "lr", "optimizer", "optimizer_options")
MONITOR_OPTIONS = tuple(
    name
    for name, p in inspect.signature(StabilityMonitor.__init__).parameters.items()
    if name != "self" and name not in _SET_HERE and p.kind is not inspect.Parameter.VAR_KEYWORD
)
DEFAULT_MARGIN = 0.05
#: the oscillation cap's own default margin
CAP_MARGIN = 0.1


class StabilityCallback(pl.Callback):
    """Runs ``edgeflow.StabilityMonitor`` on the trainer's optimizer during ``Trainer.fit``.

    At the start of training it builds ``StabilityMonitor.for_optimizer(optimizer, model, data,
    loss)`` on the trainer's single ``torch.optim`` optimizer (SGD with or without momentum or
    Nesterov, RMSprop, Adam, AdamW) and ``model``: the ``LightningModule``, or its submodule named
    ``module`` (``"net"``, ``"encoder.backbone"``) where the optimizer trains only that submodule. The
    optimizer must step exactly the model's parameters, since the monitor's Hessian is over all of
    them. After every optimizer step (``on_train_batch_end`` at a new ``trainer.global_step``; batches
    that only accumulate gradients are skipped) it calls ``monitor.update()``, which reads the
    parameters, the learning rate and the optimizer's state, and writes to every logger of the trainer,
    at the step of the batch that was just trained (Lightning's own step for that batch's metrics), the
    report's finite entries ``effective_sharpness``, ``threshold``, ``oscillation``, ``spike_in``,
    ``warning`` (0 or 1), and with the monitor option ``batch_size`` (the training batch size)
    ``batch_sharpness`` and ``batch_warning``, each named ``prefix + entry``
    (``stability/effective_sharpness``). The effective sharpness and the batch sharpness are
    measured only at some steps (NaN, hence not written, in between; see ``StabilityMonitor``), and
    ``spike_in`` is infinite, hence not written, where no spike is forecast. The metrics go to
    ``logger.log_metrics`` directly, so every one is written whatever the trainer's
    ``log_every_n_steps``, with or without a validation loop.

    The monitor evaluates the model on ``data`` (a sample of the training data, moved to the model's
    device) with the model in evaluation mode, restored afterwards: no dropout, batch norm with its
    running statistics, and the model's buffers left as they were. A non-finite loss or parameter
    raises ``FloatingPointError`` from the monitor, which stops the fit: training has diverged.

    The trainer's strategy must be ``SingleDeviceStrategy`` or ``DDPStrategy``, where every process
    holds all of the parameters (a sharded one, FSDP or DeepSpeed, is refused). Under DDP each process
    keeps its share of ``data`` and every evaluation is all-reduced (``Problem.from_module`` under
    ``torch.distributed``), so all processes measure, forecast and cap the learning rate alike.

    ``remedy="lr_cap"``: at a warning, every parameter group's learning rate (and the ``base_lrs`` of
    the trainer's schedulers of this optimizer, so that a schedule computed from them keeps the cap)
    is multiplied by ``scale = min(1, (1 − margin)·threshold / a)``, where ``a`` is the last measured
    effective sharpness carried to the current learning rate (λ₁(P⁻¹H) is proportional to η for every
    supported optimizer); ``scale`` is logged as ``prefix + "lr_scale"`` at each warning, and the
    monitor measures again at the next step. A scheduler that sets the rate from bounds of its own
    (the ``max_lr`` of ``OneCycleLR`` and ``CyclicLR``) overrides the cap at its next step, and the
    next warning caps again. ``lr_scale`` on the callback is the product of the scales applied.

    ``remedy="oscillation_cap"``: every optimizer step is capped as ``edgeflow.OscillationCapped``
    caps it (``edgeflow.remedies.OscillationCap``: the step along the direction the iterates
    oscillate in is shortened where the oscillation's share of the loss would pass 5%, and the step
    across it scaled by the curvature the last steps crossed against the threshold), from the
    parameters and gradients before the step and the loss ``training_step`` returned (a tensor, or a
    dict with ``"loss"``); no oracle call. ``margin`` is the cap's (default 0.1: the step across is
    kept stable up to (1 − margin/2)·threshold). ``capped`` (0 or 1) is logged at every step. The
    cap reads the batch's loss and gradient: with mini-batches it sees their noise too, and it has
    been measured (``benchmarks/budget.py``) on full batches only.

    Args:
        data: ``(X, Y)``, the sample of training data the monitor measures on (inputs the model takes
            and targets: class indices or one-hot / real targets for ``"mse"``, class indices or
            probabilities for ``"ce"``).
        loss: ``"mse"`` (½·mean‖f(x) − y‖²) or ``"ce"`` (mean cross-entropy): the loss whose Hessian
            the monitor measures, which should be the one the model is trained on.
        module: the dotted name of the submodule the optimizer trains, or None for the
            ``LightningModule`` itself.
        remedy: None (monitor and log only), ``"lr_cap"`` or ``"oscillation_cap"``.
        margin: with ``remedy="lr_cap"``: the cap is (1 − margin) × the threshold; in [0, 1),
            default 0.05; with ``"oscillation_cap"``, the cap's margin (default 0.1).
        prefix: the metrics' name prefix.
        **monitor_options: passed to ``StabilityMonitor`` (``horizon``, ``sharpness_every``,
            ``near_every``, ``max_every``, ``confirm``, ``spike_ratio``, ...).

    Attributes:
        monitor: the ``StabilityMonitor`` (None before training starts).
        report: the last report ``monitor.update()`` returned (None before the first step).
        lr_scale: the product of the learning-rate scales the remedy applied (1.0 without one).
    """

    def __init__(
        self,
        data: tuple[Tensor, Tensor],
        loss: str = "mse",
        *,
        module: str | None = None,
        remedy: str | None = None,
        margin: float | None = None,
        prefix: str = "stability/",
        **monitor_options: Any,
    ) -> None:
        super().__init__()
        if not (
            isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)
        ):
            raise ConfigError(f"data must be a pair of tensors (X, Y), got {_kind(data)}")
        if not isinstance(loss, str) or loss not in LOSSES:
            raise invalid_choice("loss", loss, LOSSES)
        if module is not None and (not isinstance(module, str) or not module):
            raise ConfigError(
                f"module must be the dotted name of a submodule (e.g. 'net') or None, got {module!r}"
            )
        if remedy is not None and remedy not in REMEDIES:
            raise invalid_choice("remedy", remedy, (*REMEDIES, None))
        if margin is not None and remedy is None:
            raise ConfigError(f"margin={margin!r} goes with a remedy: {' or '.join(map(repr, REMEDIES))}")
        if margin is None:
            margin = CAP_MARGIN if remedy == "oscillation_cap" else DEFAULT_MARGIN
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
            raise ConfigError(f"margin must be a number in [0, 1), got {margin!r}")
        if not isinstance(prefix, str):
            raise ConfigError(f"prefix must be a string, got {type(prefix).__name__}")
        unknown = sorted(set(monitor_options) - set(MONITOR_OPTIONS))
        if unknown:
            raise ConfigError(
                f"unknown StabilityMonitor option {unknown[0]!r}; valid options: {', '.join(MONITOR_OPTIONS)}"
            )
        self.data = (data[0], data[1])
        self.loss = loss
        self.module_name = module
        self.remedy = remedy
        self.margin = float(margin)
        self.prefix = prefix
        self.monitor_options = monitor_options
        self.monitor: StabilityMonitor | None = None
        self.report: dict | None = None
        self.lr_scale = 1.0
        self._model: nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._global_step = -1  # the trainer's global_step at the last update
        self._measured: tuple[float, float] | None = None  # (effective sharpness, lr) when last measured
        self._capped: OscillationCapped | None = None  # remedy="oscillation_cap"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        strategy = type(trainer.strategy).__name__
        if strategy not in STRATEGIES:
            raise ConfigError(
                f"StabilityCallback needs every process to hold all of the model's parameters; the "
                f"trainer's strategy is {strategy}; valid: {', '.join(STRATEGIES)}"
            )
        optimizers = list(trainer.optimizers)
        if len(optimizers) != 1:
            raise ConfigError(
                f"StabilityCallback monitors one optimizer; configure_optimizers gave {len(optimizers)}"
            )
        self._optimizer = optimizers[0]
        self._model = self._resolve_module(pl_module)
        trained = {id(p) for group in self._optimizer.param_groups for p in group["params"]}
        owned = {id(p) for p in self._model.parameters()}
        if trained != owned:
            what = "the LightningModule" if self.module_name is None else f"module {self.module_name!r}"
            raise ConfigError(
                f"the optimizer steps {len(trained)} parameter tensors and {what} has {len(owned)}, "
                f"{len(owned - trained)} of them not in the optimizer: the monitor's Hessian is over "
                "exactly the parameters the optimizer steps; name the submodule it trains with "
                "StabilityCallback(..., module='name')"
            )
        with _evaluation_mode(self._model):
            self.monitor = StabilityMonitor.for_optimizer(
                self._optimizer, self._model, self.data, self.loss, **self.monitor_options
            )
        self.report, self.lr_scale, self._measured = None, 1.0, None
        self._global_step = trainer.global_step
        if self.remedy == "oscillation_cap":
            self._capped = OscillationCapped(self._optimizer, margin=self.margin)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._capped is not None:
            self._capped.before_step()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.monitor is None or trainer.global_step == self._global_step:
            return  # gradients accumulated, no step taken
        self._global_step = trainer.global_step
        capped = None
        if self._capped is not None:
            self._capped.after_step(_training_loss(outputs))
            capped = float(self._capped.cap.capped)
        with _evaluation_mode(self._model):
            report = self.monitor.update()
        self.report = report
        if math.isfinite(report["effective_sharpness"]):
            self._measured = (report["effective_sharpness"], self.monitor.optimizer.lr)
        metrics = {self.prefix + key: float(report[key]) for key in LOGGED if math.isfinite(report[key])}
        if self.monitor.batch_size is not None:
            metrics[self.prefix + "batch_warning"] = float(report["batch_warning"])
        if self.remedy == "lr_cap" and report["warning"]:
            metrics[self.prefix + "lr_scale"] = self._cap_lr(trainer, report["threshold"])
        if capped is not None:
            metrics[self.prefix + "capped"] = capped
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step - 1)

    def _resolve_module(self, pl_module: nn.Module) -> nn.Module:
        if self.module_name is None:
            return pl_module
        try:
            return pl_module.get_submodule(self.module_name)
        except AttributeError:
            children = ", ".join(name for name, _ in pl_module.named_children()) or "none"
            raise ConfigError(
                f"module {self.module_name!r} is not a submodule of {type(pl_module).__name__}; "
                f"its submodules: {children}"
            ) from None

    def _cap_lr(self, trainer: pl.Trainer, threshold: float) -> float:
        """Scales the learning rate so that the effective sharpness is at most (1 − margin)·threshold;
        returns the scale (1.0 where it is below that already)."""
        if self._measured is None:  # the monitor warns only after a measurement
            raise RuntimeError(
                "StabilityCallback: a warning before any measurement of the effective sharpness"
            )
        measured, lr_then = self._measured
        current = measured * self.monitor.optimizer.lr / lr_then
        scale = min(1.0, (1 - self.margin) * threshold / current) if current > 0 else 1.0
        if scale < 1.0:
            for group in self._optimizer.param_groups:
                group["lr"] = group["lr"] * scale
            for config in trainer.lr_scheduler_configs:
                scheduler = config.scheduler
                if scheduler.optimizer is self._optimizer and hasattr(scheduler, "base_lrs"):
                    scheduler.base_lrs = [lr * scale for lr in scheduler.base_lrs]
            self.lr_scale *= scale  # the monitor reads the new η and measures again at its next update
        return scale


@contextmanager
def _evaluation_mode(model: nn.Module) -> Iterator[None]:
    """``model`` and every submodule in evaluation mode, each restored to its own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _training_loss(outputs: Any) -> Tensor:
    """The loss ``training_step`` returned: the tensor itself, or a dict's ``"loss"``."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), Tensor):
        return outputs["loss"]
    raise ConfigError(
        "remedy='oscillation_cap' reads the loss training_step returns (a tensor, or a dict with "
        f"'loss'); it returned {_kind(outputs)}"
    )


def _kind(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: ({', '.join(type(v).__name__ for v in value)})"
    return type(value).__name__
