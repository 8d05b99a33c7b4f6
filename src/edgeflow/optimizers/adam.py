"""Adam with ``torch.optim.Adam``'s conventions (no weight decay, no amsgrad), and AdamW
(``torch.optim.AdamW``, decoupled weight decay λ):

    t ← t + 1,   m ← m + (1 − β₁)(g − m),   ν ← ν + (1 − β₂)(g⊙g − ν)
    m̂ = m / (1 − β₁ᵗ),   ν̂ = ν / (1 − β₂ᵗ)          (bias correction)
    w ← w − η m̂ / (√ν̂ + ε)                          P = diag(√ν̂ + ε)/η,  d = m̂,  ε outside the root
    AdamW: w ← (1 − ηλ)w − η m̂ / (√ν̂ + ε)            the same P,  d = m̂ + λ(√ν̂ + ε)w

m and ν start at 0 and see the current gradient before the step. ν, P and the dead coordinates
are RMSProp's (``edgeflow.optimizers.rmsprop``), with torch's defaults β₂ = 0.999, ε = 1e-8.

With P frozen, in the coordinates P^{1/2}w along curvature a of P⁻¹H, one step maps (w, m) with
characteristic polynomial z² − Tz + D, T = 1 + β₁ − (1 − β₁)k·a, D = β₁, where k = 1/(1 − β₁ᵗ)
is m's bias correction (→ 1). A root at −1 needs a = (2 + 2β₁)/((1 − β₁)k): the threshold
(2 + 2β₁)/(1 − β₁) once the bias correction has worn off (38 at β₁ = 0.9), lower before. AdamW's
decay multiplies w by 1 − ηλ: T = 1 − ηλ + β₁ − (1 − β₁)k·a, D = β₁(1 − ηλ), and the threshold is
(1 + β₁)(2 − ηλ)/((1 − β₁)k).

In continuous time m follows ``dm/dt = ((1 − β₁)/β₁)(g − m)``, the rate RMSProp's ν has for the
same reason (its docstring), and ``dw/dt = −P⁻¹m̂``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from edgeflow.optimizers.base import State, map_roots
from edgeflow.optimizers.rmsprop import RMSProp


@dataclasses.dataclass(frozen=True)
class Adam(RMSProp):
    name: ClassVar[str] = "adam"
    title: ClassVar[str] = "Adam"
    threshold_keys: ClassVar[tuple[str, ...]] = ("beta1",)
    description: ClassVar[str] = (
        "Adam: m, ν ← EMAs of g and g⊙g, w ← w − ηm̂/(√ν̂ + ε) per coordinate (torch.optim.Adam)"
    )

    beta2: float = 0.999
    eps: float = 1e-8
    beta1: float = 0.9
    momentum_key: ClassVar[str] = "m"

    def __post_init__(self) -> None:
        super().__post_init__()
        # β₁ = 0 is RMSProp (with torch's form of ν), whose flow has no m (dm/dt infinitely fast).
        self.check_number("beta1", 0.0, 1.0)

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        # β₁ first, as torch's betas = (β₁, β₂) (the dataclass keeps RMSProp's fields first)
        defaults = super().option_defaults()
        return {"beta1": defaults.pop("beta1"), **defaults}

    def init(self, w: Tensor) -> State:
        return {**super().init(w), "m": torch.zeros_like(w)}

    def update(self, state: State, g: Tensor) -> State:
        m = state["m"]
        return {**super().update(state, g), "m": m + (1 - self.beta1) * (g - m)}

    def _momentum_correction(self, t: float) -> float:
        """1 − β₁ᵗ, by which m is divided (1 without bias correction)."""
        return 1 - self.beta1**t if self.bias_correction else 1.0

    def direction(self, state: State, g: Tensor, w: Tensor) -> Tensor:
        return state["m"] / self._momentum_correction(state["t"])

    @property
    def decay(self) -> float:
        """ηλ, the fraction of w the decoupled weight decay removes per step (0: Adam)."""
        return 0.0

    def state_velocity(self, state: State, g: Tensor, g_sq: Tensor) -> State:
        rate = (1 - self.beta1) / self.beta1
        return {**super().state_velocity(state, g, g_sq), "m": rate * (g - state["m"])}

    def state_rates(self) -> dict[str, float]:
        return {**super().state_rates(), "m": (1 - self.beta1) / self.beta1}

    def flow_rate(self, radius: float, state: State) -> float:
        # With P frozen, along curvature a of P⁻¹H the flow of (P^{1/2}w, P^{-1/2}m) is linear with
        # matrix [[−ηλ, −k], [c·a, −c]], c = (1 − β₁)/β₁. A complex pair's |λ| grows with a; a
        # real pair's is at most c + ηλ (the trace), which a = 0 nearly reaches.
        c, decay = (1 - self.beta1) / self.beta1, self.decay
        k = 1 / self._momentum_correction(state["t"])
        return max(c + decay, *(abs(z) for z in map_roots(-c - decay, c * decay + k * c * radius)))

    def velocity_filter(self) -> tuple[float, float]:
        return self.beta1, 1 - self.beta1

    def momentum_gain(self, state: State) -> float:
        return 1 / self._momentum_correction(state["t"])

    def momentum_gains(self, state: State, ahead: np.ndarray) -> np.ndarray | float:
        if not self.bias_correction:
            return 1.0
        return 1 / (1 - self.beta1 ** (state["t"] + np.asarray(ahead, dtype=float)))

    def flow_matrix(self, a: float, state: State | None = None) -> tuple[tuple[float, float], ...]:
        # on (x, μ), μ = kP^{-1/2}m: dx/dt = −μ − ηλx, dμ/dt = c(k·a·x − μ), c = (1 − β₁)/β₁
        c, k = (1 - self.beta1) / self.beta1, 1.0 if state is None else self.momentum_gain(state)
        return (-self.decay, -1.0), (c * k * a, -c)

    @property
    def threshold(self) -> float:
        return (1 + self.beta1) * (2 - self.decay) / (1 - self.beta1)

    def map_coefficients(self, a: float) -> tuple[float, float]:
        # once the bias correction has worn off (k = 1)
        return 1 - self.decay + self.beta1 - (1 - self.beta1) * a, self.beta1 * (1 - self.decay)


@dataclasses.dataclass(frozen=True)
class AdamW(Adam):
    name: ClassVar[str] = "adamw"
    title: ClassVar[str] = "AdamW"
    threshold_keys: ClassVar[tuple[str, ...]] = ("beta1", "weight_decay")
    description: ClassVar[str] = (
        "AdamW: Adam with decoupled weight decay, w ← (1 − ηλ)w − ηm̂/(√ν̂ + ε) (torch.optim.AdamW); its "
        "threshold (1 + β₁)(2 − ηλ)/(1 − β₁) depends on η, shown at η = 1"
    )

    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_number("weight_decay", 0.0, open_low=False)

    def direction(self, state: State, g: Tensor, w: Tensor) -> Tensor:
        # P⁻¹d = ηm̂/(√ν̂ + ε) + ηλw. A dead coordinate with ε = 0 (P⁻¹ = 0) is frozen, decay included.
        return super().direction(state, g, w) + self.weight_decay * self.denominator(state) * w

    @property
    def decay(self) -> float:
        return self.lr * self.weight_decay
