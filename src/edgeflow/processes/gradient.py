"""The stable flow: the optimizer's ODE without oscillation. For GD, gradient flow
``dw/dt = −η∇L(w)``, the classical continuous-time model, blind to EoS; for a preconditioned
optimizer ``dw/dt = −P⁻¹(state)∇L(w)`` with the state's own ODE fed by ∇L(w)⊙∇L(w) (RMSProp's ν).
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
    return -opt.inverse_preconditioner(state) * g, opt.state_velocity(state, g, g * g)


class GradientFlow(RK4Flow):
    name = "gradient"
    description = (
        "stable flow dw/dt = −P⁻¹∇L (GD: gradient flow −η∇L; RK4, sub-steps bounded by the sharpness)"
    )

    def field(self, w: Tensor, state: State) -> tuple[Tensor, State]:
        return stable_field(self.problem, self.optimizer, w, state)

    def fastest_rate(self, radius: float) -> float:
        # GD's radius is the Hessian's; a stateful optimizer's is P⁻¹H's, η included.
        return self.lr * radius if self.optimizer.stateless else radius
