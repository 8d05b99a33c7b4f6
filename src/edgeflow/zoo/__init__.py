"""The problem zoo: named problems with their default sizes, learning rate and step budget.

A new problem is one builder function plus one ``ProblemSpec`` entry in ``PROBLEMS``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.oracle import Problem
from edgeflow.utils import resolve_device, resolve_dtype
from edgeflow.zoo import data, models, toys


@dataclass(frozen=True)
class ProblemSpec:
    name: str
    description: str
    build: Callable[..., Problem]  # build(dtype=, device=, seed=, **params)
    lr: float
    steps: int
    params: dict = field(default_factory=dict)  # size and option defaults of ``build``
    dtype: str = "float64"
    record_every: int = 1
    sharpness_every: int = 1


def _digits_mlp(
    *,
    dtype,
    device,
    seed,
    n=500,
    classes=10,
    width=64,
    depth=2,
    activation="tanh",
    loss="mse",
    chunk_size=None,
) -> Problem:
    X, y = data.digits(n=n, classes=classes, seed=seed)
    model = models.seeded_init(
        lambda: models.MLP(X.shape[1], classes, width=width, depth=depth, activation=activation),
        seed,
    )
    return Problem.from_module(
        model,
        (X, y),
        loss=loss,
        dtype=dtype,
        device=device,
        chunk_size=chunk_size,
        name="digits-mlp",
    )


def _quadratic(*, dtype, device, seed, d=10, lmin=0.1, lmax=10.0) -> Problem:
    A = toys.quadratic_matrix(d, lmin, lmax)
    w0 = torch.ones(A.shape[0], dtype=torch.float64)
    return Problem.from_function(toys.quadratic(A), w0, dtype=dtype, device=device, name="quadratic")


def _toy(fn, name):
    def build(*, dtype, device, seed, x0=3.0, y0=0.2) -> Problem:
        return Problem.from_function(fn, [float(x0), float(y0)], dtype=dtype, device=device, name=name)

    return build


def _quartic(*, dtype, device, seed, x0=0.3) -> Problem:
    return Problem.from_function(toys.quartic, [float(x0)], dtype=dtype, device=device, name="quartic")


PROBLEMS: dict[str, ProblemSpec] = {
    spec.name: spec
    for spec in [
        ProblemSpec(
            "digits-mlp",
            "tanh MLP on 500 scikit-learn digits, MSE (the default problem)",
            _digits_mlp,
            lr=0.4,
            steps=600,
            sharpness_every=5,
        ),
        ProblemSpec(
            "quadratic",
            "½wᵀAw, eigenvalues log-spaced in [lmin, lmax]; closed forms for every flow",
            _quadratic,
            lr=0.15,
            steps=100,
        ),
        ProblemSpec(
            "zhu",
            "¼(x²y² − 1)² (Zhu et al. 2022): GD at EoS drifts to flatter minima",
            _toy(toys.zhu, "zhu"),
            lr=0.15,
            steps=400,
        ),
        ProblemSpec(
            "scalar",
            "½(xy − 1)², scalar factorization: sharpness x² + y² on the minima",
            _toy(toys.scalar, "scalar"),
            lr=0.15,
            steps=400,
            params={"x0": 4.0, "y0": 0.1},
        ),
        ProblemSpec(
            "quartic",
            "¼(x² − 1)² in 1-D: GD at η > 1 oscillates around x = 1 (sharpness 2) with period 2",
            _quartic,
            lr=1.1,
            steps=200,
        ),
    ]
}
DEFAULT_PROBLEM = "digits-mlp"


def problem_spec(name: str) -> ProblemSpec:
    if name not in PROBLEMS:
        raise invalid_choice("problem", name, PROBLEMS)
    return PROBLEMS[name]


def problem_params(name: str) -> dict:
    """Every parameter of a named problem with its default."""
    spec = problem_spec(name)
    sig = inspect.signature(spec.build).parameters
    defaults = {k: p.default for k, p in sig.items() if k not in ("dtype", "device", "seed")}
    defaults.update(spec.params)
    return defaults


def make_problem(
    name: str = DEFAULT_PROBLEM,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    **params,
) -> Problem:
    """Build a named problem; ``params`` override its defaults (see ``edgeflow list``)."""
    spec = problem_spec(name)
    valid = problem_params(name)
    for key in params:
        if key not in valid:
            raise ConfigError(f"unknown parameter {key!r} for problem {name!r}; valid: {', '.join(valid)}")
    dt = resolve_dtype(dtype, resolve_dtype(spec.dtype, torch.float64))
    dev = resolve_device(device)
    return spec.build(dtype=dt, device=dev, seed=seed, **{**spec.params, **params})


__all__ = ["DEFAULT_PROBLEM", "PROBLEMS", "ProblemSpec", "make_problem", "problem_params"]
