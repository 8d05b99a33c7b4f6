"""The interface every optimizer implements: ``w ← w − P⁻¹·d`` with a preconditioner ``P(state)``
and a direction ``d(state, g, w)`` (the gradient, or a momentum average of it).

An optimizer is a frozen description (its hyper-parameters) plus pure functions of the parameters,
a gradient and its state. The state is a dict of tensors and numbers (empty for GD), so processes can
checkpoint it as it is. Conventions, shared by every process:

* The state a process holds at time t has already seen the gradient at its point: ``update(state, g)``
  runs *before* the step that uses it, as RMSProp's ν does. ``inverse_preconditioner(state)`` is the
  P⁻¹ of the step about to be taken, and the effective sharpness λ₁(P⁻¹H) is measured with it.
* ``inverse_preconditioner`` returns a float (a multiple of the identity) or a tensor (a diagonal).
* ``direction(state, g, w)`` is the d of the step about to be taken from w (g itself unless the
  optimizer keeps a momentum, read from the state, which has already seen g, or decays w).
* ``state_velocity(state, g, g_sq)`` is d(state)/dt in GD-step time, given the gradient and the mean
  of its elementwise square over the oscillation (``g * g`` for a flow that does not oscillate).
* ``threshold`` is the value of λ₁(P⁻¹H) at which the linearized step along the top eigenvector
  gets an eigenvalue at −1; ``period2_factor(a)`` is that eigenvalue for curvature ``a`` of P⁻¹H
  (GD: 1 − a), the factor by which the period-2 oscillation grows per step. With a momentum the
  step along the top eigenvector is a 2×2 map of (w, momentum) whose characteristic polynomial is
  z² − T(a)z + D(a) (``map_roots``).
"""

from __future__ import annotations

import cmath
import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from edgeflow.errors import ConfigError

State = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Optimizer(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    #: how figures and tables name it ("Adam"; its ``name`` when empty)
    title: ClassVar[str] = ""
    #: the hyper-parameters its threshold depends on, named with it in a figure's label
    threshold_keys: ClassVar[tuple[str, ...]] = ()
    #: whether the state is always empty (GD): processes then keep their original, GD-only code paths
    stateless: ClassVar[bool] = False

    lr: float

    def __post_init__(self) -> None:
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)):
            raise ConfigError(f"lr must be a number, got {self.lr!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite positive number, got {self.lr!r}")

    # ------------------------------------------------------------------ the discrete map
    @abstractmethod
    def init(self, w: Tensor) -> State:
        """The state before any gradient has been seen."""

    @abstractmethod
    def update(self, state: State, g: Tensor) -> State:
        """The state after seeing the gradient ``g`` at the current point (before the step)."""

    @abstractmethod
    def inverse_preconditioner(self, state: State) -> float | Tensor:
        """P⁻¹ of the step from the current point: a float (times I) or a diagonal (a tensor)."""

    def direction(self, state: State, g: Tensor, w: Tensor) -> Tensor:
        """d of the step from ``w``, for a ``state`` that has seen the gradient ``g`` there."""
        return g

    def step(self, w: Tensor, g: Tensor, state: State) -> Tensor:
        """``w − P⁻¹d`` for a ``state`` that has seen ``g`` (``update``)."""
        return w - self.inverse_preconditioner(state) * self.direction(state, g, w)

    # ------------------------------------------------------------------ continuous time
    def state_velocity(self, state: State, g: Tensor, g_sq: Tensor) -> State:
        """d(state)/dt; none for a stateless optimizer."""
        return {}

    def state_rates(self) -> dict[str, float]:
        """The decay rate of each state entry in its ODE (d s/dt = rate·(target − s)), per GD step."""
        return {}

    def relax_state(self, state: State, g: Tensor, g_sq: Tensor, dt: float) -> State:
        """One IMEX Euler step of the state's ODE over ``dt``: implicit in each entry's own decay,
        explicit in its feed, s ← (s + Δt·rate·target)/(1 + Δt·rate). At Δt = 1 with g_sq = g⊙g it
        is ``update`` exactly (β·s + (1 − β)·feed), so a process stepped this way at Δt = 1 runs
        the discrete optimizer; for smaller Δt it is a consistent step of the stable flow's ODE."""
        rates = self.state_rates()
        velocity = self.state_velocity(state, g, g_sq)
        return add_states(state, dt, {key: v / (1 + dt * rates.get(key, 0.0)) for key, v in velocity.items()})

    def variance_velocity(self, state: State, g_sq_extra: Tensor) -> State:
        """The part of d(state)/dt that an extra mean elementwise square of the gradient adds
        (linear in ``g_sq_extra``): what an oscillation's ``diag(HΣH)`` feeds the state."""
        return {}

    def preconditioner_velocity(self, state: State, velocity: State) -> float | Tensor:
        """dP/dt when the state moves with ``velocity`` (linear in it; a float or a diagonal)."""
        return 0.0

    def flow_rate(self, radius: float, state: State) -> float:
        """The fastest rate (|eigenvalue| per unit time) of the stable flow linearized at ``state``,
        for curvatures of P⁻¹H up to ``radius``: what an explicit integrator's sub-steps must resolve."""
        return radius

    # ------------------------------------------------------------------ stability
    @property
    def threshold(self) -> float:
        """The effective sharpness λ₁(P⁻¹H) at which the step's period-2 mode becomes unstable."""
        return 2.0

    def period2_factor(self, a: float) -> float:
        """The per-step factor of the period-2 oscillation along curvature ``a`` of P⁻¹H: 1 − a, or
        with a momentum the root of z² − Tz + D on the branch through −1 (``root_nearest_minus_one``)."""
        coefficients = self.map_coefficients(a)
        return 1.0 - a if coefficients is None else root_nearest_minus_one(*coefficients)

    def period2_factors(self, a: np.ndarray) -> np.ndarray:
        """``period2_factor`` over an array of curvatures, vectorized (T and D are linear in a)."""
        a = np.asarray(a, dtype=float)
        if self.map_coefficients(0.0) is None:
            return 1.0 - a
        (t0, d0), (t1, d1) = self.map_coefficients(0.0), self.map_coefficients(1.0)
        trace, det = t0 + (t1 - t0) * a, d0 + (d1 - d0) * a
        discriminant = trace * trace - 4 * det
        smaller = 0.5 * (trace - np.sqrt(np.maximum(discriminant, 0.0)))
        # a complex pair has det > trace²/4 ≥ 0
        return np.where(discriminant >= 0, smaller, np.copysign(np.sqrt(np.abs(det)), trace))

    def map_coefficients(self, a: float) -> tuple[float, float] | None:
        """(T, D) of the characteristic polynomial z² − Tz + D of the linearized step of (w, momentum)
        along curvature ``a`` of P⁻¹H (P frozen); None without a momentum (the step is z = 1 − a)."""
        return None

    def center_curvature(self) -> float:
        """The curvature a_c of P⁻¹H (times ``momentum_gain``) at which T(a) = 0: the step's 2×2
        map then rotates by a quarter turn per step. Beyond it the map's modes are mostly period-2
        (the oscillation's; at the threshold both roots are near −1) and Edge Flow's center feels
        the top direction's curvature as a_c (edge_flow.md). T is linear in a."""
        coefficients = self.map_coefficients(0.0)
        if coefficients is None:
            return math.inf
        t0, t1 = coefficients[0], self.map_coefficients(1.0)[0]
        return t0 / (t0 - t1)

    # ------------------------------------------------------------------ momentum, in P's frame
    #: the state entry holding the momentum (None: the optimizer keeps none)
    momentum_key: ClassVar[str | None] = None

    def momentum_gain(self, state: State) -> float:
        """k in the frame momentum μ = k·P^{-1/2}·state[momentum_key] (x = P^{1/2}w), chosen so that
        the stable flow reads dx/dt = −μ (+ the terms of ``flow_matrix``): Adam's bias correction of
        m; 1 for heavy-ball's b. Curvature a of P⁻¹H acts on the momentum as k·a."""
        return 1.0

    def velocity_filter(self) -> tuple[float, float]:
        """(decay, gain) of the filter through which a steady force f on the center becomes its
        velocity in P's frame, v ← decay·v + gain·f: (0, 1) without a momentum, (β, 1) for heavy-ball and
        Nesterov (steady state f/(1 − β)), (β₁, 1 − β₁) for Adam (steady state f)."""
        return 0.0, 1.0

    def momentum_gains(self, state: State, ahead: np.ndarray) -> np.ndarray | float:
        """``momentum_gain`` ``ahead`` steps after ``state`` (Adam's bias correction wears off)."""
        return self.momentum_gain(state)

    def flow_matrix(self, a: float, state: State | None = None) -> tuple[tuple[float, float], ...] | None:
        """The stable flow's linear field on (x, μ) along curvature ``a`` of P⁻¹H (P frozen), in GD-step
        time; None without a momentum."""
        return None

    # ------------------------------------------------------------------ validation
    def check_number(self, key: str, low: float, high: float = math.inf, open_low: bool = True) -> None:
        """Raise ``ConfigError`` unless option ``key`` is a finite number in (low, high) (or [low,
        high) without ``open_low``)."""
        value = getattr(self, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{self.name} option {key} must be a finite number, got {value!r}")
        if value >= high or value < low or (open_low and value == low):
            if high == math.inf:
                rule = f"be > {low:g}" if open_low else f"be ≥ {low:g}"
            else:
                rule = f"lie in {'(' if open_low else '['}{low:g}, {high:g})"
            raise ConfigError(f"{self.name} option {key} must {rule}, got {value!r}")

    def check_flag(self, key: str) -> None:
        value = getattr(self, key)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.name} option {key} must be true or false, got {value!r}")

    # ------------------------------------------------------------------ description
    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The hyper-parameters besides ``lr``, with their defaults."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.name != "lr"}

    def options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.option_defaults()}

    def label(self) -> str:
        """``Adam (β₁ = 0.9)``: the title with the hyper-parameters that set the threshold."""
        keys = ", ".join(f"{SYMBOLS.get(k, k)} = {getattr(self, k):g}" for k in self.threshold_keys)
        title = self.title or self.name
        return f"{title} ({keys})" if keys else title

    def with_lr(self, lr: float) -> Optimizer:
        return dataclasses.replace(self, lr=lr)


