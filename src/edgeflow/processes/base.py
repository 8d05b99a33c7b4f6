"""The interface every process (GD, its reference flows, Edge Flow, …) implements.

Time is measured in GD steps: ``step()`` always advances the process by one unit of time, however
many sub-steps it takes inside. The runner calls ``init`` once, then alternates ``observe`` (at
record steps) and ``step``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from edgeflow.oracle import Problem, SharpnessTracker


class Process(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    #: fields returned by ``observe`` (besides ``step``); ``sharpness`` is NaN when not measured
    fields: ClassVar[tuple[str, ...]]

    def __init__(self, problem: Problem, lr: float) -> None:
        self.problem = problem
        self.lr = lr
        self.tracker: SharpnessTracker | None = None

    @abstractmethod
    def init(self, w0: Tensor, seed: int) -> None:
        """Start at ``w0``; ``seed`` fixes every random choice of this process."""

    @abstractmethod
    def step(self) -> None:
        """Advance one GD step of time."""

    @abstractmethod
    def observe(self, sharpness: bool) -> dict[str, float]:
        """Measurements at the current time; the top Hessian eigenvalue only if ``sharpness``."""

    @property
    @abstractmethod
    def position(self) -> Tensor:
        """The point compared with GD's midpoint (the center, for oscillation models)."""

    def state_dict(self) -> dict:
        """The full state (every attribute set by ``init``/``step``/``observe``; the constructor's
        options are rebuilt from the run's settings), for checkpoints. Override both methods only
        for state that is not tensors, numbers, strings, numpy arrays, generators or processes."""
        from edgeflow.checkpoint import state_of

        return state_of(self)

    def load_state_dict(self, state: dict) -> None:
        from edgeflow.checkpoint import restore

        restore(self, state)

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.position).all())

    def measure_sharpness(self, w: Tensor, seed: int) -> tuple[float, Tensor]:
        """Warm-started top Hessian eigenpair at ``w`` (a measurement, not part of the dynamics)."""
        if self.tracker is None:
            self.tracker = SharpnessTracker(self.problem, seed=seed)
        return self.tracker(w)
