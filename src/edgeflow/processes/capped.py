"""The discrete optimizer with its edge-of-stability oscillation capped: a remedy for any optimizer
that costs no oracle call beyond the optimizer's own gradient (and one per retried step).

Each step is the optimizer's own, changed by ``edgeflow.remedies.OscillationCap``: along the
direction the iterates oscillate in (read from their third difference), the step is shortened where
it would carry the oscillation's share of the loss past ``max_share``; across it, the step is scaled
by the curvature the last steps crossed against the optimizer's threshold. With ``rise`` set, a
step whose loss exceeds (1 + rise)× the lowest so far is retried at half the length
(``edgeflow.remedies.CappedRun``). ``benchmarks/budget.py`` measures it against the optimizer,
warm-up and clipping, each at its best η for the same budget of gradient evaluations.
"""

from __future__ import annotations

import math

from torch import Tensor

from edgeflow.checkpoint import restore, state_of
from edgeflow.processes.base import Process
from edgeflow.remedies import CappedRun
from edgeflow.utils import nonnegative_float, positive_float


class Capped(Process):
    name = "capped"
    description = "the discrete optimizer with its EoS oscillation capped and its loss guarded (a remedy)"
    fields = ("train_loss", "sharpness", "effective_sharpness", "capped", "tries")

    def __init__(
        self,
        problem,
        lr: float,
        max_share: float = 0.05,
        margin: float = 0.1,
        rise: float | None = 0.1,
        regrow: float = 1.5,
    ) -> None:
        super().__init__(problem, lr)
        self.max_share = positive_float("max_share", max_share)
        self.margin = nonnegative_float("margin", margin)
        self.rise = None if rise is None else positive_float("rise", rise)
        self.regrow = positive_float("regrow", regrow)

    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.run = self._run(w0)

    def _run(self, w0: Tensor, evaluated: tuple[float, Tensor] | None = None) -> CappedRun:
        return CappedRun(
            self.problem,
            self.optimizer,
            w0,
            state=self.start_state,
            rise=self.rise,
            regrow=self.regrow,
            evaluated=evaluated,
            max_share=self.max_share,
            margin=self.margin,
        )

    def step(self) -> None:
        self.run.step()

    @property
    def position(self) -> Tensor:
        return self.run.w

    def observe(self, sharpness: bool) -> dict[str, float]:
        seen = self.optimizer.update(self.run.state, self.run.g)  # the state the next step takes
        return {
            "train_loss": self.run.loss,
            **self.measure_both(self.run.w, seen, sharpness),
            "capped": float(self.run.cap.capped),
            "tries": float(self.run.tries),
        }

    def state_dict(self) -> dict:
        return {**state_of(self, skip=("run",)), "run": self.run.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        run_state = state.pop("run")
        restore(self, state)
        self.run = self._run(run_state["w"], evaluated=(run_state["loss"], run_state["g"]))
        self.run.load_state_dict(run_state)

    def is_finite(self) -> bool:
        return super().is_finite() and math.isfinite(self.run.loss)
