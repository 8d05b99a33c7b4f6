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

Integration. A GD step is ``substeps`` sub-steps. A sub-step with an eigenvalue above
``active_from/η`` is an explicit Euler step with the SDCP above, the scheme of the paper. A sub-step
without one is a step of gradient flow, which the central flow is there, by the classical
Runge–Kutta method (RK4, three more gradients): Euler's error in the approach to the edge of
stability otherwise outweighs every other error of the flow (on the digits MLP at 4 sub-steps, the
distance to a converged run falls from 1.2e-2 to 2.5e-4 of the distance travelled).

Tracking. Every Hessian eigenvalue above ``track_from/η`` is tracked, plus one below it as a witness
that none is missed, by a block eigensolver (``block_eigs``) warm-started from all vectors of the
previous solve and one fresh random vector. A cluster of near-equal eigenvalues at 2/η is the normal
state at EoS; a single start vector would find only some of its members and leave the others
unconstrained. ``max_eigs`` bounds the number tracked and warns when it is reached. This full solve
runs once per step, at integer times (``resolve="substep"``: at every sub-step), and asks the
tracking tolerance only of the SDCP's pairs (``UPDATE_TOL`` of the others). The sub-steps in
between update the SDCP's eigenpairs (the active ones and two guards) by Rayleigh–Ritz on the last
vectors, to a residual of ``UPDATE_TOL``: the block's products, one batch. The SDCP is warm-started
from the last sub-step's X, and Newton's method from it replaces CVXPY unless the rank of X changes
by more than one (``warm_sdcp``). The third derivatives of all active pairs are one vmapped call.

Records are at integer times: the quantities of time k (eigenvalues, X, σ² = tr Σ) are computed at
the end of step k and are also what the first sub-step of step k + 1 uses, so recording them costs
nothing extra. Like the flow's own first sub-step, σ² at time k is the SDCP solution linearized over
the next sub-step.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from torch import Tensor
from torch.func import vjp, vmap

from edgeflow import distributed as parallel
from edgeflow.errors import IntegrationError, invalid_choice
from edgeflow.optimizers import add_states
from edgeflow.oracle import Problem
from edgeflow.oracle.lanczos import block_eigs, tracking_tol
from edgeflow.processes.base import Process
from edgeflow.processes.gradient import stable_field
from edgeflow.processes.ode import rk4_substep
from edgeflow.utils import positive_float, positive_int

#: ``resolve``: when the tracked eigenpairs are solved for in full (else updated by Rayleigh–Ritz)
RESOLVE = ("step", "substep")


def closed_form_x(lam: float, grad_dot: float, norm_sq: float, lr: float, dt: float) -> float:
    """The one-eigenvalue SDCP solution; ``grad_dot = ⟨∇λ, ∇L⟩``, ``norm_sq = ‖∇λ‖²``."""
    if norm_sq <= 0:
        return 0.0
    return max(0.0, (lam - 2.0 / lr - lr * dt * grad_dot) / (0.5 * lr * dt * norm_sq))


def solve_sdcp(
    lams: np.ndarray,
    A: np.ndarray,
    gram: np.ndarray,
    lr: float,
    dt: float,
    warm: np.ndarray | None = None,
) -> np.ndarray:
    """X ⪰ 0 with ``M(X) ⪰ 0`` and ``⟨X, M(X)⟩ = 0`` (see the module docstring).

    ``gram[(i,j),(k,l)] = ⟨G_ij, G_kl⟩`` over all ordered pairs, as a k² × k² matrix. With a
    ``warm`` start (the previous sub-step's X in this basis), Newton's method from it, with the same
    rank or one more or one less, is tried first (``warm_sdcp``); CVXPY and then Newton's method
    from its solution are the fallback, and the only path without a warm start.
    """
    k = len(lams)
    C = 2.0 / lr * np.eye(k) - np.diag(lams) + lr * dt * A
    B = 0.5 * lr * dt * gram
    if warm is not None:
        X = warm_sdcp(C, B, warm)
        if X is not None:
            return X
    # ‖Σ X_kl G_kl‖² = vec(X)ᵀ gram vec(X)
    return polish_sdcp(C, B, _convex_sdcp(C, gram, lr * dt / 4))


