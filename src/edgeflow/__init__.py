"""edgeflow: gradient descent at the edge of stability, side by side with its continuous-time models."""

from edgeflow.errors import ConfigError, IntegrationError
from edgeflow.monitor import StabilityMonitor
from edgeflow.optim import EdgeStableGD
from edgeflow.oracle import Counts, Problem, SharpnessTracker, lanczos
from edgeflow.processes import PROCESSES, Process
from edgeflow.results import Result, load
from edgeflow.runner import RunInterrupted, compare, resume
from edgeflow.sweep import SweepResult, sweep
from edgeflow.zoo import PROBLEMS, make_problem

__version__ = "0.1.0"

__all__ = [
    "PROBLEMS",
    "PROCESSES",
    "ConfigError",
    "Counts",
    "EdgeStableGD",
    "IntegrationError",
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
    "sweep",
]
