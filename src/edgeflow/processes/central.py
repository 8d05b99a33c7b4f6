"""Central flow (Cohen, Damian, Talwalkar, Kolter, Lee, arXiv 2410.24206): GD's time-averaged
trajectory at EoS as a smooth flow constrained to sharpness ≤ 2/η.

    dw/dt = −η [∇L + ½ Σ_ij X_ij ∇(u_iᵀ ∇²L u_j)]

over the tracked top eigenvectors U = (u_1..u_k) whose eigenvalue exceeds ``active/η``. X ⪰ 0 solves
the semidefinite complementarity problem ``0 ⪯ X ⟂ Uᵀ(2/η·I − H(t+Δt))U ⪰ 0`` with ``H(t+Δt)`` the
Hessian after one explicit sub-step, linearized in X. With ``G_ij = ∇(u_iᵀHu_j)`` and ``g = ∇L``:

    M(X) = 2/η·I − Λ + ηΔt [A + ½ B(X)],   A_ij = ⟨G_ij, g⟩,   B(X)_ij = Σ_kl ⟨G_ij, G_kl⟩ X_kl

B is a Gram operator (positive semidefinite), so the SDCP is the optimality condition of the convex
problem ``min_{X⪰0} ⟨X, 2/η·I − Λ + ηΔt·A⟩ + (ηΔt/4)‖Σ_kl X_kl G_kl‖²`` (its gradient is M(X)),
which CVXPY solves; Newton's method on ``M(LLᵀ)L = 0`` then makes that solution exact to rounding
(``polish_sdcp``). With one active eigenvalue the minimizer is closed-form:
``X = max(0, [λ − 2/η − ηΔt⟨∇λ, ∇L⟩] / [(ηΔt/2)‖∇λ‖²])``.

GD's period-averaged loss is predicted by ``L(w) + tr(Σ)/η`` with ``Σ = U X Uᵀ`` (``tr Σ = tr X``).

Tracking. Every Hessian eigenvalue above ``track_from/η`` is tracked, plus one below it as a witness
that none is missed, by a block eigensolver (``block_eigs``) warm-started from all vectors of the
previous solve and one fresh random vector. A cluster of near-equal eigenvalues at 2/η is the normal
state at EoS; a single start vector would find only some of its members and leave the others
unconstrained. ``max_eigs`` bounds the number tracked and warns when it is reached.

Records are at integer times: the quantities of time k (eigenvalues, X, σ² = tr Σ) are computed at
the end of step k and are also what the first sub-step of step k + 1 uses, so recording them costs
nothing extra. Like the flow's own first sub-step, σ² at time k is the SDCP solution linearized over
the next sub-step.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor
from torch.func import vmap

from edgeflow import distributed as parallel
from edgeflow.errors import IntegrationError
from edgeflow.oracle import Problem
from edgeflow.oracle.lanczos import block_eigs, tracking_tol
from edgeflow.processes.base import Process
from edgeflow.utils import positive_float, positive_int


def closed_form_x(lam: float, grad_dot: float, norm_sq: float, lr: float, dt: float) -> float:
    """The one-eigenvalue SDCP solution; ``grad_dot = ⟨∇λ, ∇L⟩``, ``norm_sq = ‖∇λ‖²``."""
    if norm_sq <= 0:
        return 0.0
    return max(0.0, (lam - 2.0 / lr - lr * dt * grad_dot) / (0.5 * lr * dt * norm_sq))


def solve_sdcp(lams: np.ndarray, A: np.ndarray, gram: np.ndarray, lr: float, dt: float) -> np.ndarray:
    """X ⪰ 0 with ``M(X) ⪰ 0`` and ``⟨X, M(X)⟩ = 0`` (see the module docstring): CVXPY, then Newton.

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
    return polish_sdcp(C, 0.5 * lr * dt * gram, (v * np.clip(w, 0, None)) @ v.T)


