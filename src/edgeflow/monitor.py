"""Forecasting GD's loss spikes from its own iterates, in Edge Flow's terms.

GD at a learning rate η oscillates along the top Hessian eigenvector u: ``w_k ≈ c_k + s_k r_k u``
with alternating signs. The amplitude grows by the factor ``|ηS − 1|`` per step, so it grows once the
sharpness S exceeds 2/η and decays below, never below the rounding floor every step injects. The
oscillation adds ``½·S·r²`` to the loss; a loss spike (catapult) comes when that share reaches the
loss of the center. ``StabilityMonitor`` measures S and u by warm-started Lanczos every few steps
and follows r in two regimes:

* **Hidden oscillation** (before the first spike): the oscillation is orders of magnitude below the
  center's own motion, so r is tracked as Edge Flow does, ``r ← max(r·|ηS − 1|, floor)``, the floor
  being the rounding that seeds it, and never above the third difference of the iterates along u
  (an upper bound). The forecast integrates Edge Flow's magnitude equation ``d log r/dt =
  log|ηS(t) − 1|`` forward, with S(t) extrapolated from its recent trend, to the step where r
  reaches the spike amplitude.
* **Resolved oscillation** (once the first, third and fifth differences of the iterates agree, as
  they do for a pure period-2 component): r is measured, and so is its growth rate, from the last
  ``growth_window`` steps. After a first spike GD self-stabilizes: the sharpness at the iterates
  hovers a few percent above 2/η, so |ηS − 1| would say the oscillation keeps growing while it
  rises and falls. The forecast then extrapolates the measured log-amplitude with its curvature: a
  decelerating growth peaks and does not reach the spike amplitude.

A warning from the measured amplitude needs ``confirm`` consecutive forecasts within the horizon,
which filters the forecasts that its noise pushes in for a step or two.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch
from torch import Tensor, nn

from edgeflow.errors import ConfigError
from edgeflow.oracle import Problem, SharpnessTracker
from edgeflow.processes.edge import NOISE_FLOOR, unit_roundoff
from edgeflow.utils import learning_rate, positive_float, positive_int

#: differences of orders 1, 3, 5 within this ratio: the iterates resolve the oscillation
RESOLVED = 0.7


class StabilityMonitor:
    """Watches a GD (or any) training loop and forecasts its next loss spike.

    ``rep = mon.update(w)`` after each step, with the current iterate (a flat tensor, or the model for
    a monitor made by ``from_module``) and optionally its loss (saves one loss evaluation). Returns:

    * ``sharpness``: λ_max(∇²L(w)), NaN at steps where it is not measured (every ``sharpness_every``);
    * ``oscillation``: GD's oscillation amplitude along the tracked top eigenvector (one step back),
      measured or tracked as above;
    * ``growth``: the per-step growth factor of the oscillation: measured where the iterates resolve
      it, |ηS − 1| at the last sharpness before;
    * ``spike_in``: forecast steps until ½·S·r² reaches ``spike_ratio`` × the center's loss (inf if
      the oscillation is not on course to get there within ``max_forecast`` steps);
    * ``warning``: ``spike_in <= horizon`` (at each of the last ``confirm`` steps where the
      forecast comes from the measured amplitude).

    Cost: one Lanczos solve (a few warm-started HVPs) every ``sharpness_every`` steps, on average
    at most one HVP per step at the default, plus one loss evaluation when ``loss`` is not given.
    """

    def __init__(
        self,
        problem: Problem,
        lr: float,
        horizon: int = 50,
        *,
        sharpness_every: int = 15,
        trend_window: int = 5,
        growth_window: int = 10,
        confirm: int = 5,
        spike_ratio: float = 1.0,
        max_forecast: int = 10_000,
        seed: int = 0,
    ) -> None:
        if not isinstance(problem, Problem):
            raise ConfigError(f"problem must be an edgeflow.Problem, got {type(problem).__name__}")
        self.problem = problem
        self.lr = learning_rate("lr", lr, text=False)
        self.horizon = positive_int("horizon", horizon)
        self.sharpness_every = positive_int("sharpness_every", sharpness_every)
        self.spike_ratio = positive_float("spike_ratio", spike_ratio)
        self.max_forecast = positive_int("max_forecast", max_forecast)
        self.tracker = SharpnessTracker(problem, seed=seed, tol=1e-3, min_iter=2)
        self.model: nn.Module | None = None
        self.step = -1
        self.iterates: deque[Tensor] = deque(maxlen=6)  # for the fifth difference
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
        self.u: Tensor | None = None
        self.amplitude = math.nan  # the tracked oscillation r
        self._last_growth = 1.0
        self._floor = NOISE_FLOOR * unit_roundoff(problem.dtype)

    @classmethod
    def from_module(
        cls, model: nn.Module, data: tuple[Tensor, Tensor], lr: float, loss: str = "mse", **kwargs
    ) -> StabilityMonitor:
        """A monitor for an ``nn.Module`` trained on ``data``: ``update(model)`` reads its parameters."""
        dtype = next(model.parameters()).dtype
        problem = Problem.from_module(
            model, data, loss=loss, dtype=dtype, device=next(model.parameters()).device
        )
        monitor = cls(problem, lr, **kwargs)
        monitor.model = model
        return monitor

    def update(self, w: Tensor | nn.Module, loss: float | None = None) -> dict:
        w = self._flat(w)
        self.step += 1
        self.iterates.append(w.detach().clone())
        sharpness = math.nan
        loss = float(self.problem.loss(w)) if loss is None else float(loss)
        if not (math.isfinite(loss) and bool(torch.isfinite(w).all())):
            # A forecast from NaN would be noise; the training loop must hear of the divergence.
            what = f"the loss is {loss}" if not math.isfinite(loss) else "the parameters are not finite"
            raise FloatingPointError(
                f"StabilityMonitor.update at step {self.step}: {what}; training has diverged and there "
                "is nothing left to forecast"
            )
        if self.step % self.sharpness_every == 0:
            try:
                sharpness, self.u = self.tracker(w)
                self.sharpness_history.append((self.step, sharpness))
            except FloatingPointError:
                sharpness = math.nan
        oscillation = self._track_amplitude(w)
        report = {
            "step": self.step,
            "sharpness": sharpness,
            "oscillation": oscillation,
            "growth": math.nan,
            "spike_in": math.inf,
            "warning": False,
        }
        if not self.sharpness_history or not math.isfinite(oscillation) or not math.isfinite(loss):
            return report
        s_now, slope = self._sharpness_trend()
        self._last_growth = abs(self.lr * s_now - 1.0)
        measured = self._measured_rate()
        report["growth"] = self._last_growth if measured is None else math.exp(measured[0])
        report["spike_in"] = self._forecast(oscillation, loss, s_now, slope, measured)
        # a forecast from the measured amplitude is as noisy as the amplitude: it warns when
        # confirmed; one from the model (a smooth function of S) warns at once
        self._due.append(report["spike_in"] <= self.horizon)
        confirmed = len(self._due) == self._due.maxlen and all(self._due)
        report["warning"] = self._due[-1] and (measured is None or confirmed)
        return report

    # ------------------------------------------------------------------ measurements
    def _flat(self, w: Tensor | nn.Module) -> Tensor:
        if isinstance(w, nn.Module):
            w = torch.cat([p.detach().reshape(-1) for p in w.parameters()])
        if not isinstance(w, Tensor) or w.shape != (self.problem.dim,):
            shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ConfigError(f"update needs the {self.problem.dim} parameters as a flat tensor, got {shape}")
        return w.to(dtype=self.problem.dtype, device=self.problem.device)

    def _track_amplitude(self, w: Tensor) -> float:
        """Edge Flow's magnitude, one GD step on: the amplitude the iterates show where they
        resolve the oscillation, else the model's, held between the rounding floor and the
        amplitude the iterates show (an upper bound while the center's motion dominates)."""
        shown, resolved = self._oscillation()
        if not math.isfinite(shown):
            return math.nan
        self.shown_history.append((self.step, shown if resolved else math.nan))
        floor = self._floor * float(w.norm())
        if resolved or not math.isfinite(self.amplitude):
            self.amplitude = shown
        else:
            self.amplitude = min(max(self.amplitude * self._last_growth, floor), shown)
        return self.amplitude

    def _oscillation(self) -> tuple[float, bool]:
        """GD's oscillation amplitude along u, and whether the iterates resolve it.

        A period-2 component s_k·r contributes 2ⁿ·r to the n-th difference of the iterates along
        u, the same r for every n; the center's smooth motion contributes less the higher the
        order. The amplitude is the third difference / 8; it is resolved (the oscillation, not the
        center, is what the differences show) where the first, third and fifth agree within
        ``RESOLVED``. Before the edge of stability they differ by orders of magnitude."""
        if len(self.iterates) < 4 or self.u is None:
            return math.nan, False
        a = np.array([float(self.u @ w) for w in self.iterates])
        first, third = (abs(float(np.diff(a[-(n + 1) :], n)[0])) / 2**n for n in (1, 3))
        if len(a) < 6:  # from the fourth iterate on the model can start; the test needs six
            return third, False
        fifth = abs(float(np.diff(a, 5)[0])) / 32
        return third, third >= RESOLVED * first and fifth >= RESOLVED * third

    def _measured_rate(self) -> tuple[float, float] | None:
        """GD's own growth rate of the oscillation (log per step, least squares over the last
        ``growth_window`` steps) where the iterates resolve it throughout; None elsewhere. After
        a first spike GD self-stabilizes: its sharpness hovers just above 2/η, so |ηS − 1|
        says the oscillation grows while the iterates show it does not."""
        if len(self.shown_history) < self.shown_history.maxlen:
            return None
        steps = np.array([k for k, _ in self.shown_history], dtype=float)
        values = np.array([a for _, a in self.shown_history])
        if not (values > 0).all():  # NaN where unresolved
            return None
        curvature, rate, _ = np.polyfit(steps - steps[-1], np.log(values), 2)
        return float(rate), float(curvature)

    def _sharpness_trend(self) -> tuple[float, float]:
        """The sharpness now and its change per step, by least squares over the recent
        measurements (extrapolated to the current step)."""
        steps = np.array([k for k, _ in self.sharpness_history], dtype=float)
        values = np.array([s for _, s in self.sharpness_history])
        if len(steps) < 2:
            return float(values[-1]), 0.0
        slope, intercept = np.polyfit(steps, values, 1)
        return float(intercept + slope * self.step), float(slope)

    def _forecast(
        self, r: float, loss: float, s_now: float, slope: float, measured: tuple[float, float] | None = None
    ) -> float:
        """Steps until r reaches the spike amplitude, integrating d log r/dt = log|ηS(t) − 1| with
        S(t) = s_now + slope·t, held at the spike's own scale (the loss of the center stays)."""
        share = 0.5 * s_now * r * r
        center = max(loss - share, 0.0)
        if s_now <= 0:
            return math.inf
        if share >= self.spike_ratio * center:
            # at the spike's scale already: a spike if it still grows, one dying out if not
            rate = math.log(max(abs(self.lr * s_now - 1.0), 1e-300)) if measured is None else measured[0]
            return 0.0 if rate > 0 else math.inf
        log_target = 0.5 * math.log(2 * self.spike_ratio * center / s_now)
        t = np.arange(1, self.max_forecast + 1, dtype=float)
        growth = np.log(np.maximum(np.abs(self.lr * (s_now + slope * t) - 1.0), 1e-300))
        log_r = math.log(max(r, 1e-300)) + np.cumsum(growth)
        if measured is not None:
            rate, curvature = measured
            if curvature < 0:
                # decelerating: self-stabilization is catching the oscillation; it peaks at
                # t = −rate/(2·curvature) and decays after
                peak = max(-rate / (2 * curvature), 0.0)
                tt = np.minimum(t, peak)
                log_r = math.log(max(r, 1e-300)) + rate * tt + curvature * tt * tt
            else:
                log_r = log_r + (rate - growth[0]) * t
        reached = np.flatnonzero(log_r >= log_target)
        # r was measured one step back, so the count starts a step early.
        return max(float(t[reached[0]]) - 1.0, 0.0) if reached.size else math.inf
