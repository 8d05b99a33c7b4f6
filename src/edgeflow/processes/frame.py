"""The preconditioner's coordinates around a point, where a preconditioned step is a GD step.

With P⁻¹ = D² frozen (D a diagonal or a number), ``w ← w − P⁻¹∇L(w)`` written in the coordinates
``x`` of ``w = b + D x`` is ``x ← x − ∇L̃(x)``: gradient descent with η = 1 on ``L̃(x) = L(b + D x)``,
whose gradient is D∇L and whose Hessian is D∇²L D, with the eigenvalues of P⁻¹∇²L. Edge Flow for a
preconditioned optimizer is Edge Flow for GD in these coordinates; ``PreconditionedFrame`` gives it
the oracle calls it makes (``grads``, ``grad_and_hvps``, ``hvp``) in them. Centring the frame at the
current center b keeps the coordinates of the points it evaluates small, so no precision is lost
when the frame moves with the center.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgeflow.oracle import Problem


class PreconditionedFrame:
    """The oracle of ``L̃(x) = L(base + scale·x)``; ``last_grads`` keeps the last ``grads`` call's
    gradients of L itself (for the optimizer's state, which is fed physical gradients)."""

    def __init__(self, problem: Problem, base: Tensor, scale: Tensor) -> None:
        self.problem, self.base, self.scale = problem, base, scale
        self.last_grads: Tensor | None = None

    def point(self, x: Tensor) -> Tensor:
        return self.base + self.scale * x

    def grads(self, X: Tensor) -> Tensor:
        g = self.problem.grads(self.base + self.scale * X)
        self.last_grads = g
        return self.scale * g

    def grad_and_hvps(self, x: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
        g, products = self.problem.grad_and_hvps(self.point(x), self.scale * V)
        return self.scale * g, self.scale * products

    def hvp(self, x: Tensor, v: Tensor) -> Tensor:
        return self.scale * self.problem.hvp(self.point(x), self.scale * v)


def to_frame(direction: Tensor, scale: Tensor) -> Tensor:
    """A physical direction d in frame coordinates, d / scale (0 where the scale is 0: a frozen
    coordinate, in which nothing moves)."""
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.where(scale > 0, direction / safe, torch.zeros_like(direction))