def polish_sdcp(C: np.ndarray, B: np.ndarray, X0: np.ndarray, rank_tol: float = 1e-6) -> np.ndarray:
    """Newton's method on the SDCP ``M(X) = C + B·vec(X)`` from an interior-point solution ``X0``.

    The interior-point solver stops at a duality gap of ~1e-8, which left tr X off by ~1e-5
    (relative) and made X differ between runs whose data differed in the last bits. With the rank r
    of ``X0`` read off its eigenvalues (those above ``rank_tol`` of the largest), X = L Lᵀ with
    L ∈ ℝ^{k×r} solves the SDCP iff ``M(LLᵀ) L = 0`` and ``M ⪰ 0``: Gauss–Newton (least squares,
    which also absorbs L's rotational freedom) converges quadratically from ``X0``. If it does not,
    or M is not ⪰ 0 at the result, ``X0`` is returned unchanged.
    """
    k = C.shape[0]
    w, v = np.linalg.eigh(X0)
    keep = w > rank_tol * max(w.max(), 0.0)
    if not keep.any():
        return X0
    L = v[:, keep] * np.sqrt(w[keep])
    r = L.shape[1]

    def M(X: np.ndarray) -> np.ndarray:
        return C + (B @ X.reshape(-1)).reshape(k, k)

    def residual(L: np.ndarray) -> np.ndarray:
        return (M(L @ L.T) @ L).reshape(-1)

    scale = np.abs(C).max() * np.linalg.norm(L) + np.finfo(float).tiny
    for _ in range(20):
        F = residual(L)
        if np.linalg.norm(F) <= 1e-14 * scale:
            break
        Mx = M(L @ L.T)
        J = np.empty((k * r, k * r))
        for n in range(k * r):
            E = np.zeros(k * r)
            E[n] = 1.0
            E = E.reshape(k, r)
            dX = E @ L.T + L @ E.T
            J[:, n] = (Mx @ E + (B @ dX.reshape(-1)).reshape(k, k) @ L).reshape(-1)
        L = L + np.linalg.lstsq(J, -F, rcond=None)[0].reshape(k, r)
    X = L @ L.T
    tol = 1e-9 * np.abs(C).max()
    if np.linalg.norm(residual(L)) > 1e-10 * scale or np.linalg.eigvalsh(M(X)).min() < -tol:
        return X0
    return X


#: block rows beyond the tracked eigenvalues: they speed up convergence of the lowest tracked one
#: and catch an eigenvalue that rises into the tracked range; one of them is random at every solve.
GUARD_VECTORS = 2


def hvps(problem: Problem, w: Tensor, V: Tensor) -> Tensor:
    """``∇²L(w) v`` for every row ``v`` of ``V``, in one vmapped call: the forward and backward pass
    at ``w`` are shared, 4× faster per product than a loop on the digits MLP (CPU)."""
    if problem.sharded:  # each product is all-reduced over ranks, which vmap cannot batch
        return torch.stack([problem.hvp(w, v) for v in V])
    before = problem.counts.hvp
    out = vmap(lambda v: problem.hvp(w, v))(V)
    problem.counts.hvp = before + V.shape[0]  # the vmapped call counted itself once
    return out


def third_derivatives(problem: Problem, w: Tensor, U: Tensor, V: Tensor) -> Tensor:
    """``∇(u_iᵀ ∇²L(w) v_i)`` for the row pairs of ``U`` and ``V``, vmapped like ``hvps``."""
    if problem.sharded:
        return torch.stack([problem.third(w, u, v) for u, v in zip(U, V, strict=True)])
    before = problem.counts.third
    out = vmap(lambda u, v: problem.third(w, u, v))(U, V)
    problem.counts.third = before + U.shape[0]
    return out


class TrackingLimitWarning(UserWarning):
    """More Hessian eigenvalues exceed the tracking threshold than ``max_eigs`` allows."""


