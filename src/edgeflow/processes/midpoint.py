"""The discrete optimizer with its period-2 oscillation averaged out:
``w*_k = ¼(w_{k−1} + 2w_k + w_{k+1})``.

This is the central-flows convention for GD's "center"; continuous-time models are compared with it.
At k = 0 there is no earlier iterate; we reflect the first step, ``w_{−1} = 2w_0 − w_1``, which makes
``w*_0 = w_0`` (every model starts at the same point). The effective sharpness at w*_k uses the
preconditioner of step k (the state that has seen ∇L(w_k)), as the central-flows code does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from edgeflow.processes.base import Process
from edgeflow.processes.frame import to_frame


class Midpoint(Process):
    name = "midpoint"
    description = "the optimizer's midpoints ¼(w_{k−1} + 2w_k + w_{k+1}); GD's center metrics"
    fields = ("train_loss", "sharpness", "effective_sharpness", "mean_loss", "oscillation")

    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.w = w0.clone()
        self.loss, self.grad = self.problem.value_and_grad(self.w)
        self.opt_state = self.initial_state(self.w, self.grad)
        self._look_ahead()
        self.w_prev = 2 * self.w - self.w_next

    def _look_ahead(self) -> None:
        """w_{k+1}, its loss and gradient, and the state that has seen it."""
        self.w_next = self.optimizer.step(self.w, self.grad, self.opt_state)
        self.loss_next, self.grad_next = self.problem.value_and_grad(self.w_next)
        self.state_next = self.optimizer.update(self.opt_state, self.grad_next)

    def step(self) -> None:
        self.w_prev, self.w, self.loss, self.grad = self.w, self.w_next, self.loss_next, self.grad_next
        self.opt_state = self.state_next
        self._look_ahead()

    @property
    def position(self) -> Tensor:
        return 0.25 * (self.w_prev + 2 * self.w + self.w_next)

    def observe(self, sharpness: bool) -> dict[str, float]:
        center = self.position
        out = {
            "train_loss": float(self.problem.loss(center)),
            # the loss averaged over one oscillation period, ½[L(w_k) + L(w_{k+1})]
            "mean_loss": 0.5 * float(self.loss + self.loss_next),
            "oscillation": math.nan,
        }
        out.update(self.measure_both(center, self.opt_state, sharpness))
        if sharpness:
            out["oscillation"] = self._oscillation(center)
        return out

    def _oscillation(self, center: Tensor) -> float:
        """The oscillation's amplitude along the top eigenvector, |uᵀ(w_k − w*_k)| (GD); for a
        preconditioned optimizer in the preconditioner's frame, |ũᵀP^{1/2}(w_k − w*_k)| with ũ the
        top eigenvector of P^{-1/2}HP^{-1/2} (the units of Edge Flow's magnitude)."""
        offset = self.w - center
        if self.optimizer.stateless:
            return abs(float(self.tracker.vector @ offset))
        scale = torch.as_tensor(self.optimizer.inverse_preconditioner(self.opt_state)).sqrt()
        vector = self.effective_tracker.vector if scale.ndim > 0 else self.tracker.vector
        return abs(float(vector @ to_frame(offset, scale)))

    def is_finite(self) -> bool:
        return super().is_finite() and math.isfinite(float(self.loss_next))