def solve_general_sdcp(C: np.ndarray, B: np.ndarray, warm: np.ndarray | None = None) -> np.ndarray:
    """The SDCP ``0 ⪯ X ⟂ C + B·vec(X) ⪰ 0`` for an operator B that is only nearly symmetric (a
    preconditioned optimizer's: see ``CentralFlow._preconditioned_oscillation``). Newton's method
    from ``warm`` first; else the convex problem of B's symmetric part, polished by Newton's method
    with B itself, which makes it the exact solution wherever it converges."""
    k = C.shape[0]
    if k == 1:
        b = float(B[0, 0])
        if C[0, 0] >= 0:
            return np.zeros((1, 1))
        if b <= 0:
            raise IntegrationError(
                f"central flow: the constraint cannot be held (its rate in the oscillation is {b:.3g} ≤ 0)"
            )
        return np.array([[-C[0, 0] / b]])
    if warm is not None:
        X = warm_sdcp(C, B, warm)
        if X is not None:
            return X
    if np.linalg.eigvalsh(0.5 * (C + C.T)).min() >= 0:
        return np.zeros((k, k))
    return polish_sdcp(C, B, _convex_sdcp(C, 0.5 * (B + B.T), 0.5))


def _convex_sdcp(C: np.ndarray, gram: np.ndarray, weight: float) -> np.ndarray:
    """argmin over X ⪰ 0 of ``⟨C, X⟩ + weight · vec(X)ᵀ gram vec(X)`` (gram symmetric ⪰ 0), by CVXPY."""
    import cvxpy as cp

    k = C.shape[0]
    X = cp.Variable((k, k), PSD=True)
    # Factor the Gram matrix so the objective is a plain norm.
    evals, evecs = np.linalg.eigh(0.5 * (gram + gram.T))
    factor = (evecs * np.sqrt(np.clip(evals, 0, None))).T
    objective = cp.trace(C @ X) + weight * cp.sum_squares(factor @ cp.vec(X, order="C"))
    try:
        cp.Problem(cp.Minimize(objective)).solve(solver=cp.CLARABEL)
    except cp.error.SolverError as err:
        raise IntegrationError(f"central flow: the SDCP solver failed ({err})") from None
    if X.value is None:
        raise IntegrationError("central flow: the SDCP solver returned no solution")
    value = 0.5 * (X.value + X.value.T)
    w, v = np.linalg.eigh(value)
    return (v * np.clip(w, 0, None)) @ v.T


def polish_sdcp(C: np.ndarray, B: np.ndarray, X0: np.ndarray, rank_tol: float = 1e-6) -> np.ndarray:
    """Newton's method on the SDCP ``M(X) = C + B·vec(X)`` from an interior-point solution ``X0``.

    The interior-point solver stops at a duality gap of ~1e-8, which left tr X off by ~1e-5
    (relative) and made X differ between runs whose data differed in the last bits. With the rank r
    of ``X0`` read off its eigenvalues (those above ``rank_tol`` of the largest), X = L Lᵀ with
    L ∈ ℝ^{k×r} solves the SDCP iff ``M(LLᵀ) L = 0`` and ``M ⪰ 0``: Gauss–Newton (least squares,
    which also absorbs L's rotational freedom) converges quadratically from ``X0``. If it does not,
    or M is not ⪰ 0 at the result, ``X0`` is returned unchanged.
    """
    L = _factor(X0, rank_tol)
    X = None if L is None else _newton_sdcp(C, B, L)
    return X0 if X is None else X


