"""Shared integrator for the smooth reference flows: classical RK4 in GD-step time.

The flows are stiff near the edge of stability (decay rate ≈ ηS ≥ 2 per unit time along the top
eigenvector), so each unit of time is split into ``n`` RK4 sub-steps with ``rate · Δt ≤ substep_rate``
for the fastest mode. The fastest mode's rate is read from the Hessian's spectral radius, tracked
by one warm-started power-iteration HVP per step (counted as part of the flow's cost).

The default ``substep_rate = 1`` (Δt ≤ 1/(ηS), inside RK4's stability interval |z| ≤ 2.78) resolves
the slow modes, which carry the trajectory, to RK4's full order; the fastest mode is either decayed
or slaved to the slow ones, where any consistent scheme has the right quasi-steady state. Lower it
(e.g. 0.05) to resolve the fast transient itself to 1e-6.

Gradient flow and the modified flow descend a loss bounded below, so they cannot blow up in finite
time: a step that ends non-finite, or ends where the radius (measured there) puts its sub-steps
outside RK4's stability interval, is the integrator failing, not the flow. Such a step is retried
from its start with 4× the sub-steps, up to ``max_substeps``; past that budget the flow stops with
``IntegrationError``, never as "diverged".
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from edgeflow.errors import IntegrationError
from edgeflow.optimizers import State, add_states
from edgeflow.oracle import Problem
from edgeflow.processes.base import Process
from edgeflow.utils import positive_float, positive_int

# The power-iteration estimate lags a growing spectral radius; size sub-steps with this margin.
SAFETY = 1.2
# Largest rate·Δt accepted at the end of a step: RK4 is stable to 2.78, and a radius that grew
# within the step is underestimated by one power iteration from the old eigenvector. On zhu at
# η = 50 a step ending at 2.7 had stayed finite but left the conserved x² − y² by 40%.
STABLE_END = 2.0


Field = Callable[[Tensor, State], tuple[Tensor, State]]


def rk4_substep(
    field: Field, w: Tensor, state: State, dt: float, first: tuple[Tensor, State] | None = None
) -> tuple[Tensor, State]:
    """One classical RK4 step of length ``dt`` of ``(w, state)`` under ``field``; ``first`` is the
    field at the start where the caller has it already."""
    k1, s1 = first if first is not None else field(w, state)
    k2, s2 = field(w + 0.5 * dt * k1, add_states(state, 0.5 * dt, s1))
    k3, s3 = field(w + 0.5 * dt * k2, add_states(state, 0.5 * dt, s2))
    k4, s4 = field(w + dt * k3, add_states(state, dt, s3))
    w = w + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    slope = {key: s1[key] + 2 * s2[key] + 2 * s3[key] + s4[key] for key in s1}
    return w, add_states(state, dt / 6.0, slope)


class RK4Flow(Process):
    fields = ("train_loss", "sharpness", "effective_sharpness", "substeps")

    def __init__(
        self, problem: Problem, lr: float, substep_rate: float = 1.0, max_substeps: int = 1000
    ) -> None:
        super().__init__(problem, lr)
        self.substep_rate = positive_float("substep_rate", substep_rate)
        self.max_substeps = positive_int("max_substeps", max_substeps)

    @abstractmethod
    def field(self, w: Tensor, state: State) -> tuple[Tensor, State]:
        """(dw/dt, d state/dt) at ``w`` with optimizer state ``state`` (time in GD steps)."""

    @abstractmethod
    def fastest_rate(self, radius: float) -> float:
        """Largest decay rate per unit time when the spectral radius of ``_scaled_hvp``'s operator
        (the Hessian, or P^{-1/2}HP^{-1/2} for a stateful optimizer) is ``radius``."""

    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.w = w0.clone()
        # A stateful optimizer's state starts as the discrete one's: having seen ∇L(w0).
        self.opt_state = {} if self.optimizer.stateless else self.initial_state(w0, self.problem.grad(w0))
        gen = torch.Generator(device=w0.device).manual_seed(seed)
        scale = self._scale(self.opt_state)
        pairs = self.problem.eigs(self.w, which="LM", tol=1e-3, generator=gen, scale=scale)
        self.radius = abs(float(pairs.values[0]))
        self.power_vector = pairs.vectors[0]
        self.substeps = 0
        self.steps_done = 0

    def _scale(self, state: State) -> Tensor | None:
        """P^{-1/2} of ``state``, or None for GD (whose rates carry η themselves)."""
        if self.optimizer.stateless:
            return None
        return torch.as_tensor(self.optimizer.inverse_preconditioner(state)).sqrt()

    def _power_iteration(self, w: Tensor, state: State) -> tuple[float, Tensor]:
        """The spectral radius at ``w`` after one power iteration from the tracked vector."""
        scale = self._scale(state)
        if scale is None:
            hv = self.problem.hvp(w, self.power_vector)
        else:
            hv = scale * self.problem.hvp(w, scale * self.power_vector)
        norm = float(hv.norm())
        if norm > 0 and math.isfinite(norm):
            return norm, hv / norm
        return self.radius, self.power_vector

    def step(self) -> None:
        k = self.steps_done + 1
        needed = SAFETY * self.fastest_rate(self.radius) / self.substep_rate
        if not needed <= self.max_substeps:  # also an infinite rate
            required = math.ceil(needed) if math.isfinite(needed) else needed
            raise IntegrationError(
                f"{self.name}: step {k} needs {required} RK4 sub-steps (Hessian spectral radius "
                f"{self.radius:.4g}, η = {self.lr:g}), more than max_substeps = {self.max_substeps}; "
                f"raise it (--option {self.name}.max_substeps=N) or use a smaller η"
            )
        tried = [max(1, math.ceil(needed))]
        while True:
            w, state = self._rk4(self.w, self.opt_state, tried[-1])
            if torch.isfinite(w).all():
                radius, vector = self._power_iteration(w, state)
                if self.fastest_rate(radius) <= STABLE_END * tried[-1]:
                    break
            if tried[-1] >= self.max_substeps:
                raise IntegrationError(
                    f"{self.name}: the RK4 integrator failed at step {k}: with {', '.join(map(str, tried))} "
                    f"sub-steps the state became non-finite or outran RK4's stability interval "
                    f"(Hessian spectral radius {self.radius:.4g} at the start of the step, η = {self.lr:g}); "
                    f"the flow is too stiff here for max_substeps = {self.max_substeps}. This is the "
                    f"integrator failing, not the flow diverging: raise --option "
                    f"{self.name}.max_substeps=N or use a smaller η"
                )
            tried.append(min(4 * tried[-1], self.max_substeps))
        self.w, self.opt_state, self.radius, self.power_vector = w, state, radius, vector
        self.substeps = tried[-1]
        self.steps_done = k

    def _rk4(self, w: Tensor, state: State, n: int) -> tuple[Tensor, State]:
        """``n`` classical RK4 sub-steps over one unit of time from ``(w, state)``."""
        for _ in range(n):
            w, state = rk4_substep(self.field, w, state, 1.0 / n)
        return w, state

    def observe(self, sharpness: bool) -> dict[str, float]:
        out = {"train_loss": float(self.problem.loss(self.w)), "substeps": float(self.substeps)}
        out.update(self.measure_both(self.w, self.opt_state, sharpness))
        return out

    @property
    def position(self) -> Tensor:
        return self.w
