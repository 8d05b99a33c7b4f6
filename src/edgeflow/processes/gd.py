"""Full-batch gradient descent, the process every model is compared with."""

from __future__ import annotations

import math

from torch import Tensor

from edgeflow.processes.base import Process


class GD(Process):
    name = "gd"
    description = "gradient descent w ← w − η∇L(w); metrics at the iterates"
    fields = ("train_loss", "sharpness", "grad_norm")

    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.w = w0.clone()
        self._loss, self._grad = self.problem.value_and_grad(self.w)

    def step(self) -> None:
        self.w = self.w - self.lr * self._grad
        self._loss, self._grad = self.problem.value_and_grad(self.w)

    def observe(self, sharpness: bool) -> dict[str, float]:
        out = {"train_loss": float(self._loss), "grad_norm": float(self._grad.norm())}
        out["sharpness"] = self.measure_sharpness(self.w, self.seed)[0] if sharpness else math.nan
        return out

    @property
    def position(self) -> Tensor:
        return self.w

    def is_finite(self) -> bool:
        return super().is_finite() and math.isfinite(float(self._loss))
