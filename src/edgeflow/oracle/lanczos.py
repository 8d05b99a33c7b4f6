"""Extreme Hessian eigenpairs by Lanczos on Hessian-vector products.

``lanczos``: single-vector Lanczos with full reorthogonalization. The Krylov spaces we need are small
(tens of vectors), so the O(m·d) cost of reorthogonalizing is negligible next to one HVP, and it
removes the ghost eigenvalues of plain Lanczos. The tridiagonal eigenproblem is solved in float64
with torch, which keeps the whole routine on the caller's device and out of scipy's BLAS thread pool.

A single start vector sees only its own component in each eigenspace, so single-vector Lanczos
finds one vector of a repeated eigenvalue and converges slowly within a cluster of near-equal ones.
``block_eigs`` is the block method for tracking several top eigenvalues along a trajectory: it
warm-starts from a whole block of vectors and converges at a rate set by the gap below the block,
not by the gaps inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from edgeflow.errors import invalid_choice

WHICH = ("LA", "LM")  # largest algebraic (sharpness), largest magnitude (stiffness)
#: the default cap on products; ``lanczos`` allocates a basis of this many vectors plus one up front
MAX_ITER = 100


@dataclass
class Eigenpairs:
    values: Tensor  # (k,) ordered by `which`, largest first; block_eigs: (b,), the guards' last
    vectors: Tensor  # (k, d) unit rows; block_eigs: (b, d)
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
    max_iter: int = MAX_ITER,
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


def block_eigs(
    matmat: Callable[[Tensor], Tensor],
    start: Tensor,
    k: int,
    *,
    tol: float | Sequence[float] | None = None,
    max_matvecs: int | None = None,
    max_basis: int | None = None,
    generator: torch.Generator | None = None,
) -> Eigenpairs:
    """Top ``k`` (largest algebraic) eigenpairs of a symmetric operator by a block Krylov method,
    warm-started from the rows of ``start`` (b × d, b ≥ k; the extra rows are guard vectors).

    ``matmat`` maps a block of rows (m × d) to their images (m × d), so the caller can batch the
    products. Each iteration does Rayleigh–Ritz on the whole basis (the projected matrix is formed
    from stored images, not from a three-term recurrence, so it stays exact in finite precision) and
    extends the basis by the residuals of the top-b Ritz pairs that have not converged (block
    Davidson without a preconditioner; the basis contains LOBPCG's search space). When the basis
    would exceed ``max_basis`` rows it restarts from the top-b Ritz vectors, whose images are known.

    Stops when the top ``k`` explicit residuals ``‖H y − θ y‖`` are ``≤ tol · max|θ|``, or after
    ``max_matvecs`` products. ``tol`` may also be one value per wanted pair, so that the top pairs
    can be asked for more accuracy than the rest; the guards' residuals are compared with the last
    one. Returns all b Ritz pairs, largest first: the first ``k`` are the
    converged ones, the rest the guards' (less accurate) estimates; ``iterations`` counts products.
    """
    b, d = start.shape
    if not 1 <= k <= b:
        raise ValueError(f"block_eigs needs 1 ≤ k ≤ block size, got k={k} for a block of {b}")
    tol = default_tol(start.dtype) if tol is None else tol
    tols = torch.as_tensor(tol, dtype=start.dtype, device=start.device).reshape(-1)
    if tols.numel() not in (1, k):
        raise ValueError(f"block_eigs needs one tolerance or one per wanted pair ({k}), got {tols.numel()}")
    b = min(b, d)
    k = min(k, b)
    tols = torch.cat([tols.expand(k) if tols.numel() == 1 else tols[:k], tols[-1:].expand(b - k)])
    max_matvecs = 60 * b if max_matvecs is None else max_matvecs
    max_basis = min(d, max(6 * b, 2 * b + 1)) if max_basis is None else min(d, max(max_basis, 2 * b))

    if generator is None:
        generator = torch.Generator(device=start.device).manual_seed(0)
    basis = _extend(start.new_zeros(0, d), start[:b], b, generator)
    images = _apply(matmat, basis)
    matvecs = b
    while True:
        projected = basis @ images.T
        theta, S = torch.linalg.eigh(0.5 * (projected + projected.T))
        top = torch.argsort(theta, descending=True)[:b]
        theta, S = theta[top], S[:, top]
        ritz, ritz_images = S.T @ basis, S.T @ images
        residuals = ritz_images - theta[:, None] * ritz
        norms = residuals.norm(dim=1)
        scale = float(theta.abs().max().clamp_min(torch.finfo(theta.dtype).tiny))
        pending = norms > tols * scale
        if not bool(pending[:k].any()) or matvecs >= max_matvecs:
            break
        if basis.shape[0] + int(pending.sum()) > max_basis:
            basis, images = ritz, ritz_images  # thick restart: no products needed
        new = _extend(basis, residuals[pending], int(pending.sum()), None)
        if new.shape[0] == 0:  # the basis spans an invariant subspace
            break
        basis = torch.cat([basis, new])
        images = torch.cat([images, _apply(matmat, new)])
        matvecs += new.shape[0]
    ritz = ritz / ritz.norm(dim=1, keepdim=True)
    return Eigenpairs(theta, ritz, matvecs, norms)


def _apply(matmat: Callable[[Tensor], Tensor], block: Tensor) -> Tensor:
    images = matmat(block)
    if not bool(torch.isfinite(images).all()):
        raise FloatingPointError("a Hessian-vector product is not finite (the iterate has overflowed)")
    return images


def _extend(basis: Tensor, rows: Tensor, want: int, generator: torch.Generator | None) -> Tensor:
    """Up to ``want`` orthonormal rows spanning ``rows`` outside the (orthonormal) ``basis``.

    Directions that are (numerically) inside the basis or repeat each other are dropped; with a
    ``generator``, random directions fill the block back up to ``want`` rows (a start block must
    have full rank), without one fewer rows come back.
    """
    d = rows.shape[1]
    rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(torch.finfo(rows.dtype).tiny)
    for _ in range(2):  # "twice is enough" for classical Gram-Schmidt
        rows = rows - (rows @ basis.T) @ basis
    _, sigma, vh = torch.linalg.svd(rows, full_matrices=False)
    # A unit row that keeps less than this of its norm outside the basis is noise after projection.
    keep = sigma > 1e3 * torch.finfo(rows.dtype).eps
    out = vh[keep]
    out = out - (out @ basis.T) @ basis
    out = out / out.norm(dim=1, keepdim=True)
    missing = min(want, d - basis.shape[0]) - out.shape[0]
    if generator is not None and missing > 0:
        noise = torch.randn(missing, d, dtype=rows.dtype, device=rows.device, generator=generator)
        out = torch.cat([out, _extend(torch.cat([basis, out]), noise, missing, None)])
    return out
