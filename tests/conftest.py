"""Shared fixtures: tiny float64 problems whose derivatives and spectra can be computed densely."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.func import jacrev

import edgeflow as ef
from edgeflow.zoo import models, toys

# The problems here are tiny: intra-op threads buy nothing, and on a loaded 2-core machine two
# spinning OpenMP threads per process made a 99-parameter HVP ~100× slower (0.27 s instead of 3 ms).
torch.set_num_threads(1)

N_EXAMPLES = 20
IN_DIM = 5
CLASSES = 3


@pytest.fixture(scope="session")
def tiny_data() -> tuple[Tensor, Tensor]:
    """20 random float64 inputs in R^5 with integer labels in {0, 1, 2} (every class present)."""
    gen = torch.Generator().manual_seed(1234)
    X = torch.randn(N_EXAMPLES, IN_DIM, generator=gen, dtype=torch.float64)
    y = torch.arange(N_EXAMPLES) % CLASSES
    y = y[torch.randperm(N_EXAMPLES, generator=gen)]
    return X, y


def build_mlp(activation: str = "tanh", width: int = 6, depth: int = 2, seed: int = 0) -> torch.nn.Module:
    return models.seeded_init(
        lambda: models.MLP(IN_DIM, CLASSES, width=width, depth=depth, activation=activation), seed
    )


@pytest.fixture
def make_mlp(tiny_data) -> Callable[..., ef.Problem]:
    """``make_mlp(activation="tanh", loss="mse", chunk_size=None, width=6, depth=2)`` → a float64
    ``Problem`` on ``tiny_data`` (d = 99 with the defaults)."""

    def make(
        activation: str = "tanh",
        loss: str = "mse",
        chunk_size: int | None = None,
        width: int = 6,
        depth: int = 2,
    ) -> ef.Problem:
        model = build_mlp(activation, width, depth)
        return ef.Problem.from_module(model, tiny_data, loss=loss, dtype="float64", chunk_size=chunk_size)

    return make


@pytest.fixture
def mlp_problem(make_mlp) -> ef.Problem:
    return make_mlp()


@pytest.fixture
def small_mlp_problem(make_mlp) -> ef.Problem:
    """A smaller MLP (d = 39) for tests that need many dense Hessians."""
    return make_mlp(width=4, depth=1)


@dataclass
class Quadratic:
    A: Tensor  # symmetric positive definite, d × d
    w0: Tensor
    problem: ef.Problem

    @property
    def A_np(self) -> np.ndarray:
        return self.A.numpy()

    @property
    def w0_np(self) -> np.ndarray:
        return self.w0.numpy()


def make_quadratic(d: int = 6, lmin: float = 0.1, lmax: float = 10.0, seed: int = 0, scale: float = 1.0):
    """½wᵀAw with A = Q·diag(eigenvalues log-spaced in [lmin, lmax])·Qᵀ for a random rotation Q
    (so the flows are tested on a non-diagonal matrix), and a random w0 of norm ≈ ``scale``·√d."""
    gen = torch.Generator().manual_seed(seed)
    D = toys.quadratic_matrix(d, lmin, lmax)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    A = Q @ D @ Q.T
    A = 0.5 * (A + A.T)
    w0 = scale * torch.randn(d, generator=gen, dtype=torch.float64)
    return Quadratic(A, w0, ef.Problem.from_function(toys.quadratic(A), w0, name="rotated-quadratic"))


@pytest.fixture
def quadratic() -> Quadratic:
    return make_quadratic()


@pytest.fixture
def importable_module(tmp_path, monkeypatch):
    """``importable_module(name, source)`` writes a module that ``import name`` finds during the test;
    returns the name."""
    names = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def random_point(problem: ef.Problem, seed: int = 0, spread: float = 0.3) -> Tensor:
    """A point near ``w0`` (relative spread ``spread``), away from any special structure of the init."""
    noise = torch.randn(problem.dim, generator=torch.Generator().manual_seed(seed), dtype=problem.dtype)
    return problem.w0 + spread * noise / math.sqrt(problem.dim)


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


def assert_hvp_matches_finite_differences(problem: ef.Problem, tol: float = 1e-6) -> None:
    """HVPs at a random point against central differences of the gradient (h = 1e-5, float64)."""
    w = random_point(problem)
    gen = torch.Generator().manual_seed(7)
    for _ in range(2):
        v = torch.randn(problem.dim, generator=gen, dtype=torch.float64)
        h = 1e-5
        fd = (problem.grad(w + h * v) - problem.grad(w - h * v)) / (2 * h)
        hv = problem.hvp(w, v)
        assert rel(hv, fd) < tol
        assert rel(hv, (hv @ v / (v @ v)) * v) > 1e-2  # not trivially proportional to v


def assert_third_matches_finite_differences(problem: ef.Problem, tol: float = 1e-6) -> None:
    """``Problem.third(w, u, v)`` along a direction e against central differences of uᵀH(w)v."""
    w = random_point(problem, seed=1)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    u, v, e = (torch.randn(problem.dim, generator=g, dtype=torch.float64) for g in gens)
    # A unit direction keeps the step at ε: the truncation error is O(ε²‖e‖²), and ‖e‖² = d for a raw
    # Gaussian e (with dim-4 ViT blocks that alone made ε = 1e-5 miss by 4e-5).
    e = e / e.norm()
    third = problem.third(w, u, v)
    eps = 1e-5
    fd = (u @ problem.hvp(w + eps * e, v) - u @ problem.hvp(w - eps * e, v)) / (2 * eps)
    assert float(third @ e) == pytest.approx(float(fd), rel=tol)


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``edgeflow ARGV`` in this process: exit code, stdout, stderr."""
    from edgeflow.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse exits for its own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def full_loss(problem: ef.Problem) -> Callable[[Tensor], Tensor]:
    """The full-batch loss as one differentiable function (sum of the problem's terms)."""

    def fn(w: Tensor) -> Tensor:
        return sum(t(w) for t in problem.terms)

    return fn


def dense_hessian(problem: ef.Problem, w: Tensor) -> Tensor:
    """Dense Hessian as the Jacobian of the gradient (``jacrev`` of ``jacrev``: vmapped, no loop over
    ``Problem.hvp``). Forward mode (``torch.func.hessian``) is avoided: its one-time set-up took ~30 s."""
    return jacrev(jacrev(full_loss(problem)))(w)


def top_eigenvalue(problem: ef.Problem, w: Tensor) -> float:
    return float(torch.linalg.eigvalsh(dense_hessian(problem, w))[-1])
