"""edgeflow: gradient descent at the edge of stability, side by side with its continuous-time models."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from edgeflow.errors import ConfigError, IntegrationError

__version__ = "0.1.0"

# Imported on first use: torch, h5py and the flows take seconds to import, which every command-line
# call (`edgeflow --help` included) would pay before doing anything.
_LAZY = {
    "StabilityMonitor": "edgeflow.monitor",
    "EdgeStableGD": "edgeflow.optim",
    "OscillationCapped": "edgeflow.optim",
    "CappedRun": "edgeflow.remedies",
    "OscillationCap": "edgeflow.remedies",
    "Counts": "edgeflow.oracle",
    "Problem": "edgeflow.oracle",
    "SharpnessTracker": "edgeflow.oracle",
    "lanczos": "edgeflow.oracle",
    "PROCESSES": "edgeflow.processes",
    "Process": "edgeflow.processes",
    "Result": "edgeflow.results",
    "load": "edgeflow.results",
    "RunInterrupted": "edgeflow.runner",
    "compare": "edgeflow.runner",
    "resume": "edgeflow.runner",
    "SweepResult": "edgeflow.sweep",
    "resume_sweep": "edgeflow.sweep",
    "sweep": "edgeflow.sweep",
    "PROBLEMS": "edgeflow.zoo",
    "make_problem": "edgeflow.zoo",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        # The import system binds every submodule it loads on its package: importing the module
        # edgeflow.sweep would hide the function `edgeflow.sweep`, resolved above.
        if name == "sweep" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:
    from edgeflow.monitor import StabilityMonitor
    from edgeflow.optim import EdgeStableGD, OscillationCapped
    from edgeflow.oracle import Counts, Problem, SharpnessTracker, lanczos
    from edgeflow.processes import PROCESSES, Process
    from edgeflow.remedies import CappedRun, OscillationCap
    from edgeflow.results import Result, load
    from edgeflow.runner import RunInterrupted, compare, resume
    from edgeflow.sweep import SweepResult, resume_sweep, sweep
    from edgeflow.zoo import PROBLEMS, make_problem

__all__ = [
    "PROBLEMS",
    "PROCESSES",
    "CappedRun",
    "ConfigError",
    "Counts",
    "EdgeStableGD",
    "IntegrationError",
    "OscillationCap",
    "OscillationCapped",
    "Problem",
    "Process",
    "Result",
    "RunInterrupted",
    "SharpnessTracker",
    "StabilityMonitor",
    "SweepResult",
    "compare",
    "lanczos",
    "load",
    "make_problem",
    "resume",
    "resume_sweep",
    "sweep",
]