class CentralFlow(Process):
    name = "central"
    description = "central flow: GD's time average, constrained to sharpness ≤ 2/η (SDCP, 3rd derivatives)"
    fields = ("train_loss", "predicted_loss", "sharpness", "hessian_eigs", "sigma_sq")

    def __init__(
        self,
        problem: Problem,
        lr: float,
        substeps: int = 4,
        max_eigs: int = 24,
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
        self.k = 1  # eigenvalues tracked: all above track_from/η and one below
        self.vectors: Tensor | None = None  # Ritz vectors of the last solve, the next warm start
        self.warned = False
        # The flow's quantities at self.w (a dict, so checkpoints store it): None once w moves.
        self.current: dict | None = None

    def step(self) -> None:
        dt = 1.0 / self.substeps
        for _ in range(self.substeps):
            velocity = self._at_current_point()["velocity"]
            self.w = self.w - self.lr * dt * velocity
            self.current = None
        # Time k: the records and the next step's first sub-step share this evaluation.
        self._at_current_point()

    def _at_current_point(self) -> dict:
        """Tracked eigenvalues, σ² = tr Σ and the velocity dw/dt (without −η) at ``self.w``."""
        if self.current is None:
            lams, U = self._track()
            g = self.problem.grad(self.w)
            X, correction = self._oscillation(lams, U, g)
            eigenvalues = np.full(self.max_eigs, math.nan)
            eigenvalues[: len(lams)] = lams
            self.current = {
                "eigenvalues": eigenvalues,
                "sigma_sq": float(np.trace(X)) if X.size else 0.0,
                "velocity": g if correction is None else g + 0.5 * correction,
            }
        return self.current

    def _track(self) -> tuple[np.ndarray, Tensor]:
        """Every eigenpair above ``track_from/η`` and one below (fewer only at ``max_eigs``)."""
        p = self.problem
        threshold = self.track_from / self.lr
        limit = min(self.max_eigs, p.dim)
        while True:
            rows = min(self.k + GUARD_VECTORS, p.dim)
            pairs = block_eigs(
                lambda V: hvps(p, self.w, V),
                self._warm_start(rows),
                min(self.k, rows),
                # The tracking tolerance's eigenvalue error is far inside the sub-step linearization error.
                tol=tracking_tol(p.dtype),
                generator=self.gen,
            )
            self.vectors = pairs.vectors
            above = int((pairs.values > threshold).sum())  # the guards' estimates count too
            if above < self.k or self.k == limit:
                break
            self.k = min(above + 1, limit)
        if above >= limit and limit < p.dim and not self.warned:
            # No tracked eigenvalue lies below the threshold: there may be more above it.
            self.warned = True
            warnings.warn(
                f"central flow: at least {above} Hessian eigenvalues exceed {self.track_from}/η and "
                f"max_eigs = {self.max_eigs} are tracked; any beyond them go unconstrained. Raise the "
                f"option (central.max_eigs=N).",
                TrackingLimitWarning,
                stacklevel=2,
            )
        tracked = self.k
        self.k = max(1, min(above + 1, limit))  # eigenvalues that fell below the threshold leave
        lams = pairs.values[:tracked].cpu().numpy().astype(np.float64)
        return lams, pairs.vectors[:tracked]

    def _warm_start(self, rows: int) -> Tensor:
        """The previous solve's vectors and at least one fresh random row."""
        p = self.problem
        noise = torch.randn(rows, p.dim, dtype=p.dtype, device=p.device, generator=self.gen)
        if self.vectors is None:
            return noise
        kept = self.vectors[: rows - 1]
        return torch.cat([kept, noise[kept.shape[0] :]])

    def _oscillation(self, lams: np.ndarray, U: Tensor, g: Tensor) -> tuple[np.ndarray, Tensor | None]:
        """X of the SDCP over the active eigenvectors and the velocity correction Σ_ij X_ij G_ij."""
        p, lr, dt = self.problem, self.lr, 1.0 / self.substeps
        active = np.flatnonzero(lams > self.active_from / lr)
        m = active.size
        if m == 0:
            return np.zeros((0, 0)), None
        Ua = U[active]
        upper = [(i, j) for i in range(m) for j in range(i, m)]
        rows, cols = zip(*upper, strict=True)
        G_upper = third_derivatives(p, self.w, Ua[list(rows)], Ua[list(cols)])
        slot = {pair: n for n, pair in enumerate(upper)}
        G = G_upper[[slot[min(i, j), max(i, j)] for i in range(m) for j in range(m)]]  # (m², d), G_ij = G_ji
        if m == 1:
            x = closed_form_x(float(lams[active[0]]), float(G[0] @ g), float(G[0] @ G[0]), lr, dt)
            X = np.array([[x]])
        else:
            gram = (G @ G.T).cpu().numpy()
            A = (G @ g).cpu().numpy().reshape(m, m)
            # One solve for all ranks: CVXPY need not return the same bits everywhere.
            X = parallel.on_main(lambda: solve_sdcp(lams[active], A, gram, lr, dt))
        correction = G.T @ torch.as_tensor(X.reshape(-1), dtype=G.dtype, device=G.device)
        return X, correction

    @property
    def position(self) -> Tensor:
        return self.w

    def observe(self, sharpness: bool) -> dict[str, float | np.ndarray]:
        loss = float(self.problem.loss(self.w))
        try:
            here = self._at_current_point()
        except IntegrationError:  # the step that follows fails with it, and the runner records that
            here = {"eigenvalues": np.full(self.max_eigs, math.nan), "sigma_sq": math.nan}
        return {
            "train_loss": loss,
            "predicted_loss": loss + here["sigma_sq"] / self.lr,
            "sharpness": self.measure_sharpness(self.w, self.seed)[0] if sharpness else math.nan,
            "hessian_eigs": here["eigenvalues"].copy(),
            "sigma_sq": here["sigma_sq"],
        }
