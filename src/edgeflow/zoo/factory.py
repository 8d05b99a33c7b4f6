"""Users' own problems: ``package.module:function`` names a factory called as
``function(dtype=, device=, seed=, **params)`` that returns a ``Problem``."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

import torch

from edgeflow.errors import ConfigError
from edgeflow.oracle import Problem
from edgeflow.utils import RUN_KEYWORDS, resolve_device, resolve_dtype
from edgeflow.zoo.params import check_params


def build_from_factory(path: str, *, dtype, device, seed: int, **params) -> Problem:
    """Import the factory ``path`` (its module may also lie in the current directory), check
    ``params`` against its signature, call it and check that it returned a ``Problem``."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"problem {path!r} must be a registry name or 'package.module:function'")
    # import_module reads a leading dot as a relative import and fails with a TypeError
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigError(
            f"problem {path!r}: {module_name!r} is not an absolute module name like 'package.module'"
        )
    with _current_directory_importable():
        module = _import(module_name, path)
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


@contextlib.contextmanager
def _current_directory_importable() -> Iterator[None]:
    """The current directory on ``sys.path`` while the factory is imported and called:
    ``python -m edgeflow`` puts it there, the ``edgeflow`` console script does not, and
    ``--problem mymod:make_problem`` should find ``./mymod.py`` with either. Taken off afterwards,
    so that a Python session calling ``make_problem`` keeps its own import path."""
    cwd = os.getcwd()
    add = "" not in sys.path and cwd not in sys.path
    if add:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if add and cwd in sys.path:
            sys.path.remove(cwd)


def _import(module_name: str, path: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"cannot import {module_name!r} for problem {path!r} (looked in the current directory "
            f"and on sys.path): {err}"
        ) from None


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
    check_params(path, params, {k: None if p.default is p.empty else p.default for k, p in own.items()})