def warm_sdcp(C: np.ndarray, B: np.ndarray, X0: np.ndarray) -> np.ndarray | None:
    """The SDCP's solution by Newton's method from a nearby one, or None where that fails.

    Along a trajectory the solution moves a little per sub-step and its rank rarely changes. Tried
    in order: X = 0 (when ``C ⪰ 0``); the rank of ``X0``; one rank more, along the most negative
    eigenvector of ``M(X0)`` (an eigenvalue reaching 2/η); one rank less (one leaving). Whatever is
    returned has been checked for ``M ⪰ 0`` and ``M X = 0``, which determine the solution.
    """
    k = C.shape[0]
    if np.linalg.eigvalsh(0.5 * (C + C.T)).min() >= 0:
        return np.zeros((k, k))  # M(0) = C ⪰ 0: no oscillation
    L = _factor(X0)
    if L is not None:
        X = _newton_sdcp(C, B, L)
        if X is not None:
            return X
    M0 = C + (B @ X0.reshape(-1)).reshape(k, k)
    w, v = np.linalg.eigh(0.5 * (M0 + M0.T))
    D = np.outer(v[:, 0], v[:, 0])
    curvature = float(D.reshape(-1) @ B @ D.reshape(-1))
    if w[0] < 0 and curvature > 0:
        # the exact minimizer of the convex objective along D from X0
        L_more = _factor(X0 - w[0] / curvature * D)
        X = None if L_more is None else _newton_sdcp(C, B, L_more)
        if X is not None:
            return X
    if L is not None and L.shape[1] > 1:
        # The direction leaving is the one of X0's range where M(X0) pushes X0 down hardest.
        Q, _ = np.linalg.qr(L)
        _, v = np.linalg.eigh(Q.T @ M0 @ Q)
        P = Q @ v[:, :-1]
        L_less = _factor(P @ (P.T @ X0 @ P) @ P.T)
        return None if L_less is None else _newton_sdcp(C, B, L_less)
    return None


def _factor(X0: np.ndarray, rank_tol: float = 1e-6) -> np.ndarray | None:
    """L with ``L Lᵀ ≈ X0`` over the eigenvalues above ``rank_tol`` of the largest (increasing);
    None for X0 ≈ 0."""
    w, v = np.linalg.eigh(0.5 * (X0 + X0.T))
    keep = w > rank_tol * max(w.max(), 0.0)
    if not keep.any():
        return None
    return v[:, keep] * np.sqrt(w[keep])


def _newton_sdcp(C: np.ndarray, B: np.ndarray, L: np.ndarray) -> np.ndarray | None:
    """Gauss–Newton on ``M(LLᵀ) L = 0`` from ``L`` (k × r); X = LLᵀ if it converges to a point with
    ``M ⪰ 0``, else None."""
    k, r = L.shape

    def M(X: np.ndarray) -> np.ndarray:
        return C + (B @ X.reshape(-1)).reshape(k, k)

    def residual(L: np.ndarray) -> np.ndarray:
        return (M(L @ L.T) @ L).reshape(-1)

    scale = np.abs(C).max() * np.linalg.norm(L) + np.finfo(float).tiny
    basis = np.eye(k * r).reshape(k * r, k, r)
    for _ in range(20):
        F = residual(L)
        if np.linalg.norm(F) <= 1e-14 * scale:
            break
        Mx = M(L @ L.T)
        # J[:, n] = d residual / d L along the n-th unit matrix E_n: M E + B(E Lᵀ + L Eᵀ) L
        dX = basis @ L.T
        dX = dX + dX.transpose(0, 2, 1)
        J = (Mx @ basis + (dX.reshape(k * r, -1) @ B.T).reshape(k * r, k, k) @ L).reshape(k * r, -1).T
        L = L + np.linalg.lstsq(J, -F, rcond=None)[0].reshape(k, r)
        if not np.isfinite(L).all():
            return None
    X = L @ L.T
    tol = 1e-9 * np.abs(C).max()
    if np.linalg.norm(residual(L)) > 1e-10 * scale or np.linalg.eigvalsh(M(X)).min() < -tol:
        return None
    return X


#: block rows beyond the tracked eigenvalues: they speed up convergence of the lowest tracked one
#: and catch an eigenvalue that rises into the tracked range; one of them is random at every solve.
GUARD_VECTORS = 2
#: relative residual target of the Rayleigh–Ritz updates between full solves
UPDATE_TOL = 3e-3


