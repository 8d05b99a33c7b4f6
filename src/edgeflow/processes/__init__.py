"""Processes: GD and the continuous-time models compared with it, one module each.

A new process is one module with a ``Process`` subclass plus one entry in ``PROCESSES``; then
``python -m edgeflow.catalog`` lets the command line know it without importing torch.
"""

from __future__ import annotations

import inspect

from edgeflow.errors import ConfigError, invalid_choice, unknown_key
from edgeflow.optimizers import Optimizer, State
from edgeflow.oracle import Problem
from edgeflow.processes.base import Process
from edgeflow.processes.capped import Capped
from edgeflow.processes.central import CentralFlow
from edgeflow.processes.edge import EdgeFlow
from edgeflow.processes.gd import GD
from edgeflow.processes.gradient import GradientFlow
from edgeflow.processes.midpoint import Midpoint
from edgeflow.processes.mitigated import Mitigated
from edgeflow.processes.modified import ModifiedFlow
from edgeflow.utils import check_type, declared_type

PROCESSES: dict[str, type[Process]] = {
    cls.name: cls
    for cls in (GD, Midpoint, GradientFlow, ModifiedFlow, EdgeFlow, CentralFlow, Mitigated, Capped)
}


def process_class(name: str) -> type[Process]:
    if name not in PROCESSES:
        raise invalid_choice("flow", name, PROCESSES)
    return PROCESSES[name]


def option_names(name: str) -> list[str]:
    params = inspect.signature(process_class(name).__init__).parameters
    return [p for p in params if p not in ("self", "problem", "lr")]


def make_process(
    name: str,
    problem: Problem,
    lr: float,
    options: dict | None = None,
    optimizer: Optimizer | None = None,
    start_state: State | None = None,
) -> Process:
    """The flow ``name`` with its ``options``, modelling ``optimizer`` (default: GD at ``lr``) from
    the optimizer state ``start_state`` (default: the optimizer's initial state)."""
    cls = process_class(name)
    if options is not None and not isinstance(options, dict):
        raise ConfigError(
            f"options for flow {name!r} must be a dict of option names to values, "
            f"got {type(options).__name__}: {options!r}"
        )
    options = dict(options or {})
    signature = inspect.signature(cls.__init__).parameters
    valid = option_names(name)
    for key in options:
        if key not in valid:
            raise unknown_key("option", key, f"flow {name!r}", valid)
    try:
        for key, value in options.items():
            declared = declared_type(signature[key].annotation, signature[key].default)
            # A str option is a choice among names, which its flow checks and lists.
            if declared != "str":
                check_type(f"option {key!r}", value, declared, signature[key].default)
        proc = cls(problem, lr, **options)
    except ConfigError as err:
        raise ConfigError(f"flow {name!r}: {err}") from None
    if optimizer is not None or start_state is not None:
        proc.use_optimizer(optimizer if optimizer is not None else proc.optimizer, start_state)
    return proc


__all__ = ["PROCESSES", "Process", "make_process", "option_names", "process_class"]
