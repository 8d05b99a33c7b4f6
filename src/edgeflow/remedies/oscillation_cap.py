"""The oscillation cap: a remedy for edge-of-stability spikes that costs no oracle call.

At the edge of stability the iterates oscillate along the top eigenvector u of P⁻¹H (P the
optimizer's preconditioner; P⁻¹ = η for GD), and that oscillation is what holds the sharpness at
the threshold: its r²∇S/2 pull on the center (self-stabilization). A loss spike is the same
oscillation grown to a catapult: it outgrows the loss before its pull brings the sharpness back. The
cap keeps the first and removes the second. It reads everything from what the training loop already
has, the last four iterates and the gradients at the last two:

* **the oscillation's direction** û: the third difference of the iterates,
  (w_t − 3w_{t−1} + 3w_{t−2} − w_{t−3})/8, is s_t·r·u for a period-2 oscillation of amplitude r
  around a center moving on a quadratic path; it is trusted as a direction where two consecutive
  ones point opposite ways (cosine below −``alternation``), which a smooth path's curvature does not;
* **its curvature** κ = ûᵀ(g_t − g_{t−1}) / ûᵀ(w_t − w_{t−1}), the secant across the oscillation;
* **the iterate's offset from the center** along û, ûᵀg_t/κ: the gradient along û is the
  curvature times the offset, up to the center's own gradient along û, which the oscillation
  dwarfs where it matters;
* **the cap**: where the optimizer's step would carry that offset past r_max, the step along û is
  shortened to land at ±r_max on the far side (the oscillation keeps its period two, so its pull
  stays), r_max = √(2·``max_share``·L/κ): the oscillation's share ½κr² of the loss at most
  ``max_share``;
* **across û**, the step is scaled so that no direction it crosses is unstable: the curvature the
  last step across û actually crossed, a = dᵀ(g_t − g_{t−1}) / dᵀPd in units of P⁻¹H, is kept
  for ``memory`` steps, and the step is scaled by min(1, (1 − margin/2)·threshold/max a). Where a
  second direction sharpens past the threshold while the first is capped, its oscillation would
  otherwise grow unseen, mixed into û's estimate, and spike.

The optimizer's own step is computed as usual (its state too); the cap only changes the step that
is taken, by ``OscillationCap.adjust``. Measured against GD, warm-up and clipping at a fixed budget
of gradient evaluations in ``benchmarks/budget.py`` (docs/budget.md). The cap along û is what does
the work there: without it (``--cap-option max_share=1e9``: the scale across and ``CappedRun``'s
loss guard alone), GD's best spike-free loss over η was 2.0×, 1.9×, 1.4× and 7.8× the capped one's
on digits-mlp, mnist5k-cnn, mnist5k-vit and sort-transformer.
"""

from __future__ import annotations

import math
from collections import deque

from torch import Tensor

from edgeflow.errors import ConfigError
from edgeflow.optimizers import Optimizer, State
from edgeflow.oracle import Problem
from edgeflow.utils import nonnegative_float, positive_float, positive_int

#: how many steps a crossed curvature bounds the step across û: where two eigenvectors trade the top
#: place the curvature of one step's crossing is not the next one's (the ``mitigated`` flow's cap
#: keeps its curvatures as long)
MEMORY = 10
#: retries of a rejected step (each at half the last length) before it is taken as it is
MAX_RETRIES = 6


