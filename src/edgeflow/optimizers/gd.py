"""Gradient descent: ``w ← w − η∇L(w)``; P = I/η, no state, threshold ηS = 2."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch import Tensor

from edgeflow.optimizers.base import Optimizer, State


@dataclasses.dataclass(frozen=True)
class GD(Optimizer):
    name: ClassVar[str] = "gd"
    title: ClassVar[str] = "GD"
    description: ClassVar[str] = "gradient descent w ← w − η∇L(w)"
    stateless: ClassVar[bool] = True

    def init(self, w: Tensor) -> State:
        return {}

    def update(self, state: State, g: Tensor) -> State:
        return state

    def inverse_preconditioner(self, state: State) -> float:
        return self.lr
