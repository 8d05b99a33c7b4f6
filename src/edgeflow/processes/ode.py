"""Shared integrator for the smooth reference flows: classical RK4 in GD-step time.

The flows are stiff near the edge of stability (decay rate ≈ ηS ≥ 2 per unit time along the top
eigenvector), so each unit of time is split into ``n`` RK4 sub-steps with ``rate · Δt ≤ substep_rate``
for the fastest mode. The fastest mode's rate is read from the Hessian's spectral radius, tracked
by one warm-started power-iteration HVP per step (counted as part of the flow's cost).

The default ``substep_rate = 1`` (Δt ≤ 1/(ηS), inside RK4's stability interval |z| ≤ 2.78) resolves
the slow modes, which carry the trajectory, to RK4's full order; the fastest mode is either decayed
or slaved to the slow ones, where any consistent scheme has the right quasi-steady state. Lower it
(e.g. 0.05) to resolve the fast transient itself to 1e-6.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
from torch import Tensor

from edgeflow.oracle import Problem
from edgeflow.processes.base import Process
from edgeflow.utils import positive_float

# The power-iteration estimate lags a growing spectral radius; size sub-steps with this margin.
SAFETY = 1.2


class RK4Flow(Process):
    fields = ("train_loss", "sharpness", "substeps")

    def __init__(self, problem: Problem, lr: float, substep_rate: float = 1.0) -> None:
        super().__init__(problem, lr)
        self.substep_rate = positive_float("substep_rate", substep_rate)

    @abstractmethod
    def velocity(self, w: Tensor) -> Tensor:
        """dw/dt at ``w`` (time in GD steps)."""

    @abstractmethod
    def fastest_rate(self, radius: float) -> float:
        """Largest decay rate per unit time when the Hessian's spectral radius is ``radius``."""

    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.w = w0.clone()
        gen = torch.Generator(device=w0.device).manual_seed(seed)
        pairs = self.problem.eigs(self.w, which="LM", tol=1e-3, generator=gen)
        self.radius = abs(float(pairs.values[0]))
        self.power_vector = pairs.vectors[0]
        self.substeps = 0

    def _update_radius(self) -> None:
        hv = self.problem.hvp(self.w, self.power_vector)
        norm = float(hv.norm())
        if norm > 0 and math.isfinite(norm):
            self.radius = norm
            self.power_vector = hv / norm

    def step(self) -> None:
        self._update_radius()
        n = max(1, math.ceil(SAFETY * self.fastest_rate(self.radius) / self.substep_rate))
        dt = 1.0 / n
        w = self.w
        for _ in range(n):
            k1 = self.velocity(w)
            k2 = self.velocity(w + 0.5 * dt * k1)
            k3 = self.velocity(w + 0.5 * dt * k2)
            k4 = self.velocity(w + dt * k3)
            w = w + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        self.w = w
        self.substeps = n

    def observe(self, sharpness: bool) -> dict[str, float]:
        out = {"train_loss": float(self.problem.loss(self.w)), "substeps": float(self.substeps)}
        out["sharpness"] = self.measure_sharpness(self.w, self.seed)[0] if sharpness else math.nan
        return out

    @property
    def position(self) -> Tensor:
        return self.w
