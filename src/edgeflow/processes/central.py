"""Central flow (Cohen, Damian, Talwalkar, Kolter, Lee, arXiv 2410.24206): GD's time-averaged
trajectory at EoS as a smooth flow constrained to sharpness ≤ 2/η.

    dw/dt = −η [∇L + ½ Σ_ij X_ij ∇(u_iᵀ ∇²L u_j)]

over the tracked top eigenvectors U = (u_1..u_k) whose eigenvalue exceeds ``active/η``. X ⪰ 0 solves
the semidefinite complementarity problem ``0 ⪯ X ⟂ Uᵀ(2/η·I − H(t+Δt))U ⪰ 0`` with ``H(t+Δt)`` the
Hessian after one explicit sub-step, linearized in X. With ``G_ij = ∇(u_iᵀHu_j)`` and ``g = ∇L``:

    M(X) = 2/η·I − Λ + ηΔt [A + ½ B(X)],   A_ij = ⟨G_ij, g⟩,   B(X)_ij = Σ_kl ⟨G_ij, G_kl⟩ X_kl

B is a Gram operator (positive semidefinite), so the SDCP is the optimality condition of the convex
problem ``min_{X⪰0} ⟨X, 2/η·I − Λ + ηΔt·A⟩ + (ηΔt/4)‖Σ_kl X_kl G_kl‖²`` (its gradient is M(X)),
which CVXPY solves. With one active eigenvalue the minimizer is closed-form:
``X = max(0, [λ − 2/η − ηΔt⟨∇λ, ∇L⟩] / [(ηΔt/2)‖∇λ‖²])``.

GD's period-averaged loss is predicted by ``L(w) + tr(Σ)/η`` with ``Σ = U X Uᵀ`` (``tr Σ = tr X``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from edgeflow import distributed as parallel
from edgeflow.errors import IntegrationError
from edgeflow.oracle import Problem
from edgeflow.oracle.lanczos import tracking_tol
from edgeflow.processes.base import Process
from edgeflow.utils import positive_float, positive_int


def closed_form_x(lam: float, grad_dot: float, norm_sq: float, lr: float, dt: float) -> float:
    """The one-eigenvalue SDCP solution; ``grad_dot = ⟨∇λ, ∇L⟩``, ``norm_sq = ‖∇λ‖²``."""
    if norm_sq <= 0:
        return 0.0
    return max(0.0, (lam - 2.0 / lr - lr * dt * grad_dot) / (0.5 * lr * dt * norm_sq))


def solve_sdcp(lams: np.ndarray, A: np.ndarray, gram: np.ndarray, lr: float, dt: float) -> np.ndarray:
    """X ⪰ 0 with ``M(X) ⪰ 0`` and ``⟨X, M(X)⟩ = 0`` (see the module docstring), by CVXPY.

    ``gram[(i,j),(k,l)] = ⟨G_ij, G_kl⟩`` over all ordered pairs, as a k² × k² matrix.
    """
    import cvxpy as cp

    k = len(lams)
    C = 2.0 / lr * np.eye(k) - np.diag(lams) + lr * dt * A
    X = cp.Variable((k, k), PSD=True)
    # ‖Σ X_kl G_kl‖² = vec(X)ᵀ gram vec(X); factor the Gram matrix so the objective is a plain norm.
    evals, evecs = np.linalg.eigh(0.5 * (gram + gram.T))
    factor = (evecs * np.sqrt(np.clip(evals, 0, None))).T
    objective = cp.trace(C @ X) + (lr * dt / 4) * cp.sum_squares(factor @ cp.vec(X, order="C"))
    try:
        cp.Problem(cp.Minimize(objective)).solve(solver=cp.CLARABEL)
    except cp.error.SolverError as err:
        raise IntegrationError(f"central flow: the SDCP solver failed ({err})") from None
    if X.value is None:
        raise IntegrationError("central flow: the SDCP solver returned no solution")
    value = 0.5 * (X.value + X.value.T)
    w, v = np.linalg.eigh(value)
    return (v * np.clip(w, 0, None)) @ v.T


class CentralFlow(Process):
    name = "central"
    description = "central flow: GD's time average, constrained to sharpness ≤ 2/η (SDCP, 3rd derivatives)"
    fields = ("train_loss", "predicted_loss", "sharpness", "hessian_eigs", "sigma_sq")

    def __init__(
        self,
        problem: Problem,
        lr: float,
        substeps: int = 4,
        max_eigs: int = 4,
        track_from: float = 1.5,
        active_from: float = 1.95,
    ) -> None:
        super().__init__(problem, lr)
        self.substeps = positive_int("substeps", substeps)
        self.max_eigs = positive_int("max_eigs", max_eigs)
        self.track_from = positive_float("track_from", track_from)
        self.active_from = positive_float("active_from", active_from)

    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.gen = torch.Generator(device=w0.device).manual_seed(seed)
        self.w = w0.clone()
        self.k = 1
        self.vectors: Tensor | None = None
        self.eigenvalues = np.full(self.max_eigs, math.nan)
        self.sigma_sq = 0.0

    def _track(self) -> tuple[np.ndarray, Tensor]:
        """Top-k eigenpairs at w, Lanczos warm-started from the tracked vectors; grows k when the
        smallest tracked eigenvalue exceeds ``track_from/η``."""
        p = self.problem
        noise = torch.randn(p.dim, dtype=p.dtype, device=p.device, generator=self.gen)
        v0 = noise if self.vectors is None else self.vectors.sum(0) + 0.01 * noise / noise.norm()
        # The tracking tolerance's eigenvalue error is far inside the sub-step linearization error.
        pairs = p.eigs(self.w, k=self.k, v0=v0, tol=tracking_tol(p.dtype), generator=self.gen)
        lams = pairs.values.cpu().numpy().astype(np.float64)
        if len(lams) == self.k and lams[-1] > self.track_from / self.lr and self.k < self.max_eigs:
            self.k += 1
        self.vectors = pairs.vectors
        return lams, pairs.vectors

    def step(self) -> None:
        dt = 1.0 / self.substeps
        for _ in range(self.substeps):
            self._substep(dt)

    def _substep(self, dt: float) -> None:
        p, lr = self.problem, self.lr
        lams, U = self._track()
        g = p.grad(self.w)
        active = np.flatnonzero(lams > self.active_from / lr)
        velocity = g
        trace = 0.0
        if active.size:
            m = active.size
            Ua = U[active]
            G = {(i, j): p.third(self.w, Ua[i], Ua[j]) for i in range(m) for j in range(i, m)}
            for i in range(m):
                for j in range(i):
                    G[(i, j)] = G[(j, i)]
            if m == 1:
                x = closed_form_x(
                    float(lams[active[0]]), float(G[(0, 0)] @ g), float(G[(0, 0)] @ G[(0, 0)]), lr, dt
                )
                X = np.array([[x]])
            else:
                keys = [(i, j) for i in range(m) for j in range(m)]
                stack = torch.stack([G[key] for key in keys])
                gram = (stack @ stack.T).cpu().numpy()
                A = (stack @ g).cpu().numpy().reshape(m, m)
                # One solve for all ranks: CVXPY need not return the same bits everywhere.
                X = parallel.on_main(lambda: solve_sdcp(lams[active], A, gram, lr, dt))
            correction = sum(float(X[i, j]) * G[(i, j)] for i in range(m) for j in range(m))
            velocity = g + 0.5 * correction
            trace = float(np.trace(X))
        self.w = self.w - lr * dt * velocity
        self.sigma_sq = trace
        self.eigenvalues = np.full(self.max_eigs, math.nan)
        self.eigenvalues[: len(lams)] = lams

    @property
    def position(self) -> Tensor:
        return self.w

    def observe(self, sharpness: bool) -> dict[str, float | np.ndarray]:
        loss = float(self.problem.loss(self.w))
        return {
            "train_loss": loss,
            "predicted_loss": loss + self.sigma_sq / self.lr,
            "sharpness": self.measure_sharpness(self.w, self.seed)[0] if sharpness else math.nan,
            "hessian_eigs": self.eigenvalues.copy(),
            "sigma_sq": self.sigma_sq,
        }
