"""GD with a remedy for edge-of-stability instabilities, compared with GD in the same tables.

The remedies (option ``remedy``), each at the same learning rate η as the GD it is compared with:

* ``damped``: GD whose step along the tracked top Hessian eigenvector u is damped by Edge Flow's
  linearly implicit factor, ``w ← w − η(g − (uᵀg)u) − η(uᵀg)/(1 + ηρ)·u`` (ρ = uᵀHu), whenever GD
  would be unstable or nearly so along u (ηρ ≥ 2 − margin); plain GD otherwise. Along u the step
  multiplies the error by 1/(1 + ηρ) ∈ (0, 1) instead of GD's |1 − ηρ| > 1: no oscillation grows.
* ``lr_cap``: GD with the step size capped at (2 − margin)/ρ.
* ``edge``: Edge Flow's center update used as the optimizer (one sub-step per GD step): the
  symmetrized gradient ½[∇L(w + ru) + ∇L(w − ru)], with r following Edge Flow's magnitude equation,
  and the same implicit damping along u. It keeps the self-stabilization (the r²∇S/2 term lowers
  the sharpness) without the oscillation.
* ``warmup``: GD with the learning rate ramped linearly from 0 to η over ``warmup_steps`` steps.
* ``clip``: GD with the gradient norm clipped to ``clip_norm`` (default: ‖∇L(w₀)‖).

The last two are the remedies users already use, here for comparison. The default, ``lr_cap``, is the
one ``benchmarks/instability.py`` found to remove every loss spike on digits-mlp and to train where
GD diverges, at a final loss within 1.2× GD's (docs/instability.md); damping one direction only was
not enough there: a second eigenvalue rose past 2/η. u and ρ are tracked with one
HVP per step (Edge Flow's shifted power step u ← (I + ηH)u/‖·‖), refreshed by a warm-started Lanczos
solve every ``refresh_every`` steps.
"""

from __future__ import annotations

import math

from torch import Tensor

from edgeflow.errors import invalid_choice
from edgeflow.oracle import Problem, SharpnessTracker
from edgeflow.processes.base import Process
from edgeflow.processes.edge import EdgeFlow
from edgeflow.utils import nonnegative_float, positive_float, positive_int

REMEDIES = ("damped", "lr_cap", "edge", "warmup", "clip")


class Mitigated(Process):
    name = "mitigated"
    description = "GD with a remedy for EoS instabilities (by default its step capped at (2 − margin)/S)"
    fields = ("train_loss", "sharpness", "rayleigh", "step_size")

    def __init__(
        self,
        problem: Problem,
        lr: float,
        remedy: str = "lr_cap",
        margin: float = 0.1,
        warmup_steps: int = 100,
        clip_norm: float | None = None,
        refresh_every: int = 10,
    ) -> None:
        super().__init__(problem, lr)
        if remedy not in REMEDIES:
            raise invalid_choice("remedy", remedy, REMEDIES)
        self.remedy = remedy
        self.margin = nonnegative_float("margin", margin)
        self.warmup_steps = positive_int("warmup_steps", warmup_steps)
        self.clip_norm = None if clip_norm is None else positive_float("clip_norm", clip_norm)
        self.refresh_every = positive_int("refresh_every", refresh_every)

    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.time = 0
        self.edge: EdgeFlow | None = None
        if self.remedy == "edge":
            self.edge = EdgeFlow(self.problem, self.lr, substeps=1)
            self.edge.init(w0, seed)
            self.w = self.edge.c
        else:
            self.w = w0.clone()
        self.loss, self.grad = self.problem.value_and_grad(self.w)
        self.rho = math.nan
        self.step_size = self.lr
        self.u: Tensor | None = None
        if self.remedy in ("damped", "lr_cap"):
            self.top = SharpnessTracker(self.problem, seed=seed, tol=1e-3, min_iter=2)
            self.rho, self.u = self.top(self.w)
        if self.remedy == "clip" and self.clip_norm is None:
            self.clip_norm = float(self.grad.norm())

    def step(self) -> None:
        self.time += 1
        if self.edge is not None:
            self.edge.step()
            self.w, self.rho = self.edge.c, self.edge.rho
            self.loss = self.problem.loss(self.w)  # Edge Flow's step took its own gradients
            return
        g, lr = self.grad, self.lr
        if self.u is not None:
            self._track(self.w)
        if self.remedy == "damped":
            assert self.u is not None
            along = float(self.u @ g)
            if lr * self.rho >= 2.0 - self.margin:
                self.w = self.w - lr * (g - along * self.u) - (lr * along / (1.0 + lr * self.rho)) * self.u
                self.step_size = lr / (1.0 + lr * self.rho)
            else:
                self.w = self.w - lr * g
                self.step_size = lr
        else:
            self.step_size = self._step_size(g)
            self.w = self.w - self.step_size * g
        self.loss, self.grad = self.problem.value_and_grad(self.w)

    def _track(self, w: Tensor) -> None:
        """One shifted power step per step, replaced by a warm-started Lanczos solve every
        ``refresh_every`` steps and whenever the power step's Rayleigh quotient moves by more than
        10%: at a large η the power step (I + ηH) also amplifies negative eigenvalues, and its
        quotient then collapses while the sharpness does not (on digits-mlp at η = 3.2 it read 0.16
        one step in, where S was 2.3, and the capped step diverged)."""
        assert self.u is not None
        if self.time % self.refresh_every:
            v = self.problem.hvp(w, self.u)
            rho = float(self.u @ v)
            if abs(rho - self.rho) <= 0.1 * abs(self.rho):
                u = self.u + self.lr * v
                self.rho, self.u = rho, u / u.norm()
                return
        self.rho, self.u = self.top(w)

    def _step_size(self, g: Tensor) -> float:
        if self.remedy == "lr_cap":
            return min(self.lr, (2.0 - self.margin) / self.rho) if self.rho > 0 else self.lr
        if self.remedy == "warmup":
            return self.lr * min(1.0, self.time / self.warmup_steps)
        assert self.clip_norm is not None
        norm = float(g.norm())
        return self.lr * min(1.0, self.clip_norm / norm) if norm > 0 else self.lr

    @property
    def position(self) -> Tensor:
        return self.w

    def observe(self, sharpness: bool) -> dict[str, float]:
        return {
            "train_loss": float(self.loss),
            "sharpness": self.measure_sharpness(self.w, self.seed)[0] if sharpness else math.nan,
            "rayleigh": self.rho,
            "step_size": self.step_size,
        }

    def is_finite(self) -> bool:
        return super().is_finite() and math.isfinite(float(self.loss))