#: how labels write the hyper-parameters
SYMBOLS = {"beta": "β", "beta1": "β₁", "beta2": "β₂", "eps": "ε", "weight_decay": "λ"}


def map_roots(trace: float, det: float) -> tuple[complex, complex]:
    """The roots of z² − trace·z + det, the smaller real part first (the smaller value when real)."""
    root = cmath.sqrt(trace * trace - 4 * det)
    return 0.5 * (trace - root), 0.5 * (trace + root)


def root_nearest_minus_one(trace: float, det: float) -> float:
    """The eigenvalue of a 2×2 step map (z² − trace·z + det) on the branch that reaches −1 at the
    threshold: the smaller root while the roots are real. A complex pair (|z| = √det) has no period-2
    mode of its own and both roots are as far from −1; it gives √det with the sign of its real part,
    which is continuous with the real branches at both ends of the complex range, and whose absolute
    value is the per-step growth of every oscillation along that direction."""
    low, _ = map_roots(trace, det)
    if low.imag == 0:
        return low.real
    return math.copysign(math.sqrt(det), trace)


def add_states(state: State, scale: float, velocity: State) -> State:
    """``state + scale · velocity`` entry by entry (entries without a velocity are kept)."""
    return {key: value + scale * velocity[key] if key in velocity else value for key, value in state.items()}