def third_derivatives(problem: Problem, w: Tensor, U: Tensor) -> Tensor:
    """``G[i, j] = ∇(u_iᵀ ∇²L(w) u_j)`` for all rows of ``U`` (m × d), as an m × m × d tensor.

    One vmapped call: for each j the pullback of ``x ↦ ∇²L(x) u_j`` is built once and applied to
    every u_i. That computes all m² ordered pairs, and is still faster than the m(m+1)/2 pairs
    i ≤ j one by one (each of which repeats its Hessian-vector product); all m² are counted. G is
    symmetrized (``G_ij = G_ji``), which holds to rounding anyway.
    """
    m = U.shape[0]
    if problem.sharded:  # each contraction is all-reduced over ranks, which vmap cannot batch
        G = U.new_empty(m, m, U.shape[1])
        for i in range(m):
            for j in range(i, m):
                G[i, j] = G[j, i] = problem.third(w, U[i], U[j])
        return G
    hvps_before = problem.counts.hvp

    def column(u: Tensor) -> Tensor:
        _, pullback = vjp(lambda x: problem.hvp(x, u), w)
        return vmap(pullback)(U)[0]

    G = vmap(column)(U)
    problem.counts.hvp = hvps_before  # the traced HVP counted itself, but is part of the contractions
    problem.counts.third += m * m
    return 0.5 * (G + G.transpose(0, 1))


class TrackingLimitWarning(UserWarning):
    """More Hessian eigenvalues exceed the tracking threshold than ``max_eigs`` allows."""


