"""The discrete optimizer (full-batch gradient descent by default), the process every model is
compared with: ``w ← w − P⁻¹∇L(w)`` with the optimizer's state updated by the gradient first."""

from __future__ import annotations

import math

from torch import Tensor

from edgeflow.processes.base import Process


class GD(Process):
    name = "gd"
    description = "the discrete optimizer (gradient descent: w ← w − η∇L(w)); metrics at the iterates"
    fields = ("train_loss", "sharpness", "effective_sharpness", "grad_norm")

    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.w = w0.clone()
        self._loss, self._grad = self.problem.value_and_grad(self.w)
        self.opt_state = self.initial_state(self.w, self._grad)

    def step(self) -> None:
        self.w = self.optimizer.step(self.w, self._grad, self.opt_state)
        self._loss, self._grad = self.problem.value_and_grad(self.w)
        self.opt_state = self.optimizer.update(self.opt_state, self._grad)

    def observe(self, sharpness: bool) -> dict[str, float]:
        out = {"train_loss": float(self._loss), "grad_norm": float(self._grad.norm())}
        out.update(self.measure_both(self.w, self.opt_state, sharpness))
        return out

    @property
    def position(self) -> Tensor:
        return self.w

    def is_finite(self) -> bool:
        return super().is_finite() and math.isfinite(float(self._loss))
