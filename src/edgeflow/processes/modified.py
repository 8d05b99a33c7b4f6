"""Implicit-gradient-regularization flow (Barrett & Dherin 2021).

``dw/dt = −η[∇L + (η/2)∇²L ∇L]`` is gradient flow on the modified loss ``L + (η/4)‖∇L‖²``, the
first-order backward-error correction of GD: one gradient and one HVP per evaluation, the HVP's
pass shared with the gradient's (``Problem.grad_and_hvp_of_grad``).
"""

from __future__ import annotations

from torch import Tensor

from edgeflow.optimizers import State
from edgeflow.processes.ode import RK4Flow


class ModifiedFlow(RK4Flow):
    name = "modified"
    description = "modified flow dw/dt = −η[∇L + (η/2)∇²L∇L] (implicit gradient regularization; GD)"
    optimizers = ("gd",)

    def field(self, w: Tensor, state: State) -> tuple[Tensor, State]:
        g, hg = self.problem.grad_and_hvp_of_grad(w)
        return -self.lr * (g + 0.5 * self.lr * hg), {}

    def fastest_rate(self, radius: float) -> float:
        # Along an eigenvalue λ the linearized rate is ηλ(1 + ηλ/2).
        return self.lr * radius * (1 + 0.5 * self.lr * radius)