class CentralFlow(Process):
    name = "central"
    description = "central flow: GD's time average, constrained to sharpness ≤ 2/η (SDCP, 3rd derivatives)"
    fields = ("train_loss", "predicted_loss", "sharpness", "effective_sharpness", "hessian_eigs", "sigma_sq")
    # The momentum methods' oscillation lives in (w, momentum): not derived yet.
    optimizers = ("gd", "scalar-rmsprop", "rmsprop")

    def __init__(
        self,
        problem: Problem,
        lr: float,
        substeps: int = 4,
        max_eigs: int = 24,
        track_from: float = 1.5,
        active_from: float = 1.95,
        resolve: str = "step",
    ) -> None:
        super().__init__(problem, lr)
        self.substeps = positive_int("substeps", substeps)
        self.max_eigs = positive_int("max_eigs", max_eigs)
        self.track_from = positive_float("track_from", track_from)
        self.active_from = positive_float("active_from", active_from)
        if resolve not in RESOLVE:
            raise invalid_choice("central.resolve", resolve, RESOLVE)
        self.resolve = resolve

    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.gen = torch.Generator(device=w0.device).manual_seed(seed)
        self.w = w0.clone()
        self.k = 1  # eigenvalues tracked: all above track_from/η and one below
        self.vectors: Tensor | None = None  # Ritz vectors of the last solve, the next warm start
        self.warned = False
        # The flow's quantities at self.w (a dict, so checkpoints store it): None once w moves.
        self.current: dict | None = None
        # The last SDCP solution and its basis (the active eigenvectors): the next one's warm start.
        self.sdcp_x: np.ndarray | None = None
        self.sdcp_basis: Tensor | None = None
        # A stateful optimizer's state starts as the discrete one's: having seen ∇L(w0).
        self.opt_state = {} if self.optimizer.stateless else self.initial_state(w0, self.problem.grad(w0))

    def _level(self, factor: float) -> float:
        """``factor`` of the way to the threshold: GD's on the Hessian (factor/η), another
        optimizer's on P⁻¹H (factor × threshold/2)."""
        if self.optimizer.stateless:
            return factor / self.lr
        return factor * self.optimizer.threshold / 2

    def _frame_scale(self) -> Tensor:
        """P^{-1/2} at the current state (P^{-1/2}HP^{-1/2} has the eigenvalues of P⁻¹H)."""
        return torch.as_tensor(self.optimizer.inverse_preconditioner(self.opt_state)).sqrt()

    def _products(self, V: Tensor) -> Tensor:
        """The tracked operator applied to the rows of V: H, or P^{-1/2}HP^{-1/2}."""
        if self.optimizer.stateless:
            return self.problem.hvps(self.w, V)
        D = self._frame_scale()
        return D * self.problem.hvps(self.w, D * V)

    def step(self) -> None:
        if not self.optimizer.stateless:
            self._preconditioned_step()
            return
        dt = 1.0 / self.substeps
        for i in range(self.substeps):
            here = self._at_current_point(full=i == 0 or self.resolve == "substep")
            if here["active"]:
                self.w = self.w - self.lr * dt * here["velocity"]
            else:
                self.w = self._gradient_flow_rk4(here["velocity"], dt)
            self.current = None
        # Time k: the records and the next step's first sub-step share this evaluation.
        self._at_current_point(full=True)

    def _at_current_point(self, full: bool = True) -> dict:
        """Tracked eigenvalues, σ² = tr Σ and the velocity dw/dt (without −η) at ``self.w``;
        ``full``: a full block solve, else a Rayleigh–Ritz update of the last one."""
        if self.current is None and not self.optimizer.stateless:
            self.current = self._preconditioned_point(full)
        if self.current is None:
            lams, U = self._track() if full or self.vectors is None else self._update()
            g = self.problem.grad(self.w)
            X, correction = self._oscillation(lams, U, g)
            eigenvalues = np.full(self.max_eigs, math.nan)
            eigenvalues[: len(lams)] = lams
            self.current = {
                "eigenvalues": eigenvalues,
                "sigma_sq": float(np.trace(X)) if X.size else 0.0,
                "velocity": g if correction is None else g + 0.5 * correction,
                "active": X.size > 0,
            }
        return self.current

    def _gradient_flow_rk4(self, g: Tensor, dt: float) -> Tensor:
        """One classical Runge–Kutta sub-step of gradient flow from ``self.w`` (gradient ``g``)."""
        h = self.lr * dt
        k2 = self.problem.grad(self.w - 0.5 * h * g)
        k3 = self.problem.grad(self.w - 0.5 * h * k2)
        k4 = self.problem.grad(self.w - h * k3)
        return self.w - h / 6 * (g + 2 * k2 + 2 * k3 + k4)

    def _track(self) -> tuple[np.ndarray, Tensor]:
        """Every eigenpair above ``track_from/η`` and one below (fewer only at ``max_eigs``)."""
        p = self.problem
        threshold = self._level(self.track_from)
        limit = min(self.max_eigs, p.dim)
        # The SDCP's eigenpairs (those active at the last evaluation and the next one) to the
        # tracking tolerance, whose eigenvalue error is far inside the sub-step linearization error;
        # the others decide only which are tracked, and the Rayleigh–Ritz updates' tolerance will do.
        tight = 1 + (0 if self.sdcp_basis is None else self.sdcp_basis.shape[0])
        while True:
            rows = min(self.k + GUARD_VECTORS, p.dim)
            wanted = min(self.k, rows)
            pairs = block_eigs(
                self._products,
                self._warm_start(rows),
                wanted,
                tol=[tracking_tol(p.dtype) if i < tight else UPDATE_TOL for i in range(wanted)],
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

    def _update(self) -> tuple[np.ndarray, Tensor]:
        """The eigenpairs the SDCP needs, by Rayleigh–Ritz on the last solve's vectors moved to
        ``self.w``: those that were active at the last evaluation and ``GUARD_VECTORS`` more.

        Between full solves the flow moves a fraction of a step, and the warm block alone usually
        meets ``UPDATE_TOL`` (more products are taken where it does not). The guards' Ritz values are
        lower bounds (Cauchy interlacing): one above ``active_from/η`` joins the SDCP, and a full
        solve follows where even the lowest one is above it, or where one beyond the tracked ones
        is above ``track_from/η``.
        """
        active = 0 if self.sdcp_basis is None else self.sdcp_basis.shape[0]
        rows = min(active + GUARD_VECTORS, self.vectors.shape[0])
        pairs = block_eigs(
            self._products,
            self.vectors[:rows],
            min(active + 1, rows),
            tol=UPDATE_TOL,
            generator=self.gen,
        )
        values = pairs.values.cpu().numpy().astype(np.float64)
        missed_active = rows < self.vectors.shape[0] and values[-1] > self._level(self.active_from)
        missed_tracked = rows > self.k and values[self.k] > self._level(self.track_from)
        if missed_active or missed_tracked:
            return self._track()
        self.vectors = torch.cat([pairs.vectors, self.vectors[rows:]])
        keep = min(rows, self.k)  # the guards beyond the tracked ones stay out of the SDCP, as in _track
        return values[:keep], pairs.vectors[:keep]

    def _warm_start(self, rows: int) -> Tensor:
        """The previous solve's vectors and at least one fresh random row."""
        p = self.problem
        noise = torch.randn(rows, p.dim, dtype=p.dtype, device=p.device, generator=self.gen)
        if self.vectors is None:
            return noise
        kept = self.vectors[: rows - 1]
        return torch.cat([kept, noise[kept.shape[0] :]])

    def _active_basis(self, lams: np.ndarray, U: Tensor) -> tuple[np.ndarray, Tensor, np.ndarray | None]:
        """The indices of the active eigenvalues, their (orthonormal) vectors, which become the SDCP's
        basis, and the last SDCP solution moved into it (the warm start; None at the first). With
        none active, X is empty."""
        active = np.flatnonzero(lams > self._level(self.active_from))
        Ua = U[active]
        warm = None
        if self.sdcp_basis is not None and self.sdcp_x is not None:
            overlap = (Ua @ self.sdcp_basis.T).cpu().numpy()
            warm = overlap @ self.sdcp_x @ overlap.T
        self.sdcp_basis = Ua
        if active.size == 0:
            self.sdcp_x = np.zeros((0, 0))
        return active, Ua, warm

    def _oscillation(self, lams: np.ndarray, U: Tensor, g: Tensor) -> tuple[np.ndarray, Tensor | None]:
        """X of the SDCP over the active eigenvectors and the velocity correction Σ_ij X_ij G_ij."""
        p, lr, dt = self.problem, self.lr, 1.0 / self.substeps
        active, Ua, warm = self._active_basis(lams, U)
        m = active.size
        if m == 0:
            return self.sdcp_x, None
        G = third_derivatives(p, self.w, Ua).reshape(m * m, -1)  # row i·m + j: G_ij = G_ji
        if m == 1:
            x = closed_form_x(float(lams[active[0]]), float(G[0] @ g), float(G[0] @ G[0]), lr, dt)
            X = np.array([[x]])
        else:
            gram = (G @ G.T).cpu().numpy()
            A = (G @ g).cpu().numpy().reshape(m, m)
            # One solve for all ranks: CVXPY need not return the same bits everywhere.
            X = parallel.on_main(lambda: solve_sdcp(lams[active], A, gram, lr, dt, warm=warm))
        self.sdcp_x = X
        correction = G.T @ torch.as_tensor(X.reshape(-1), dtype=G.dtype, device=G.device)
        return X, correction

    # ------------------------------------------------------------------ preconditioned optimizers
    def _preconditioned_step(self) -> None:
        """One unit of time of (w, state): explicit Euler with the SDCP where an eigenvalue of P⁻¹H
        is active, else an RK4 sub-step of the stable flow (as for GD)."""
        dt = 1.0 / self.substeps
        for i in range(self.substeps):
            here = self._at_current_point(full=i == 0 or self.resolve == "substep")
            first = (here["velocity"], here["state_velocity"])
            if here["active"]:
                self.w = self.w + dt * first[0]
                self.opt_state = add_states(self.opt_state, dt, first[1])
            else:
                field = functools.partial(stable_field, self.problem, self.optimizer)
                self.w, self.opt_state = rk4_substep(field, self.w, self.opt_state, dt, first=first)
            self.current = None
        self._at_current_point(full=True)

    def _preconditioned_point(self, full: bool) -> dict:
        lams, V = self._track() if full or self.vectors is None else self._update()
        g = self.problem.grad(self.w)
        X, w_dot, state_dot, sigma_sq = self._preconditioned_oscillation(lams, V, g)
        eigenvalues = np.full(self.max_eigs, math.nan)
        eigenvalues[: len(lams)] = lams
        return {
            "eigenvalues": eigenvalues,
            "sigma_sq": sigma_sq,
            # E[L(w + δ)] ≈ L + ½⟨Σ, H⟩, and H = threshold·P on the span of Σ (complementarity)
            "excess_loss": 0.5 * self.optimizer.threshold * float(np.trace(X)) if X.size else 0.0,
            "velocity": w_dot,
            "state_velocity": state_dot,
            "active": X.size > 0,
        }

    def _preconditioned_oscillation(
        self, lams: np.ndarray, V: Tensor, g: Tensor
    ) -> tuple[np.ndarray, Tensor, dict, float]:
        """X, dw/dt, d state/dt and tr Σ for a preconditioned optimizer.

        With D = P^{-1/2} and the tracked eigenvectors v_i of DHD, u_i = D v_i are the generalized
        eigenvectors (HU = PUΛ, UᵀPU = I) and Σ = U X Uᵀ. The flow and the constraint, linearized
        over the sub-step Δt (τ the threshold, G_ij = ∇(u_iᵀHu_j)):

            dw/dt = −P⁻¹[∇L + ½ Σ_kl X_kl G_kl]
            d state/dt = the state's ODE fed E[g⊙g] = ∇L⊙∇L + diag(HΣH)
            Uᵀ(τP − H)U(t + Δt) ≈ diag(τ − λ) + Δt[τ·UᵀṖU − (⟨G_ij, dw/dt⟩)_ij] ⪰ 0, ⟂ X

        Ṗ is linear in d state/dt, hence in X through diag(HΣH): the SDCP's operator is
        B = Δt[τ·T + ½⟨G_ij, P⁻¹G_kl⟩], T_ij,kl = u_iᵀ Ṗ(Hu_k ⊙ Hu_l) u_j, whose Gram part is ⪰ 0
        and whose T is symmetric where Hu = τPu (at the threshold), nearly so elsewhere.
        """
        p, opt, dt = self.problem, self.optimizer, 1.0 / self.substeps
        tau = opt.threshold
        inverse = opt.inverse_preconditioner(self.opt_state)
        D = self._frame_scale()
        state = self.opt_state
        stable_state_dot = opt.state_velocity(state, g, g * g)
        active, Va, warm = self._active_basis(lams, V)
        m = active.size
        if m == 0:
            return self.sdcp_x, -inverse * g, stable_state_dot, 0.0
        U = D * Va  # generalized eigenvectors, physical coordinates
        G = third_derivatives(p, self.w, U).reshape(m * m, -1)  # row i·m + j: G_ij
        HU = p.hvps(self.w, U)  # the exact products: zero on a coordinate the loss ignores

        def sandwich(diagonal: float | Tensor) -> Tensor:  # UᵀPU-type m × m matrix of a diagonal
            return (U * diagonal) @ U.T

        A_P = sandwich(opt.preconditioner_velocity(state, stable_state_dot))
        A_H = -(G @ (inverse * g)).reshape(m, m)
        T = torch.empty(m, m, m, m, dtype=G.dtype, device=G.device)
        for k in range(m):
            for ell in range(k, m):
                fed = opt.variance_velocity(state, HU[k] * HU[ell])
                T[:, :, k, ell] = T[:, :, ell, k] = sandwich(opt.preconditioner_velocity(state, fed))
        gram = G @ (inverse * G).T
        C = (np.diag(tau - lams[active]) + dt * (tau * A_P - A_H).cpu().numpy()).astype(np.float64)
        B = (dt * (tau * T.reshape(m * m, m * m) + 0.5 * gram)).cpu().numpy().astype(np.float64)
        C = 0.5 * (C + C.T)
        X = parallel.on_main(lambda: solve_general_sdcp(C, B, warm=warm))
        self.sdcp_x = X
        Xt = torch.as_tensor(X, dtype=G.dtype, device=G.device)
        w_dot = -inverse * (g + 0.5 * (G.T @ Xt.reshape(-1)))
        g_sq = g * g + ((Xt @ HU) * HU).sum(0)  # ∇L⊙∇L + diag(HU X UᵀH)
        state_dot = opt.state_velocity(state, g, g_sq)
        sigma_sq = float((Xt * (U @ U.T)).sum())
        return X, w_dot, state_dot, sigma_sq

    @property
    def position(self) -> Tensor:
        return self.w

    def observe(self, sharpness: bool) -> dict[str, float | np.ndarray]:
        loss = float(self.problem.loss(self.w))
        try:
            here = self._at_current_point()
        except IntegrationError:  # the step that follows fails with it, and the runner records that
            nan = math.nan
            here = {"eigenvalues": np.full(self.max_eigs, nan), "sigma_sq": nan, "excess_loss": nan}
        # A preconditioned optimizer's tracked eigenvalues are those of P⁻¹H, and named so. GD's
        # excess loss is read from σ², as before it had others (checkpoints keep ``current``).
        gd = self.optimizer.stateless
        eigs_name = "hessian_eigs" if gd else "effective_eigs"
        return {
            "train_loss": loss,
            "predicted_loss": loss + (here["sigma_sq"] / self.lr if gd else here["excess_loss"]),
            **self.measure_both(self.w, self.opt_state, sharpness),
            eigs_name: here["eigenvalues"].copy(),
            "sigma_sq": here["sigma_sq"],
        }
