"""The interface every optimizer implements: ``w ← w − P⁻¹·d`` with a preconditioner ``P(state)``.

An optimizer is a frozen description (its hyper-parameters) plus pure functions of the parameters,
a gradient and its state. The state is a dict of tensors and numbers (empty for GD), so processes can
checkpoint it as it is. Conventions, shared by every process:

* The state a process holds at time t has already seen the gradient at its point: ``update(state, g)``
  runs *before* the step that uses it, as RMSProp's ν does. ``inverse_preconditioner(state)`` is the
  P⁻¹ of the step about to be taken, and the effective sharpness λ₁(P⁻¹H) is measured with it.
* ``inverse_preconditioner`` returns a float (a multiple of the identity) or a tensor (a diagonal).
* ``state_velocity(state, g, g_sq)`` is d(state)/dt in GD-step time, given the gradient and the mean
  of its elementwise square over the oscillation (``g * g`` for a flow that does not oscillate).
* ``threshold`` is the value of λ₁(P⁻¹H) at which the linearized step along the top eigenvector
  gets an eigenvalue at −1; ``period2_factor(a)`` is that eigenvalue for curvature ``a`` of P⁻¹H
  (GD: 1 − a), the factor by which the period-2 oscillation grows per step.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor

from edgeflow.errors import ConfigError

State = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Optimizer(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
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

    def step(self, w: Tensor, g: Tensor, state: State) -> Tensor:
        """``w − P⁻¹g`` for a ``state`` that has seen ``g`` (``update``)."""
        return w - self.inverse_preconditioner(state) * g

    # ------------------------------------------------------------------ continuous time
    def state_velocity(self, state: State, g: Tensor, g_sq: Tensor) -> State:
        """d(state)/dt; none for a stateless optimizer."""
        return {}

    def variance_velocity(self, state: State, g_sq_extra: Tensor) -> State:
        """The part of d(state)/dt that an extra mean elementwise square of the gradient adds
        (linear in ``g_sq_extra``): what an oscillation's ``diag(HΣH)`` feeds the state."""
        return {}

    def preconditioner_velocity(self, state: State, velocity: State) -> float | Tensor:
        """dP/dt when the state moves with ``velocity`` (linear in it; a float or a diagonal)."""
        return 0.0

    # ------------------------------------------------------------------ stability
    @property
    def threshold(self) -> float:
        """The effective sharpness λ₁(P⁻¹H) at which the step's period-2 mode becomes unstable."""
        return 2.0

    def period2_factor(self, a: float) -> float:
        """The per-step factor of the period-2 oscillation along curvature ``a`` of P⁻¹H."""
        return 1.0 - a

    # ------------------------------------------------------------------ description
    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The hyper-parameters besides ``lr``, with their defaults."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.name != "lr"}

    def options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.option_defaults()}

    def with_lr(self, lr: float) -> Optimizer:
        return dataclasses.replace(self, lr=lr)


def add_states(state: State, scale: float, velocity: State) -> State:
    """``state + scale · velocity`` entry by entry (entries without a velocity are kept)."""
    return {key: value + scale * velocity[key] if key in velocity else value for key, value in state.items()}
