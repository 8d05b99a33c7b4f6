"""Heavy-ball momentum and Nesterov momentum with ``torch.optim.SGD``'s conventions (``momentum=β``,
``dampening=0``, no weight decay):

    b ← βb + g                     (b = 0 before the first step: torch's first b = g is the same)
    w ← w − ηb                     momentum:  d = b
    w ← w − η(g + βb)              nesterov:  d = g + βb

P = I/η, and the state b sees the current gradient before the step. Along an eigenvector of ηH
with curvature a, one step maps (w, ηb) linearly with characteristic polynomial z² − Tz + D:
heavy-ball T = 1 + β − a, D = β; Nesterov T = 1 + β − a(1 + β), D = β(1 − a). A root at −1 needs
1 + T + D = 0: a = 2 + 2β (heavy-ball) and a = (2 + 2β)/(1 + 2β) (Nesterov), the thresholds on
λ₁(P⁻¹H) = ηS (derived in docs/optimizers.md).

In continuous time (the stable flow) b follows ``db/dt = (g − (1 − β)b)/β``: the discrete update
b_k − b_{k−1} = g_k − (1 − β)b_{k−1} with b on both sides read at the same time (as RMSProp's ν is,
``edgeflow.optimizers.rmsprop``) is β(b_k − b_{k−1}) = g_k − (1 − β)b_k. Its quasi-steady state
b = g/(1 − β) gives the discrete run's long-run velocity −ηg/(1 − β).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor

from edgeflow.optimizers.base import Optimizer, State, map_roots


@dataclasses.dataclass(frozen=True)
class Momentum(Optimizer):
    name: ClassVar[str] = "momentum"
    title: ClassVar[str] = "heavy-ball momentum"
    threshold_keys: ClassVar[tuple[str, ...]] = ("beta",)
    description: ClassVar[str] = "heavy-ball momentum b ← βb + g, w ← w − ηb (torch.optim.SGD, momentum=β)"

    beta: float = 0.9
    momentum_key: ClassVar[str] = "b"

    def __post_init__(self) -> None:
        super().__post_init__()
        # β = 0 is GD, whose flow has no momentum state (db/dt would be infinitely fast).
        self.check_number("beta", 0.0, 1.0)

    def init(self, w: Tensor) -> State:
        return {"b": torch.zeros_like(w)}

    def update(self, state: State, g: Tensor) -> State:
        return {"b": self.beta * state["b"] + g}

    def inverse_preconditioner(self, state: State) -> float:
        return self.lr

    def direction(self, state: State, g: Tensor, w: Tensor) -> Tensor:
        return state["b"]

    def state_velocity(self, state: State, g: Tensor, g_sq: Tensor) -> State:
        return {"b": (g - (1 - self.beta) * state["b"]) / self.beta}

    def state_rates(self) -> dict[str, float]:
        return {"b": (1 - self.beta) / self.beta}

    def flow_rate(self, radius: float, state: State) -> float:
        # The largest |eigenvalue| of the linear field over curvatures in [0, radius]: a complex
        # pair's grows with a, so it is at the radius; a real pair's is at most the larger of its
        # value at the radius and b's own decay rate (1 − β)/β (a = 0).
        (p, q), (r, s) = self.flow_matrix(radius)
        fastest = max(abs(z) for z in map_roots(p + s, p * s - q * r))
        return max(fastest, (1 - self.beta) / self.beta)

    def flow_matrix(self, a: float, state: State | None = None) -> tuple[tuple[float, float], ...]:
        """The stable flow's linear field on (w, ηb) along curvature ``a`` of ηH (the frame's (x, μ)
        up to the common factor √η)."""
        return (0.0, -1.0), (a / self.beta, -(1 - self.beta) / self.beta)

    def map_coefficients(self, a: float) -> tuple[float, float]:
        return 1 + self.beta - a, self.beta

    def velocity_filter(self) -> tuple[float, float]:
        return self.beta, 1.0

    @property
    def threshold(self) -> float:
        return 2 + 2 * self.beta


@dataclasses.dataclass(frozen=True)
class Nesterov(Momentum):
    name: ClassVar[str] = "nesterov"
    title: ClassVar[str] = "Nesterov momentum"
    description: ClassVar[str] = (
        "Nesterov momentum b ← βb + g, w ← w − η(g + βb) (torch.optim.SGD, momentum=β, nesterov=True)"
    )

    def direction(self, state: State, g: Tensor, w: Tensor) -> Tensor:
        return g + self.beta * state["b"]

    def flow_matrix(self, a: float, state: State | None = None) -> tuple[tuple[float, float], ...]:
        return (-a, -self.beta), (a / self.beta, -(1 - self.beta) / self.beta)

    def map_coefficients(self, a: float) -> tuple[float, float]:
        return 1 + self.beta - a * (1 + self.beta), self.beta * (1 - a)

    @property
    def threshold(self) -> float:
        return (2 + 2 * self.beta) / (1 + 2 * self.beta)
