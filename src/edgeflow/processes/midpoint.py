"""GD with its period-2 oscillation averaged out: ``w*_k = ¼(w_{k−1} + 2w_k + w_{k+1})``.

This is the central-flows convention for GD's "center"; continuous-time models are compared with it.
At k = 0 there is no earlier iterate; we reflect the first step, ``w_{−1} = 2w_0 − w_1``, which makes
``w*_0 = w_0`` (every model starts at the same point).
"""

from __future__ import annotations

import math

from torch import Tensor

from edgeflow.processes.base import Process


class Midpoint(Process):
    name = "midpoint"
    description = "GD midpoints ¼(w_{k−1} + 2w_k + w_{k+1}); GD's center metrics"
    fields = ("train_loss", "sharpness", "mean_loss", "oscillation")

    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.w = w0.clone()
        self.loss, self.grad = self.problem.value_and_grad(self.w)
        self.w_next = self.w - self.lr * self.grad
        self.loss_next, self.grad_next = self.problem.value_and_grad(self.w_next)
        self.w_prev = 2 * self.w - self.w_next

    def step(self) -> None:
        self.w_prev, self.w, self.loss, self.grad = self.w, self.w_next, self.loss_next, self.grad_next
        self.w_next = self.w - self.lr * self.grad
        self.loss_next, self.grad_next = self.problem.value_and_grad(self.w_next)

    @property
    def position(self) -> Tensor:
        return 0.25 * (self.w_prev + 2 * self.w + self.w_next)

    def observe(self, sharpness: bool) -> dict[str, float]:
        center = self.position
        out = {
            "train_loss": float(self.problem.loss(center)),
            # GD's loss averaged over one oscillation period, ½[L(w_k) + L(w_{k+1})]
            "mean_loss": 0.5 * float(self.loss + self.loss_next),
            "sharpness": math.nan,
            "oscillation": math.nan,
        }
        if sharpness:
            s, u = self.measure_sharpness(center, self.seed)
            out["sharpness"] = s
            # GD's oscillation amplitude along the top eigenvector, |uᵀ(w_k − w*_k)|
            out["oscillation"] = abs(float(u @ (self.w - center)))
        return out

    def is_finite(self) -> bool:
        return super().is_finite() and math.isfinite(float(self.loss_next))
