"""Toy losses with known edge-of-stability behaviour, as functions of a flat vector, and the
builders of their named problems (``quadratic``, ``zhu``, ``scalar``, ``quartic``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from edgeflow.errors import ConfigError
from edgeflow.oracle import Problem
from edgeflow.utils import positive_float, positive_int


def quadratic_matrix(d: int = 10, lmin: float = 0.1, lmax: float = 10.0) -> Tensor:
    """Diagonal ``A`` with eigenvalues log-spaced in ``[lmin, lmax]`` (largest first)."""
    d = positive_int("d", d)
    lmin, lmax = positive_float("lmin", lmin), positive_float("lmax", lmax)
    if lmin > lmax:
        raise ConfigError(f"lmin ({lmin}) must not exceed lmax ({lmax})")
    return torch.diag(torch.logspace(math.log10(lmax), math.log10(lmin), d, dtype=torch.float64))


def quadratic(A: Tensor):
    """``½ wᵀAw``: GD and every flow have closed forms; ηλ > 2 makes GD diverge along λ."""

    def loss(w: Tensor) -> Tensor:
        return 0.5 * w @ (A.to(w) @ w)

    return loss


def zhu(w: Tensor) -> Tensor:
    """``¼(x²y² − 1)²`` (Zhu et al. 2022): sharpness 2(x² + y²) on the minimum manifold, so GD at
    EoS drifts along the manifold toward balanced, flatter minima."""
    x, y = w[0], w[1]
    return 0.25 * (x**2 * y**2 - 1) ** 2


def scalar(w: Tensor) -> Tensor:
    """``½(xy − 1)²``, the scalar factorization: sharpness x² + y² on the minimum manifold."""
    x, y = w[0], w[1]
    return 0.5 * (x * y - 1) ** 2


def quartic(w: Tensor) -> Tensor:
    """``¼(x² − 1)²`` in one dimension: sharpness 3x² − 1, so 2 at the minima x = ±1. For
    1 < η < √6 − 1, GD started inside (−1, 1) settles into a period-2 orbit around x = 1 whose
    midpoint sharpness sits just below 2/η — EoS in its simplest form."""
    return 0.25 * ((w**2 - 1) ** 2).sum()


# ------------------------------------------------------------------------------------ named problems
# The seed is part of every builder's signature; these problems have nothing random to seed.


def quadratic_problem(
    *, seed: int, dtype, device, d: int = 10, lmin: float = 0.1, lmax: float = 10.0
) -> Problem:
    A = quadratic_matrix(d, lmin, lmax)
    w0 = torch.ones(A.shape[0], dtype=torch.float64)
    return Problem.from_function(quadratic(A), w0, dtype=dtype, device=device, name="quadratic")


def _planar_problem(loss, name: str):
    """The builder of a problem in the plane, started at (x0, y0)."""

    def build(*, seed: int, dtype, device, x0: float = 3.0, y0: float = 0.2) -> Problem:
        return Problem.from_function(loss, [float(x0), float(y0)], dtype=dtype, device=device, name=name)

    return build


zhu_problem = _planar_problem(zhu, "zhu")
scalar_problem = _planar_problem(scalar, "scalar")


def quartic_problem(*, seed: int, dtype, device, x0: float = 0.3) -> Problem:
    return Problem.from_function(quartic, [float(x0)], dtype=dtype, device=device, name="quartic")
