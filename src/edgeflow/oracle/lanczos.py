"""Extreme Hessian eigenpairs by Lanczos on Hessian-vector products.

Lanczos with full reorthogonalization: the Krylov spaces we need are small (tens of vectors), so the
O(m·d) cost of reorthogonalizing is negligible next to one HVP, and it removes the ghost eigenvalues
of plain Lanczos. The tridiagonal eigenproblem is solved in float64 with torch, which keeps the whole
routine on the caller's device and out of scipy's BLAS thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from edgeflow.errors import invalid_choice

WHICH = ("LA", "LM")  # largest algebraic (sharpness), largest magnitude (stiffness)


@dataclass
class Eigenpairs:
    values: Tensor  # (k,) ordered by `which`, largest first
    vectors: Tensor  # (k, d) unit rows
    iterations: int  # matrix-vector products used
    residuals: Tensor  # (k,) ‖H v − θ v‖ estimates


def default_tol(dtype: torch.dtype) -> float:
    """Relative residual target. A Ritz value's error is at most residual²/gap, so a residual of
    1e-6 (float64) gives eigenvalues to ~1e-12 relative at unit gap; float32 HVPs carry ~1e-6
    relative rounding, hence 1e-3 there."""
    return 1e-6 if dtype == torch.float64 else 1e-3


def tracking_tol(dtype: torch.dtype) -> float:
    """Residual target for eigenvalues tracked along a trajectory: 1e-4 keeps eigenvalues to ~1e-7
    relative (error ≈ residual²/gap) for about a third fewer HVPs than 1e-6 (benchmarks/oracle.py)."""
    return max(1e-4, default_tol(dtype))


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    v0: Tensor,
    k: int = 1,
    *,
    which: str = "LA",
    tol: float | None = None,
    max_iter: int = 100,
    min_iter: int = 1,
    generator: torch.Generator | None = None,
) -> Eigenpairs:
    """Top-``k`` eigenpairs of the symmetric operator ``matvec`` starting from ``v0``.

    Stops when every wanted Ritz pair has residual ``≤ tol · max|θ|`` (residual bound
    ``|β_m s_{m,i}|``), after at least ``min_iter`` products. A warm start (``v0`` close to the
    previous eigenvectors) usually converges in a handful of products.
    """
    if which not in WHICH:
        raise invalid_choice("Lanczos ordering", which, WHICH)
    d = v0.numel()
    max_iter = max(1, min(max_iter, d))
    k = min(k, d)
    tol = default_tol(v0.dtype) if tol is None else tol
    basis = torch.zeros(max_iter + 1, d, dtype=v0.dtype, device=v0.device)
    alpha = torch.zeros(max_iter, dtype=torch.float64)
    beta = torch.zeros(max_iter, dtype=torch.float64)
    q = v0 / v0.norm()
    basis[0] = q
    m = 0
    theta = s = None
    for j in range(max_iter):
        z = matvec(basis[j])
        if not bool(torch.isfinite(z).all()):
            raise FloatingPointError("a Hessian-vector product is not finite (the iterate has overflowed)")
        alpha[j] = torch.dot(basis[j], z).item()
        # Two passes of classical Gram-Schmidt against the whole basis ("twice is enough").
        for _ in range(2):
            z = z - basis[: j + 1].T @ (basis[: j + 1] @ z)
        b = z.norm().item()
        beta[j] = b
        m = j + 1
        if m >= max(k, min_iter) or b == 0.0:
            theta, s = _ritz(alpha[:m], beta[: m - 1], which)
            resid = (b * s[-1, :k]).abs()
            scale = theta.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
            if m >= k and bool((resid <= tol * scale).all()):
                break
        if m == max_iter:
            break
        if b <= torch.finfo(v0.dtype).eps * max(1.0, float(alpha[:m].abs().max())):
            # Invariant subspace found: continue with a fresh direction orthogonal to it.
            r = torch.randn(d, dtype=v0.dtype, device=v0.device, generator=generator)
            for _ in range(2):
                r = r - basis[: j + 1].T @ (basis[: j + 1] @ r)
            basis[j + 1] = r / r.norm()
            beta[j] = 0.0
        else:
            basis[j + 1] = z / b
    theta, s = _ritz(alpha[:m], beta[: m - 1], which)
    kk = min(k, m)
    vecs = s[:, :kk].to(v0.dtype).to(v0.device).T @ basis[:m]
    vecs = vecs / vecs.norm(dim=1, keepdim=True)
    resid = (beta[m - 1] * s[-1, :kk]).abs()
    return Eigenpairs(theta[:kk].to(v0.dtype), vecs, m, resid)


def _ritz(alpha: Tensor, off: Tensor, which: str) -> tuple[Tensor, Tensor]:
    t = torch.diag(alpha) + torch.diag(off, 1) + torch.diag(off, -1)
    theta, s = torch.linalg.eigh(t)
    order = torch.argsort(theta.abs() if which == "LM" else theta, descending=True)
    return theta[order], s[:, order]
