"""The stable flow: the optimizer's ODE without oscillation. For GD, gradient flow
``dw/dt = −η∇L(w)``, the classical continuous-time model, blind to EoS; for another optimizer
``dw/dt = −P⁻¹(state)·d(state, ∇L(w), w)`` with the state's own ODE fed by ∇L(w) and ∇L(w)⊙∇L(w)
(RMSProp's ν, a momentum's average of the gradient).
"""

from __future__ import annotations

from torch import Tensor

from edgeflow.optimizers import Optimizer, State
from edgeflow.oracle import Problem
from edgeflow.processes.ode import RK4Flow


def stable_field(problem: Problem, opt: Optimizer, w: Tensor, state: State) -> tuple[Tensor, State]:
    """(dw/dt, d state/dt) of the stable flow at ``(w, state)``."""
    g = problem.grad(w)
    if opt.stateless:
        return -opt.inverse_preconditioner(state) * g, {}
    velocity = -opt.inverse_preconditioner(state) * opt.direction(state, g, w)
    return velocity, opt.state_velocity(state, g, g * g)


class GradientFlow(RK4Flow):
    name = "gradient"
    description = (
        "stable flow dw/dt = −P⁻¹d with the state's ODEs (GD: gradient flow −η∇L; RK4, sub-steps "
        "bounded by the sharpness)"
    )

    def field(self, w: Tensor, state: State) -> tuple[Tensor, State]:
        return stable_field(self.problem, self.optimizer, w, state)

    def fastest_rate(self, radius: float) -> float:
        # GD's radius is the Hessian's; a stateful optimizer's is P⁻¹H's, η included. The state at
        # the start of the step stands for the whole step: Adam's bias correction, which raises
        # the rate, only wears off.
        if self.optimizer.stateless:
            return self.lr * radius
        return self.optimizer.flow_rate(radius, self.opt_state)