class OscillationCap:
    """Caps the edge-of-stability oscillation of ``optimizer``'s iterates (see the module docstring).

    ``step = cap.adjust(w, g, loss, step, state)`` once per training step, with the iterate ``w``,
    the gradient ``g`` and loss there, the optimizer's step from ``w`` (its new iterate minus ``w``)
    and the state it took that step with; returns the step to take instead. Call ``reset()`` where
    the trajectory is not continued (a new start).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_share: float = 0.05,
        margin: float = 0.1,
        alternation: float = 0.9,
        memory: int = MEMORY,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(f"optimizer must be an edgeflow Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.max_share = positive_float("max_share", max_share)
        self.margin = nonnegative_float("margin", margin)
        if not 0.0 < alternation < 1.0:
            raise ConfigError(f"alternation must be a number in (0, 1), got {alternation!r}")
        self.alternation = alternation
        self.memory = positive_int("memory", memory)
        self.reset()

    def reset(self) -> None:
        self.iterates: deque[Tensor] = deque(maxlen=4)
        self.last_difference: Tensor | None = None
        self.last_gradient: Tensor | None = None
        #: the last step across û and P at the iterate it was taken from
        self.last_across: tuple[Tensor, float | Tensor] | None = None
        self.crossed: deque[float] = deque(maxlen=self.memory)
        #: what the last ``adjust`` did: the scale across û, κ, r_max (NaN without a direction), capped
        self.scale, self.curvature, self.radius, self.capped = 1.0, math.nan, math.nan, False
        self._last_taken: tuple[Tensor, Tensor] | None = None

    def state_dict(self) -> dict:
        """What ``adjust`` remembers, as tensors, numbers and lists (for checkpoints)."""
        return {
            "iterates": list(self.iterates),
            "last_difference": self.last_difference,
            "last_gradient": self.last_gradient,
            "last_across": None if self.last_across is None else list(self.last_across),
            "crossed": list(self.crossed),
            "last_taken": None if self._last_taken is None else list(self._last_taken),
            "report": [self.scale, self.curvature, self.radius, self.capped],
        }

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        self.iterates.extend(state["iterates"])
        self.last_difference, self.last_gradient = state["last_difference"], state["last_gradient"]
        self.last_across = None if state["last_across"] is None else tuple(state["last_across"])
        self.crossed.extend(state["crossed"])
        self._last_taken = None if state["last_taken"] is None else tuple(state["last_taken"])
        self.scale, self.curvature, self.radius, self.capped = state["report"]

    def adjust(self, w: Tensor, g: Tensor, loss: float, step: Tensor, state: State) -> Tensor:
        """The step to take from ``w`` instead of the optimizer's ``step``."""
        if not self.iterates:
            self.iterates.append(w)
        p_inv = self.optimizer.inverse_preconditioner(state)
        if self.last_across is not None and self.last_gradient is not None:
            across, p_inv_then = self.last_across
            stretch = float(across @ (across / p_inv_then))
            if stretch > 0:
                self.crossed.append(float(across @ (g - self.last_gradient)) / stretch)
        threshold = self.optimizer.threshold / self.optimizer.momentum_gain(state)
        largest = max(self.crossed, default=0.0)
        limit = (1.0 - 0.5 * self.margin) * threshold
        self.scale = min(1.0, limit / largest) if largest > 0 else 1.0
        direction = self._direction()
        self.curvature = self.radius = math.nan
        self.capped = False
        if direction is None or self.last_gradient is None:
            taken = self.scale * step
            self.last_across = (taken, p_inv)
        else:
            along = float(direction @ step)
            across = self.scale * (step - along * direction)
            moved = float(direction @ (self.iterates[-1] - self.iterates[-2]))
            kappa = float(direction @ (g - self.last_gradient)) / moved if moved != 0 else 0.0
            if kappa > 0 and math.isfinite(loss):
                offset = float(direction @ g) / kappa
                landing = offset + along
                self.curvature = kappa
                self.radius = math.sqrt(2.0 * self.max_share * max(loss, 0.0) / kappa)
                if abs(landing) > self.radius:
                    along = math.copysign(self.radius, landing) - offset
                    self.capped = True
            taken = across + along * direction
            self.last_across = (across, p_inv)
        self.last_gradient = g
        self.iterates.append(w + taken)
        self._last_taken = (w, taken)
        return taken

    def shorten(self, factor: float) -> Tensor:
        """The last step ``adjust`` returned, taken ``factor`` as long instead (a rejected step's
        retry): the step, and the cap's record of it, changed alike."""
        if self._last_taken is None:
            raise RuntimeError("shorten() needs a step from adjust() first")
        origin, taken = self._last_taken
        taken = factor * taken
        self.iterates[-1] = origin + taken
        if self.last_across is not None:
            self.last_across = (factor * self.last_across[0], self.last_across[1])
        self._last_taken = (origin, taken)
        return taken

    def _direction(self) -> Tensor | None:
        """û where the last four iterates oscillate with period two (two consecutive third
        differences pointing opposite ways), else None."""
        if len(self.iterates) < 4:
            return None
        w3, w2, w1, w0 = self.iterates[0], self.iterates[1], self.iterates[2], self.iterates[3]
        difference = (w0 - 3.0 * w1 + 3.0 * w2 - w3) / 8.0
        last, self.last_difference = self.last_difference, difference
        norm = float(difference.norm())
        if last is None or norm == 0.0 or not math.isfinite(norm):
            return None
        cosine = float(difference @ last) / (norm * float(last.norm()) or math.inf)
        return difference / norm if cosine < -self.alternation else None


