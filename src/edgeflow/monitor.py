"""Forecasting a training run's loss spikes from its own iterates, in Edge Flow's terms.

An optimizer at the edge of stability oscillates along the top eigenvector of P⁻¹H (P its
preconditioner; P = I/η for GD): in the frame x = P^{1/2}w, ``x_k ≈ c_k + s_k r_k ũ`` with
alternating signs. The amplitude grows by the optimizer's period-2 factor |z₋(a)| per step (|1 − a|
for GD), a = λ₁(P⁻¹H) the effective sharpness: it grows once a exceeds the optimizer's threshold
and decays below, never below the rounding floor every step injects. The oscillation adds ½·a·r²
to the loss; a loss spike comes when that share reaches ``spike_ratio`` × the loss of the center.
As it grows it also pulls a down (Edge Flow's symmetrized loss: the center descends ½r²·a too), and
the oscillation peaks: the run survives it when the peak stays below the spike.

``StabilityMonitor`` measures a and ũ by warm-started Lanczos now and then (adaptively), follows r
from the rounding floor, or measures it where the iterates resolve it, follows a between
measurements and forecasts both with the self-stabilization model ``da/dt = sharpening − pull·r²``,
and warns when a spike is forecast within the horizon while the oscillation grows. docs/model.md
derives each piece.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.optimizers import GD_NAME, Optimizer, State, make_optimizer
from edgeflow.optimizers.torch_optim import read_torch_optimizer, read_torch_state
from edgeflow.oracle import Problem, SharpnessTracker
from edgeflow.processes.edge import NOISE_FLOOR, unit_roundoff
from edgeflow.utils import learning_rate, positive_float, positive_int

#: differences of orders 1, 3, 5 within this ratio: the iterates resolve the oscillation
RESOLVED = 0.7
#: from this fraction of the threshold on the effective sharpness is measured every ``near_every`` steps
NEAR = 0.9
#: Lanczos's relative residual: eigenvalues within about 1%, in 4–6 warm-started HVPs 10–50 steps apart
#: on the digits MLP at η = 0.4 (1e-3: within 1e-5, in 11–16)
TRACKING_TOL = 3e-2
#: steps of resolved oscillation the self-stabilization rates are fitted over (two EoS cycles or so)
CYCLE_WINDOW = 80
#: the fewest of them a fit needs
CYCLE_FIT_MIN = 30
#: batch sharpness: mini-batches per measurement, steps between measurements, and the warning rule's
#: window of measurements and statistic (benchmarks/minibatch.py scores the variants; docs/minibatch.md)
BATCHES = 4
BATCH_EVERY = 5
BATCH_WINDOW = 1
BATCH_STATISTICS = ("median", "mean")
BATCH_STATISTIC = "median"


def batch_sharpness_warning(
    ratios: Sequence[float], window: int = BATCH_WINDOW, statistic: str = BATCH_STATISTIC
) -> bool:
    """The batch-sharpness warning rule: the ``statistic`` ("median" or "mean") of the last
    ``window`` measured ratios batch sharpness / threshold is at least 1 (False with fewer
    measurements). One measurement is a mean over a few random batches, its noise of the order of
    its excess at the edge, and a few are far off: Adam's first, whose P comes from a single
    batch's gradient, and any taken while the parameters blow up. A window trades a few
    measurements' lead for fewer false warnings, and its median ignores the odd outlier that
    would carry a mean."""
    window = positive_int("window", window)
    if statistic not in BATCH_STATISTICS:
        raise invalid_choice("statistic", statistic, BATCH_STATISTICS)
    if len(ratios) < window:
        return False
    last = list(ratios)[-window:]
    value = float(np.median(last)) if statistic == "median" else sum(last) / window
    return value >= 1.0


class StabilityMonitor:
    """Watches a training loop (GD, momentum, RMSProp or Adam) and forecasts its next loss spike.

    ``rep = mon.update(w, state=...)`` after each step, with the current iterate (a flat tensor, or the
    model for a monitor made by ``from_module``), the optimizer's state in edgeflow's form where its
    preconditioner depends on it (RMSProp, Adam), and optionally the loss there (else it is evaluated
    at the steps that need it). A monitor made by ``for_optimizer`` reads all of that from the model
    and a live ``torch.optim`` optimizer: ``rep = mon.update()``. Returns:

    * ``effective_sharpness``: λ₁(P⁻¹H) (ηS for GD and momentum), NaN at steps where it is not
      measured (adaptively: rarely far below the threshold, every ``near_every`` steps near it;
      every ``sharpness_every`` steps if that is given);
    * ``threshold``: the optimizer's stability threshold on it (2 for GD, 2 + 2β for heavy-ball,
      (2 + 2β₁)/(1 − β₁) for Adam, lower while Adam's bias correction of m is large);
    * ``sharpness``: λ_max(∇²L(w)) where P is a multiple of the identity (GD, momentum), else NaN;
    * ``oscillation``: the oscillation's amplitude along the tracked eigenvector (one step back), in
      the parameters' units, measured or tracked as above;
    * ``growth``: its per-step growth factor: measured where the iterates resolve it, the optimizer's
      period-2 factor |z₋| at the last effective sharpness before (|ηS − 1| for GD);
    * ``spike_in``: forecast steps until the oscillation's share of the loss reaches ``spike_ratio``
      × the center's loss (inf if it is not on course to get there within ``max_forecast`` steps);
    * ``warning``: ``spike_in <= horizon`` (at each of the last ``confirm`` steps where the
      forecast comes from the measured amplitude);
    * ``batch_sharpness``: with ``batch_size``, the batch sharpness of mini-batch training in the same
      units as ``effective_sharpness`` and against the same threshold (``Problem.batch_sharpness``:
      E_B[g_BᵀP⁻¹H_BP⁻¹g_B / g_BᵀP⁻¹g_B] over ``batches`` mini-batches of ``batch_size`` examples,
      η·g_BᵀH_Bg_B/‖g_B‖² for SGD), measured every ``batch_every`` steps, NaN at the others (and
      always without ``batch_size``);
    * ``batch_warning``: the last measurement of batch sharpness / threshold is at least 1 (with
      ``batch_window`` k > 1: the median of the last k; ``batch_sharpness_warning``), held until the
      next measurement; False without ``batch_size``.

    In mini-batch training, Andreyev & Beneventano ("Edge of Stochastic Stability", arXiv
    2412.20553) find the batch sharpness, not the full-batch sharpness, hovering at the threshold
    under SGD; docs/minibatch.md measures how well each forecasts the full-batch loss's spikes there
    (SGD and Adam, batch sizes from full down to 32). The full-batch measurements use ``problem``'s
    data (give ``for_optimizer`` the training set or a sample of it); the mini-batches are drawn from
    the same data.

    The oscillation is followed in the frame x = P^{1/2}w, where the step is the optimizer's with
    P = I and the tracked direction is the top eigenvector ũ of P^{-1/2}HP^{-1/2}; its share of
    the loss is ½·λ₁(P⁻¹H)·r_x².
    """

    def __init__(
        self,
        problem: Problem,
        lr: float | None = None,
        horizon: int = 50,
        *,
        optimizer: Optimizer | str | None = None,
        optimizer_options: dict | None = None,
        sharpness_every: int | None = None,
        near_every: int = 30,
        max_every: int = 100,
        trend_window: int = 2,
        growth_window: int = 10,
        confirm: int = 5,
        spike_ratio: float = 0.2,
        max_forecast: int = 2_000,
        seed: int = 0,
        batch_size: int | None = None,
        batches: int = BATCHES,
        batch_every: int = BATCH_EVERY,
        batch_window: int = BATCH_WINDOW,
    ) -> None:
        if not isinstance(problem, Problem):
            raise ConfigError(f"problem must be an edgeflow.Problem, got {type(problem).__name__}")
        self.problem = problem
        self.optimizer = _resolve_optimizer(lr, optimizer, optimizer_options)
        self.l2 = 0.0  # SGD's coupled weight decay (for_optimizer)
        state = self.optimizer.init(problem.w0)
        # an optimizer whose P is a number whatever its state needs no state from the caller
        self.needs_state = not isinstance(self.optimizer.inverse_preconditioner(state), float)
        self.horizon = positive_int("horizon", horizon)
        self.sharpness_every = (
            None if sharpness_every is None else positive_int("sharpness_every", sharpness_every)
        )
        self.near_every = positive_int("near_every", near_every)
        self.max_every = positive_int("max_every", max_every)
        self.spike_ratio = positive_float("spike_ratio", spike_ratio)
        self.max_forecast = positive_int("max_forecast", max_forecast)
        self.tracker = SharpnessTracker(problem, seed=seed, tol=TRACKING_TOL, min_iter=2)
        self.model: nn.Module | None = None
        self._torch: tuple[torch.optim.Optimizer, list[Tensor]] | None = None
        self.step = -1
        self.next_measurement = 0
        self.iterates: deque[Tensor] = deque(maxlen=6)  # for the fifth difference
        # (step, λ₁(P⁻¹H)) at the measured steps
        self.sharpness_history: deque[tuple[int, float]] = deque(
            maxlen=positive_int("trend_window", trend_window)
        )
        if isinstance(growth_window, bool) or not isinstance(growth_window, int) or growth_window < 3:
            raise ConfigError(
                f"growth_window must be an integer ≥ 3 (a quadratic fit), got {growth_window!r}"
            )
        # measured amplitudes (NaN where the iterates do not resolve the oscillation)
        self.shown_history: deque[tuple[int, float]] = deque(maxlen=growth_window)
        # a warning is confirmed by ``confirm`` consecutive forecasts within the horizon
        self._due: deque[bool] = deque(maxlen=positive_int("confirm", confirm))
        self.projector: Tensor | None = None  # ũ/P^{-1/2}: the x-coordinate along ũ of an iterate w
        self.mode_norm = math.nan  # ‖P^{-1/2}ũ‖: the parameters' length of a unit step of x along ũ
        self.amplitude = math.nan  # the tracked oscillation r_x
        # (pull, sharpening rate) of the self-stabilization model, measured near the threshold
        self.stabilization: tuple[float, float | None] = (0.0, None)
        self.a_model = math.nan  # a between measurements (``_follow_sharpness``)
        self._pulled = 0.0  # Σ pull·r² since the last measurement
        self._pull_velocity = 0.0  # the pull through the optimizer's momentum, per step
        self.preconditioner_pull = 0.0  # da/dt per r_x² through P's growth (RMSProp, Adam)
        # (step, r_x, measured growth rate) at the steps where the iterates resolve the oscillation
        self.cycle_history: deque[tuple[int, float, float]] = deque(maxlen=CYCLE_WINDOW)
        self.amplitude_at_loss = 0.0  # r_x when the last loss was given or evaluated
        self.loss = math.nan  # the last loss given or evaluated
        self._last_growth = 1.0
        self._floor = NOISE_FLOOR * unit_roundoff(problem.dtype)
        self.batch_size = None
        if batch_size is not None:
            n = problem.examples
            if n is None or problem.sharded:
                raise ConfigError(
                    "batch_size needs a problem that is a mean over examples, not sharded (from_module "
                    f"or for_optimizer without torch.distributed); got batch_size={batch_size!r}"
                )
            self.batch_size = positive_int("batch_size", batch_size, at_most=n)
        self.batches = positive_int("batches", batches)
        self.batch_every = positive_int("batch_every", batch_every)
        # batch sharpness / threshold at the last ``batch_window`` measurements
        self.batch_ratios: deque[float] = deque(maxlen=positive_int("batch_window", batch_window))
        self._batch_generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        data: tuple[Tensor, Tensor],
        lr: float | None = None,
        loss: str = "mse",
        **kwargs,
    ) -> StabilityMonitor:
        """A monitor for an ``nn.Module`` trained on ``data``: ``update(model)`` reads its parameters."""
        monitor = cls(_module_problem(model, data, loss), lr, **kwargs)
        monitor.model = model
        return monitor

    @classmethod
    def for_optimizer(
        cls,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        data: tuple[Tensor, Tensor],
        loss: str = "mse",
        **kwargs,
    ) -> StabilityMonitor:
        """A monitor for ``model`` trained by the live ``torch.optim`` ``optimizer`` (SGD with or
        without momentum and Nesterov, RMSprop, Adam, AdamW) with the full-batch ``loss`` on ``data``
        (or the sample of it the monitor should measure on). ``mon.update()`` after each
        ``optimizer.step()`` reads the parameters, the learning rate, the hyper-parameters and the
        optimizer's state; nothing else in the loop changes. In mini-batch training, ``batch_size=``
        the training batch size adds the batch sharpness to the reports (``batch_sharpness``,
        ``batch_warning``), drawn from ``data``."""
        described = read_torch_optimizer(optimizer)
        params = list(model.parameters())
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [i for i, p in enumerate(params) if id(p) not in stepped]
        if missing or len(stepped) != len(params):
            raise ConfigError(
                "the optimizer must step exactly the model's parameters (the monitor's Hessian is over "
                f"all of them); the model's parameters {missing} are not in it"
                if missing
                else "the optimizer steps parameters that are not the model's"
            )
        monitor = cls(_module_problem(model, data, loss), optimizer=described.optimizer, **kwargs)
        monitor.model = model
        monitor.l2 = described.l2
        monitor._torch = (optimizer, params)
        return monitor

    def update(
        self, w: Tensor | nn.Module | None = None, loss: float | None = None, state: State | None = None
    ) -> dict:
        if self._torch is not None:
            if w is not None or state is not None:
                raise ConfigError(
                    "a monitor made by for_optimizer reads the model and the optimizer: call update() "
                    "(optionally with loss=)"
                )
            opt, params = self._torch
            optimizer = read_torch_optimizer(opt).optimizer
            if optimizer.lr != self.optimizer.lr:  # a schedule or a cap: P⁻¹ ∝ η
                self._rescale(optimizer.lr / self.optimizer.lr)
            self.optimizer = optimizer
            w = self._flat(self.model)
            state = read_torch_state(opt, params, self.optimizer, w)
        else:
            if w is None:
                raise ConfigError("update needs the current iterate: update(w) or update(model)")
            w = self._flat(w)
            if state is None:
                if self.needs_state:
                    raise ConfigError(
                        f"update needs the optimizer's state for {self.optimizer.name} (its preconditioner "
                        "depends on it): update(w, state=...), or use StabilityMonitor.for_optimizer"
                    )
                state = self.optimizer.init(w)
        self.step += 1
        self.iterates.append(w.detach().clone())
        if not bool(torch.isfinite(w).all()):
            self._diverged("the parameters are not finite")
        if loss is not None:
            self._set_loss(float(loss))
        report = {
            "step": self.step,
            "sharpness": math.nan,
            "effective_sharpness": math.nan,
            "threshold": self.optimizer.threshold / self.optimizer.momentum_gain(state),
            "oscillation": math.nan,
            "growth": math.nan,
            "spike_in": math.inf,
            "warning": False,
            "batch_sharpness": math.nan,
        }
        if self.batch_size is not None and self.step % self.batch_every == 0 and state.get("t", 1.0) > 0:
            report["batch_sharpness"] = self._batch_sharpness(w, state, report["threshold"])
        report["batch_warning"] = batch_sharpness_warning(self.batch_ratios, self.batch_ratios.maxlen)
        loss_now = loss is not None
        if self.step >= self.next_measurement and state.get("t", 1.0) > 0:  # Adam's P needs a step
            if loss is None:
                self._set_loss(float(self.problem.loss(w)))
                loss_now = True
            report.update(self._measure(w, state))
        oscillation_x = min(self._track_amplitude(w), 1e100)  # larger: diverging, and squares overflow
        if loss_now and math.isfinite(oscillation_x):
            self.amplitude_at_loss = oscillation_x
        report["oscillation"] = oscillation_x * self.mode_norm
        if not self.sharpness_history or not math.isfinite(oscillation_x) or not math.isfinite(self.loss):
            return report
        sharpening = self._sharpening_rate()
        a_now = self._follow_sharpness(oscillation_x, sharpening)
        self._last_growth = self._growth_factor(a_now, state)
        measured = self._measured_rate()
        if measured is not None:
            self.cycle_history.append((self.step, oscillation_x, measured[0]))
        report["growth"] = self._last_growth if measured is None else math.exp(measured[0])
        report["spiking"] = 0.5 * a_now * oscillation_x**2 >= self.spike_ratio * self._center_loss(a_now)
        report["spike_in"] = self._forecast(oscillation_x, a_now, sharpening, state, measured)
        # a forecast from the measured amplitude is as noisy as the amplitude: it warns when
        # confirmed; one from the model (a smooth function of λ₁(P⁻¹H)) warns at once. A spike under
        # way is reported as such, not warned of; nor is one that needs a rising sharpening rate to
        # carry a past the threshold: the oscillation must be growing now (from the rounding floor
        # that takes tens of steps, so little lead is lost and no long extrapolation trusted).
        self._due.append(
            report["spike_in"] <= self.horizon and report["growth"] > 1 and not report["spiking"]
        )
        confirmed = len(self._due) == self._due.maxlen and all(self._due)
        report["warning"] = self._due[-1] and (measured is None or confirmed)
        if measured is None and report["spike_in"] <= 2 * self.horizon:
            self.next_measurement = min(self.next_measurement, self.step + self._near_interval())
        last_measured = self._growth_factor(self.sharpness_history[-1][1], state)
        if self.sharpness_every is None and report["growth"] > 1 and last_measured <= 1:
            # the model has carried a past the threshold: a measurement confirms it (or not) first
            self.next_measurement = self.step + 1
            report["warning"] = False
        return report

    def _batch_sharpness(self, w: Tensor, state: State, threshold: float) -> float:
        """The batch sharpness with the optimizer's P⁻¹ now (SGD's L2 term included), appended to the
        rule's window as its ratio to ``threshold``."""
        value = self.problem.batch_sharpness(
            w,
            self.batch_size,
            self.batches,
            p_inv=self.optimizer.inverse_preconditioner(state),
            l2=self.l2,
            generator=self._batch_generator,
        )
        if math.isfinite(value):
            self.batch_ratios.append(value / threshold)
        return value

    def _growth_factor(self, a: float, state: State) -> float:
        """|z₋(k·a)|: the per-step growth of the oscillation at effective sharpness ``a`` now."""
        return abs(float(self.optimizer.period2_factors(self._gain(state, 0.0) * a)))

    def _rescale(self, ratio: float) -> None:
        """The learning rate changed by ``ratio``: P⁻¹ ∝ η, so the effective sharpness scales by it and
        the frame x = P^{1/2}w by its inverse square root. The measured history is carried over in the
        new units; the self-stabilization rates are measured again, at this step."""
        self.sharpness_history = deque(
            ((k, a * ratio) for k, a in self.sharpness_history), self.sharpness_history.maxlen
        )
        root = math.sqrt(ratio)
        self.shown_history = deque(((k, r / root) for k, r in self.shown_history), self.shown_history.maxlen)
        self.a_model *= ratio
        self.amplitude /= root
        self.amplitude_at_loss /= root
        self.mode_norm *= root
        if self.projector is not None:
            self.projector = self.projector / root
        self.stabilization, self._pull_velocity, self._pulled = (0.0, None), 0.0, 0.0
        self.preconditioner_pull = 0.0
        self.next_measurement = self.step + 1  # the step about to be counted

    # ------------------------------------------------------------------ measurements
    def _flat(self, w: Tensor | nn.Module) -> Tensor:
        if isinstance(w, nn.Module):
            w = torch.cat([p.detach().reshape(-1) for p in w.parameters()])
        if not isinstance(w, Tensor) or w.shape != (self.problem.dim,):
            shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ConfigError(f"update needs the {self.problem.dim} parameters as a flat tensor, got {shape}")
        return w.to(dtype=self.problem.dtype, device=self.problem.device)

    def _diverged(self, what: str) -> None:
        # A forecast from NaN would be noise; the training loop must hear of the divergence.
        raise FloatingPointError(
            f"StabilityMonitor.update at step {self.step}: {what}; training has diverged and there "
            "is nothing left to forecast"
        )

    def _set_loss(self, loss: float) -> None:
        if not math.isfinite(loss):
            self._diverged(f"the loss is {loss}")
        self.loss = loss

    def _gain(self, state: State, ahead: np.ndarray | float) -> np.ndarray | float:
        """k, by which the momentum's curvature is k·λ₁(P⁻¹H) (Adam's bias correction), ``ahead`` steps on."""
        return self.optimizer.momentum_gains(state, ahead) if state else 1.0

    def _measure(self, w: Tensor, state: State) -> dict:
        """λ₁(P⁻¹H) and the tracked direction in the frame x = P^{1/2}w, by warm-started Lanczos on
        P^{-1/2}HP^{-1/2}; schedules the next measurement."""
        p_inv = self.optimizer.inverse_preconditioner(state)
        scale = math.sqrt(p_inv) if isinstance(p_inv, float) else p_inv.sqrt()
        try:
            value, vector = self.tracker(w, scale=scale)
        except FloatingPointError:
            self.next_measurement = self.step + 1
            return {}
        if isinstance(p_inv, float):
            value += self.l2 * p_inv  # SGD's L2 term adds λ to every eigenvalue of H
            self.projector, self.mode_norm = vector / scale, scale
            sharpness = value / p_inv - self.l2
        else:
            # coordinates with P⁻¹ = 0 are frozen (edgeflow.optimizers.rmsprop): no oscillation there
            self.projector = torch.where(scale > 0, vector / scale, torch.zeros_like(vector))
            self.mode_norm = float((scale * vector).norm())
            sharpness = math.nan
        if value >= NEAR * self.optimizer.threshold / self._gain(state, 0.0):
            self._stabilization(w, scale * vector, p_inv, value, state)
        else:  # far below the threshold the trend is the sharpening rate
            self.stabilization = (self.stabilization[0], None)
        previous = self.sharpness_history[-1] if self.sharpness_history else None
        self.sharpness_history.append((self.step, value))
        self._pulled = 0.0
        self.next_measurement = self.step + self._interval(value, previous, state)
        return {"sharpness": sharpness, "effective_sharpness": value}

    def _stabilization(
        self, w: Tensor, mode: Tensor, p_inv: float | Tensor, value: float, state: State
    ) -> None:
        """The rates of the self-stabilization model, ``da/dt = sharpening − pull·r_x²``, with a =
        vᵀH(w)v along the mode v = P^{-1/2}ũ (vᵀPv = 1). The oscillation pulls a down two ways:

        * *the center*: the oscillation adds ½a·r_x² to the loss the center descends (Edge Flow's
          symmetrized loss), whose gradient ½r_x²∇a pushes the center along −P⁻¹·½r_x²∇a through the
          optimizer's momentum (``Optimizer.velocity_filter``): a falls at the filtered pull·r_x²,
          pull = ½·∇aᵀP⁻¹∇a, ∇a = ∇³L[v, v] (one third-derivative contraction);
        * *the preconditioner* (RMSProp, Adam): the gradient swings by ±r_x·Hv = ±r_x·a·Pv, which
          feeds ν the extra mean square r_x²(a·P⊙v)²; P grows, and a generalized eigenvalue of
          (H, P) moves by da = −a·vᵀ(dP)v, so a falls at r_x²·a·Σ v_i²·Ṗ_i (Ṗ per unit r_x²:
          ``variance_velocity`` then ``preconditioner_velocity``), at once.

        The sharpening rate is the change of a since the last measurement plus what the oscillation
        pulled over those steps, per step (a measured trend: it holds what moves a besides the
        oscillation, the preconditioner's own drift included)."""
        gradient = self.problem.third(w, mode, mode)
        pull = 0.5 * float(gradient @ (p_inv * gradient))
        precondition = 0.0
        if not isinstance(p_inv, float):
            p = torch.where(p_inv > 0, 1 / p_inv, torch.zeros_like(p_inv))
            fed = self.optimizer.variance_velocity(state, (value * p * mode) ** 2)
            if fed:
                p_dot = self.optimizer.preconditioner_velocity(state, fed)
                precondition = value * float((mode * mode * p_dot).sum())
        sharpening = None
        if self.sharpness_history:
            step, previous = self.sharpness_history[-1]
            sharpening = (value - previous + self._pulled) / max(self.step - step, 1)
        self.stabilization = (pull, sharpening)
        self.preconditioner_pull = max(precondition, 0.0)

    def _interval(self, value: float, previous: tuple[int, float] | None, state: State) -> int:
        """Steps to the next measurement: ``sharpness_every`` if given; else ``max_every`` where the
        iterates resolve the oscillation, a third of ``near_every`` past the threshold, ``near_every``
        from 90% of it, and below that half the steps the recent trend needs to get there (at least
        ``near_every``, at most ``max_every``)."""
        if self.sharpness_every is not None:
            return self.sharpness_every
        if self._measured_rate() is not None:
            return self.max_every  # the iterates show the oscillation's growth; ũ changes slowly
        threshold = self.optimizer.threshold / self._gain(state, 0.0)
        if value >= threshold:
            # past the threshold the hidden oscillation grows toward a spike at a rate set by a:
            # the forecast needs a's course, so it is measured three times as often
            return max(self.near_every // 3, 1)
        if value >= NEAR * threshold or previous is None:
            return self.near_every
        slope = (value - previous[1]) / max(self.step - previous[0], 1)
        if slope <= 0:
            return self.max_every
        return int(min(max(0.5 * (NEAR * threshold - value) / slope, self.near_every), self.max_every))

    def _near_interval(self) -> int:
        return self.sharpness_every or self.near_every

    def _track_amplitude(self, w: Tensor) -> float:
        """Edge Flow's magnitude r_x, one step on: the amplitude the iterates show where they
        resolve the oscillation, else the model's, held between the rounding floor and the
        amplitude the iterates show (an upper bound while the center's motion dominates)."""
        shown, resolved = self._oscillation()
        if not math.isfinite(shown):
            return math.nan
        self.shown_history.append((self.step, shown if resolved else math.nan))
        floor = self._floor * float(w.norm()) / self.mode_norm
        if resolved:
            self.amplitude = shown
        elif not math.isfinite(self.amplitude):
            self.amplitude = min(floor, shown)  # Edge Flow's start: the rounding every step injects
        else:
            self.amplitude = min(max(self.amplitude * self._last_growth, floor), shown)
        return self.amplitude

    def _oscillation(self) -> tuple[float, bool]:
        """The oscillation's amplitude along ũ in the frame x, and whether the iterates resolve it.

        A period-2 component s_k·r contributes 2ⁿ·r to the n-th difference of the iterates along
        ũ, the same r for every n; the center's smooth motion contributes less the higher the
        order. The amplitude is the third difference / 8; it is resolved (the oscillation, not the
        center, is what the differences show) where the first, third and fifth agree within
        ``RESOLVED``. Before the edge of stability they differ by orders of magnitude."""
        if len(self.iterates) < 4 or self.projector is None:
            return math.nan, False
        a = np.array([float(self.projector @ w) for w in self.iterates])
        first, third = (abs(float(np.diff(a[-(n + 1) :], n)[0])) / 2**n for n in (1, 3))
        if len(a) < 6:  # from the fourth iterate on the model can start; the test needs six
            return third, False
        fifth = abs(float(np.diff(a, 5)[0])) / 32
        return third, third >= RESOLVED * first and fifth >= RESOLVED * third

    def _measured_rate(self) -> tuple[float, float] | None:
        """The run's own growth rate of the oscillation (log per step, least squares over the last
        ``growth_window`` steps) where the iterates resolve it throughout; None elsewhere. After
        a first spike the run self-stabilizes: its effective sharpness hovers just above the
        threshold, so |z₋| says the oscillation grows while the iterates show it does not."""
        if len(self.shown_history) < self.shown_history.maxlen:
            return None
        steps = np.array([k for k, _ in self.shown_history], dtype=float)
        values = np.array([a for _, a in self.shown_history])
        if not (values > 0).all():  # NaN where unresolved
            return None
        curvature, rate, _ = np.polyfit(steps - steps[-1], np.log(values), 2)
        return float(rate), float(curvature)

    def _sharpening_rate(self) -> float:
        """da/dt without the oscillation's pull: near the threshold the change between measurements
        plus what was pulled meanwhile (``_stabilization``), else the trend of the measurements."""
        sharpening = self.stabilization[1]
        return self._sharpness_slope() if sharpening is None else sharpening

    def _follow_sharpness(self, r: float, sharpening: float) -> float:
        """a between measurements, by the self-stabilization model: the measured value at a
        measurement, then ``a += sharpening − pull·r²`` per step (the pull brings a down after a
        spike, where a trend would carry it on up)."""
        step, value = self.sharpness_history[-1]
        if step == self.step or not math.isfinite(self.a_model):
            self.a_model = value
        else:
            decay, gain = self.optimizer.velocity_filter()
            self._pull_velocity = decay * self._pull_velocity + gain * self.stabilization[0] * r * r
            pulled = self._pull_velocity + self.preconditioner_pull * r * r
            self._pulled += pulled
            self.a_model += sharpening - pulled
        return self.a_model

    def _center_loss(self, a: float) -> float:
        """The loss of the center: the last loss less the oscillation's share ½a·r² then."""
        return max(self.loss - 0.5 * a * self.amplitude_at_loss**2, 0.0)

    def _sharpness_slope(self) -> float:
        """λ₁(P⁻¹H)'s change per step, by least squares over the recent measurements."""
        steps = np.array([k for k, _ in self.sharpness_history], dtype=float)
        values = np.array([s for _, s in self.sharpness_history])
        if len(steps) < 2:
            return 0.0
        slope, _ = np.polyfit(steps, values, 1)
        return float(slope)

    def _forecast(
        self,
        r: float,
        a_now: float,
        sharpening: float,
        state: State,
        measured: tuple[float, float] | None = None,
    ) -> float:
        """Steps until r_x reaches the spike amplitude, by the self-stabilization model stepped one
        training step at a time:

            log r ← log r + log|z₋(k·a)|,    a ← a + sharpening − pull·r²

        (z₋ the optimizer's period-2 root, k Adam's bias correction; ``_stabilization``). As r grows
        the pull brings a back under the threshold and the oscillation peaks: a spike is forecast only
        where that peak reaches the spike amplitude, the loss of the center being held. Far from
        the threshold (no pull measured yet) the sharpening rate is the recent trend of a; where the
        iterates resolve the oscillation, a starts from the value whose |z₋| is the measured growth.
        inf if the oscillation peaks below the spike amplitude, or has not reached it in
        ``max_forecast`` steps."""
        share = 0.5 * a_now * r * r
        center = self._center_loss(a_now)
        if a_now <= 0 or r <= 0:
            return math.inf
        rate_now = math.log(max(self._last_growth, 1e-300)) if measured is None else measured[0]
        if share >= self.spike_ratio * center:
            # at the spike's scale already: a spike if it still grows, one dying out if not
            return 0.0 if rate_now > 0 else math.inf
        modelled = self._modelled_forecast(r, a_now, sharpening, state, center, measured)
        if measured is None:
            return modelled
        # Where the iterates resolve the oscillation its own recent course is a second forecast: log r
        # extrapolated with its curvature (a decelerating growth peaks). After a first spike the run
        # rises and falls about the threshold, and a bump it survives is a spike to whichever of the
        # two reads it worse; a warning needs both.
        rate, curvature = measured
        t = np.arange(1, self.max_forecast + 1, dtype=float)
        if curvature < 0:
            t_peak = np.minimum(t, max(-rate / (2 * curvature), 0.0))
            log_path = math.log(r) + rate * t_peak + curvature * t_peak * t_peak
        else:
            log_path = math.log(r) + rate * t + curvature * t * t
        reached = np.flatnonzero(2 * log_path >= math.log(2 * self.spike_ratio * center / a_now))
        extrapolated = max(float(t[reached[0]]) - 1.0, 0.0) if reached.size else math.inf
        return max(modelled, extrapolated)

    def _modelled_forecast(
        self,
        r: float,
        a_now: float,
        sharpening: float,
        state: State,
        center: float,
        measured: tuple[float, float] | None,
    ) -> float:
        pull, direct = self.stabilization[0], self.preconditioner_pull
        a = a_now if measured is None else self._curvature_of_rate(measured[0], a_now, state)
        log_r, grew, velocity = math.log(r), False, self._pull_velocity
        decay, gain = self.optimizer.velocity_filter()
        fitted = None if measured is None else self._fitted_cycle(a, state)
        if fitted is not None:
            # the rates the run's own cycles show, already through the momentum and the preconditioner
            sharpening, pull = fitted
            velocity, decay, gain, direct = 0.0, 0.0, 1.0, 0.0
        log_scale = math.log(2 * self.spike_ratio * center)
        for t in range(1, self.max_forecast + 1):
            step = self._log_growth(float(self._gain(state, t)) * a)
            log_r += step
            if 2 * log_r >= log_scale - math.log(max(a, 1e-300)):
                return float(t - 1)  # r was measured one step back: the count starts a step early
            r2 = math.exp(min(2 * log_r, 600.0))
            velocity = decay * velocity + gain * pull * r2
            a += sharpening - velocity - direct * r2
            if step > 0:
                grew = True
            elif (grew and sharpening <= velocity + direct * r2) or sharpening <= 0:
                # decaying with a falling: past its peak, below the spike amplitude; or a cannot rise
                return math.inf
        return math.inf

    def _fitted_cycle(self, a: float, state: State) -> tuple[float, float] | None:
        """(sharpening, pull) in units of a, fitted to the run's own resolved oscillation: its growth
        rate ρ = log|z₋(k·a)| changes as dρ/dt = c·(sharpening − pull·r²), c = dρ/da, so a least-
        squares line of dρ/dt against r² over the last ``CYCLE_WINDOW`` resolved steps gives both. None
        with too few steps, r² varying too little to separate them, or a pull that does not pull."""
        if len(self.cycle_history) < CYCLE_FIT_MIN:
            return None
        steps, r, rate = (np.array(column, dtype=float) for column in zip(*self.cycle_history, strict=True))
        if steps[-1] - steps[0] != len(steps) - 1:  # not one unbroken stretch
            return None
        r2 = r * r
        if r2.max() < 2 * r2.min():
            return None
        change = np.gradient(rate, steps)
        (intercept, slope), *_ = np.linalg.lstsq(np.stack([np.ones_like(r2), r2], axis=1), change, rcond=None)
        if slope >= 0:
            return None
        _, c = self._log_growth_slope(a, float(self._gain(state, 0.0)))
        if not (math.isfinite(c) and c > 0):
            return None
        return float(intercept) / c, float(-slope) / c

    def _curvature_of_rate(self, rate: float, a_guess: float, state: State) -> float:
        """The a whose period-2 factor grows the oscillation at ``rate`` per step (Newton steps on
        log|z₋(k·a)| from ``a_guess``, a numerical derivative)."""
        k = float(self._gain(state, 0.0))
        a = a_guess
        for _ in range(4):
            value, derivative = self._log_growth_slope(a, k)
            if derivative == 0 or not math.isfinite(derivative):
                return a_guess
            a -= (value - rate) / derivative
        return a

    def _log_growth(self, curvature: float) -> float:
        """log|z₋(curvature)|, the oscillation's growth rate per step (the log of the period-2 factor)."""
        return math.log(max(abs(self.optimizer.period2_factor(curvature)), 1e-300))

    def _log_growth_slope(self, a: float, k: float) -> tuple[float, float]:
        """log|z₋(k·a)| and its derivative in a (a forward difference)."""
        h = 1e-6 * max(abs(a), 1.0)
        value = self._log_growth(k * a)
        return value, (self._log_growth(k * (a + h)) - value) / h


def _resolve_optimizer(
    lr: float | None, optimizer: Optimizer | str | None, options: dict | None
) -> Optimizer:
    """The monitored optimizer: GD at ``lr`` by default, an edgeflow ``Optimizer``, or one by name."""
    if isinstance(optimizer, Optimizer):
        if options is not None:
            raise ConfigError("optimizer_options go with an optimizer given by name, not with an Optimizer")
        if lr is not None and learning_rate("lr", lr, text=False) != optimizer.lr:
            raise ConfigError(f"lr={lr!r} differs from the optimizer's lr={optimizer.lr!r}; give one of them")
        return optimizer
    if lr is None:
        raise ConfigError("the monitor needs the learning rate: StabilityMonitor(problem, lr)")
    name = GD_NAME if optimizer is None else optimizer
    return make_optimizer(name, learning_rate("lr", lr, text=False), options)


def _module_problem(model: nn.Module, data: tuple[Tensor, Tensor], loss: str) -> Problem:
    first = next(model.parameters(), None)
    if first is None:
        raise ConfigError("the model has no parameters to monitor")
    return Problem.from_module(model, data, loss=loss, dtype=first.dtype, device=first.device)
