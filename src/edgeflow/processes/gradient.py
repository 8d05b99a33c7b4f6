"""Gradient flow ``dw/dt = −η∇L(w)`` — the classical continuous-time model, blind to EoS."""

from __future__ import annotations

from torch import Tensor

from edgeflow.processes.ode import RK4Flow


class GradientFlow(RK4Flow):
    name = "gradient"
    description = "gradient flow dw/dt = −η∇L (RK4, sub-steps bounded by the sharpness)"

    def velocity(self, w: Tensor) -> Tensor:
        return -self.lr * self.problem.grad(w)

    def fastest_rate(self, radius: float) -> float:
        return self.lr * radius