class CappedRun:
    """A run of ``optimizer`` on ``problem`` from ``w0`` with its oscillation capped
    (``OscillationCap(optimizer, **cap_options)``) and, unless ``rise`` is None, its loss guarded: a
    step whose loss exceeds (1 + ``rise``)× the run's lowest loss so far is taken again at half the
    length (at most ``MAX_RETRIES`` times; each try costs a gradient), and the next step starts
    from ``regrow``× the accepted length, up to the full step. At ``regrow=2`` Adam on the digits
    MLP retried so often that at η = 0.06 it took 313 steps for 600 gradients, and its best final
    loss over η was 2.9× that at 1.5 (``python benchmarks/budget.py --optimizers adam --problems
    digits-mlp --methods oscillation_cap --cap-option regrow=2``, against docs/budget.md).

    The cap bounds the oscillation the optimizer's own dynamics grow; the guard catches a rise the
    quadratic picture does not see: a first step across a non-quadratic region, before four
    iterates show an oscillation (without it, ``--cap-option rise=none``, GD on the ViT spiked 3.4×
    in its first steps at η = 0.2 and diverged at 0.4).

    ``run.step()`` advances by one accepted step; ``run.w``, ``run.loss``, ``run.g`` are the
    current iterate, its loss and gradient; ``run.tries`` counts the steps taken, rejected ones too.
    ``state`` is the optimizer's state to start from, before it has seen the gradient at ``w0``
    (default: its initial state); ``evaluated``, the loss and gradient at ``w0`` where they are
    known already (else they are evaluated).
    """

    #: the attributes a checkpoint holds besides the cap's
    SAVED = ("w", "g", "loss", "state", "lowest", "length", "tries")

    def state_dict(self) -> dict:
        return {**{key: getattr(self, key) for key in self.SAVED}, "cap": self.cap.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for key in self.SAVED:
            setattr(self, key, state[key])
        self.cap.load_state_dict(state["cap"])

    def __init__(
        self,
        problem: Problem,
        optimizer: Optimizer,
        w0: Tensor | None = None,
        state: State | None = None,
        rise: float | None = 0.1,
        regrow: float = 1.5,
        evaluated: tuple[float, Tensor] | None = None,
        **cap_options: float,
    ) -> None:
        self.problem, self.optimizer = problem, optimizer
        self.cap = OscillationCap(optimizer, **cap_options)
        self.rise = None if rise is None else positive_float("rise", rise)
        self.regrow = positive_float("regrow", regrow)
        self.w = (problem.w0 if w0 is None else w0).clone()
        #: the optimizer's state before it has seen the gradient at ``w``
        self.state = optimizer.init(self.w) if state is None else dict(state)
        loss, self.g = problem.value_and_grad(self.w) if evaluated is None else evaluated
        self.loss = float(loss)
        self.lowest = self.loss
        self.length = 1.0  # the share of the full step the next one starts from
        self.tries = 0

    def step(self) -> None:
        state = self.optimizer.update(self.state, self.g)
        proposed = self.optimizer.step(self.w, self.g, state) - self.w
        taken = self.cap.adjust(self.w, self.g, self.loss, proposed, state)
        if self.length < 1.0:
            taken = self.cap.shorten(self.length)
        for retry in range(MAX_RETRIES + 1):
            self.tries += 1
            loss, g = self.problem.value_and_grad(self.w + taken)
            loss = float(loss)
            rejected = self.rise is not None and not loss <= (1.0 + self.rise) * self.lowest
            if not rejected or retry == MAX_RETRIES:
                break
            taken = self.cap.shorten(0.5)
            self.length *= 0.5
        self.w, self.g, self.loss, self.state = self.w + taken, g, loss, state
        self.lowest = min(self.lowest, loss)
        self.length = min(1.0, self.regrow * self.length)
