"""RMSProp and scalar RMSProp with the central-flows authors' conventions (their
``src/update_rules.py``, read as code, not as its docstrings):

    t ← t + 1,   ν ← ν + (1 − β₂)(s − ν)          s = g ⊙ g (RMSProp) or ‖g‖² (scalar: a sum)
    ν̂ = ν / (1 − β₂ᵗ)  (with bias correction)
    w ← w − η g / (√ν̂ + ε)                        P = (√ν̂ + ε)/η, ε outside the root

ν starts at 0 and sees the current gradient *before* the step. The stability threshold on
λ₁(P⁻¹H) is 2, as for GD: with P frozen the step is GD in the coordinates P^{1/2}w.

In continuous time (the flows), ν follows ``dν/dt = (1 − β₂)/β₂ · (E[s] − ν)``: the discrete
update with ν on both sides read at the same time, ν_k − ν_{k−1} = (1 − β₂)(s_k − ν_k) +
(1 − β₂)(ν_k − ν_{k−1}), which is the authors' rate too. The step counter t advances by one per
GD step (the authors' flows advance it by 1/β₂, which moves ν̂ by under 1% while the bias
correction matters).

Dead coordinates: a coordinate whose gradient has been exactly zero at every step so far keeps
ν = 0. With ε > 0 its P⁻¹ is η/ε and its step is 0. With ε = 0, P⁻¹ = η/0; such a coordinate is
treated as frozen (P⁻¹ = 0 there), which is what its zero steps are, where a literal η·0/0 would
be NaN. In the central flow, whose constraint needs dP/dt, a coordinate with ν̂ = 0 keeps its P
to first order (dP/dν is infinite there, but ν̇ is 0 on a coordinate nothing feeds: its gradient
and its row of the Hessian are zero, as for the weights of an input that is constant 0); one that
starts to be fed grows P like √t, which a linearization cannot follow, and is stepped, not predicted.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import Tensor

from edgeflow.optimizers.base import Optimizer, State


@dataclasses.dataclass(frozen=True)
class _RMSPropFamily(Optimizer):
    beta2: float = 0.99
    eps: float = 1e-7
    bias_correction: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_number("beta2", 0.0, 1.0)
        self.check_number("eps", 0.0, open_low=False)
        self.check_flag("bias_correction")

    def statistic(self, g_sq: Tensor) -> Tensor:
        """s from the elementwise squares of the gradient."""
        raise NotImplementedError

    def init(self, w: Tensor) -> State:
        nu = w.new_zeros(()) if self.scalar else torch.zeros_like(w)
        return {"t": 0.0, "nu": nu}

    def update(self, state: State, g: Tensor) -> State:
        nu = state["nu"]
        return {"t": state["t"] + 1.0, "nu": nu + (1 - self.beta2) * (self.statistic(g * g) - nu)}

    def denominator(self, state: State) -> Tensor:
        """√ν̂ + ε, which is ηP."""
        nu, t = state["nu"], state["t"]
        nu_hat = nu / (1 - self.beta2**t) if self.bias_correction else nu
        return nu_hat.sqrt() + self.eps

    def inverse_preconditioner(self, state: State) -> Tensor:
        denom = self.denominator(state)
        return torch.where(denom > 0, self.lr / denom, torch.zeros_like(denom))

    def state_velocity(self, state: State, g: Tensor, g_sq: Tensor) -> State:
        rate = (1 - self.beta2) / self.beta2
        return {"t": 1.0, "nu": rate * (self.statistic(g_sq) - state["nu"])}

    def state_rates(self) -> dict[str, float]:
        return {"nu": (1 - self.beta2) / self.beta2}

    def variance_velocity(self, state: State, g_sq_extra: Tensor) -> State:
        return {"nu": (1 - self.beta2) / self.beta2 * self.statistic(g_sq_extra)}

    def preconditioner_velocity(self, state: State, velocity: State) -> Tensor:
        # P = (√ν̂ + ε)/η with ν̂ = c(t)ν, c = 1/(1 − β₂ᵗ): dP/dt = (c ν̇ + ν c′ ṫ) / (2η√ν̂).
        nu, t = state["nu"], state["t"]
        nu_dot = velocity.get("nu", torch.zeros_like(nu))
        if self.bias_correction:
            c = 1 / (1 - self.beta2**t)
            c_dot = self.beta2**t * math.log(self.beta2) * c * c * velocity.get("t", 0.0)
            nu_hat, nu_hat_dot = c * nu, c * nu_dot + c_dot * nu
        else:
            nu_hat, nu_hat_dot = nu, nu_dot
        # A dead coordinate (ν̂ = 0: no gradient yet) has an infinite dP/dν; its P is held, which
        # is exact while nothing feeds it (then ν̇ = 0 too) — see the module docstring.
        root = nu_hat.sqrt()
        safe = torch.where(root > 0, root, torch.ones_like(root))
        return torch.where(root > 0, nu_hat_dot / (2 * self.lr * safe), torch.zeros_like(root))

    scalar: ClassVar[bool] = False


@dataclasses.dataclass(frozen=True)
class ScalarRMSProp(_RMSPropFamily):
    name: ClassVar[str] = "scalar-rmsprop"
    title: ClassVar[str] = "scalar RMSProp"
    description: ClassVar[str] = "scalar RMSProp: ν ← EMA of ‖g‖², w ← w − ηg/(√ν̂ + ε)"
    scalar: ClassVar[bool] = True

    def statistic(self, g_sq: Tensor) -> Tensor:
        return g_sq.sum()


@dataclasses.dataclass(frozen=True)
class RMSProp(_RMSPropFamily):
    name: ClassVar[str] = "rmsprop"
    title: ClassVar[str] = "RMSProp"
    description: ClassVar[str] = "RMSProp: ν ← EMA of g⊙g, w ← w − ηg/(√ν̂ + ε) per coordinate"

    def statistic(self, g_sq: Tensor) -> Tensor:
        return g_sq
