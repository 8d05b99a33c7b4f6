"""The interface every process (GD, its reference flows, Edge Flow, …) implements.

Time is measured in GD steps: ``step()`` always advances the process by one unit of time, however
many sub-steps it takes inside. The runner calls ``init`` once, then alternates ``observe`` (at
record steps) and ``step``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from edgeflow.errors import ConfigError
from edgeflow.optimizers import GD_NAME, Optimizer, State, make_optimizer
from edgeflow.oracle import Problem, SharpnessTracker


class Process(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    #: fields returned by ``observe`` (besides ``step``); ``sharpness`` is NaN when not measured
    fields: ClassVar[tuple[str, ...]]
    #: the optimizers this process models (None: every one of ``edgeflow.optimizers``)
    optimizers: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, problem: Problem, lr: float) -> None:
        self.problem = problem
        self.lr = lr
        #: the optimizer the process models; set by ``use_optimizer`` (not checkpointed: rebuilt
        #: from the run's settings, like the constructor's options)
        self.optimizer: Optimizer = make_optimizer(GD_NAME, lr)
        #: the optimizer state to start from (a warm start), or None: the optimizer's initial state
        self.start_state: State | None = None
        self.tracker: SharpnessTracker | None = None
        self.effective_tracker: SharpnessTracker | None = None

    @classmethod
    def modelled(cls) -> str:
        """The optimizers this process models, in words."""
        if cls.optimizers is None:
            return "every optimizer"
        return f"optimizer{'s' if len(cls.optimizers) > 1 else ''} {', '.join(cls.optimizers)}"

    def use_optimizer(self, optimizer: Optimizer, start_state: State | None = None) -> None:
        """Model ``optimizer`` (its learning rate is the process's), from ``start_state``."""
        if self.optimizers is not None and optimizer.name not in self.optimizers:
            raise ConfigError(
                f"flow {self.name!r} is defined for {self.modelled()} only, not {optimizer.name!r}; "
                f"leave it out of the flows of this run"
            )
        if optimizer.lr != self.lr:
            raise ConfigError(f"the optimizer's learning rate {optimizer.lr} is not the flow's {self.lr}")
        self.optimizer = optimizer
        self.start_state = start_state

    def initial_state(self, w0: Tensor, g0: Tensor | None = None) -> State:
        """The optimizer state at the start, having seen the gradient ``g0`` at w0 (if given)."""
        state = self.start_state if self.start_state is not None else self.optimizer.init(w0)
        return state if g0 is None else self.optimizer.update(state, g0)

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
        if self.optimizer.stateless:  # checkpoints from before the optimizer layer: GD's state is empty
            for name in ("opt_state", "state_next"):
                if name not in state:
                    setattr(self, name, {})

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.position).all())

    def measure_sharpness(self, w: Tensor, seed: int) -> tuple[float, Tensor]:
        """Warm-started top Hessian eigenpair at ``w`` (a measurement, not part of the dynamics)."""
        if self.tracker is None:
            self.tracker = SharpnessTracker(self.problem, seed=seed)
        return self.tracker(w)

    def measure_both(self, w: Tensor, state: State, sharpness: bool) -> dict[str, float]:
        """``sharpness`` λ₁(H) and ``effective_sharpness`` λ₁(P⁻¹H) at ``w`` with the preconditioner
        of ``state`` (NaN unless ``sharpness``). A multiple of the identity scales the sharpness; a
        diagonal P needs its own warm-started solve, on P^{-1/2}HP^{-1/2}."""
        if not sharpness:
            return {"sharpness": math.nan, "effective_sharpness": math.nan}
        s = self.measure_sharpness(w, self.seed)[0]
        inverse = self.optimizer.inverse_preconditioner(state)
        if isinstance(inverse, Tensor) and inverse.ndim > 0:
            if self.effective_tracker is None:
                self.effective_tracker = SharpnessTracker(self.problem, seed=self.seed + 1)
            effective = self.effective_tracker(w, scale=inverse.sqrt())[0]
        else:
            effective = float(inverse) * s
        return {"sharpness": s, "effective_sharpness": effective}
