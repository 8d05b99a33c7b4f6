"""GD with a remedy for edge-of-stability instabilities, compared with GD in the same tables.

The remedies (option ``remedy``), each at the same learning rate η as the GD it is compared with;
u is the tracked top Hessian eigenvector, ρ = uᵀHu:

* ``edge_capped`` (the default): Edge Flow's center update as the optimizer, guarded. The step
  follows the symmetrized gradient ḡ = ½[∇L(w + ru) + ∇L(w − ru)], whose r²∇S/2 term lowers the
  sharpness the way GD's own oscillation does (self-stabilization), without oscillating: along u it
  is damped by Edge Flow's implicit factor, ``−η(uᵀḡ)/(1 + ηρ)·u``; across u its step size is
  capped at (2 − margin)/κ_max, κ_max the largest curvature of the last ``CAP_MEMORY`` steps (the
  tracked ρ, and the curvature each step actually crossed), so no other direction can be unstable
  either. r follows Edge Flow's magnitude equation ``log r ← log r + log|ηκ − 1|`` (κ the secant
  curvature along the segment, ρ while r is below √ε·‖w‖), between the rounding floor and
  ``max_share`` of a catapult's scale (½ρr² ≤ max_share · loss). While ηS > 2, r grows and pulls
  the sharpness back toward 2/η, where GD at the edge of stability keeps it; the cap keeps the
  step stable meanwhile. ``max_share`` trades the two (docs/instability_max_share.md,
  ``python benchmarks/instability.py --max-share 0.05,0.25,1``): at 1 (r up to a catapult's scale)
  the final loss was the lowest on digits-mlp for η ≤ 1.6 and on sort-transformer at η = 1, but the
  symmetrized gradient's own push left loss bumps of 1.4–1.6× on sort-transformer at η ≤ 1 (19× at
  η = 2); at 0.05 no bump passed 1.003×, but the final loss was 1.6× and 5.2× GD's there at
  η = 0.25 and 0.5; at 0.25 (the default) no bump passed 1.11× on either problem, up to η = 4 and
  6.4, where GD diverges.
* ``lr_cap``: GD with the step size capped at (2 − margin)/ρ.
* ``damped``: GD whose step along u is damped by Edge Flow's linearly implicit factor,
  ``w ← w − η(g − (uᵀg)u) − η(uᵀg)/(1 + ηρ)·u``, whenever GD would be unstable or nearly so along
  u (ηρ ≥ 2 − margin); plain GD otherwise. Along u the step multiplies the error by
  1/(1 + ηρ) ∈ (0, 1) instead of GD's |1 − ηρ| > 1.
* ``edge``: Edge Flow's center update itself (one sub-step per GD step, Edge Flow's own start of
  r, no cap), for comparison with ``edge_capped``.
* ``warmup``: GD with the learning rate ramped linearly from 0 to η over ``warmup_steps`` steps.
* ``clip``: GD with the gradient norm clipped to ``clip_norm`` (default: ‖∇L(w₀)‖).

The last two are the remedies users already use, here for comparison. ``benchmarks/instability.py``
measures them all on four problems over a grid of η (docs/instability.md). u and ρ are tracked with
one HVP per step (Edge Flow's shifted power step u ← (I + ηH)u/‖·‖), refreshed by a warm-started
Lanczos solve every ``refresh_every`` steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from edgeflow.errors import invalid_choice
from edgeflow.oracle import Problem, SharpnessTracker
from edgeflow.processes.base import Process
from edgeflow.processes.edge import NOISE_FLOOR, EdgeFlow, secant_resolves, unit_roundoff
from edgeflow.utils import nonnegative_float, positive_float, positive_int

#: relative Lanczos residual of the refreshes: the cap needs the top eigenvalue, which a residual
#: bounds (|θ − λ| ≤ ‖r‖), not its vector; at a large η eigenvalues cluster near 2/η and a 1e-3
#: residual took 27 HVPs a solve on digits-mlp at η = 3.2
TRACKING_TOL = 1e-2
#: a step that raises the loss by more than this (relative) triggers a fresh eigenvector search
RISE = 0.01
#: Lanczos iterations at least, when a rise of the loss says another eigenvector may have overtaken u
SEARCH_ITERATIONS = 8
#: the cap takes the largest ρ of this many steps: where two eigenvectors trade the top place from
#: one step to the next the tracked ρ lags, and a cap at the last ρ alone let GD's step be unstable
#: along the other (sort-transformer at η = 0.25: ηρ/2 = 0.94 where ηS/2 was 1.16)
CAP_MEMORY = 10
REMEDIES = ("edge_capped", "lr_cap", "damped", "edge", "warmup", "clip")


def power_shift(rho: float, lr: float) -> float:
    """The shift s of the power step ``u ← (I + sH)u / ‖·‖`` that tracks the top eigenvector: 1/ρ
    rather than Edge Flow's η. The two agree at ηρ = 1, but (I + H/ρ) amplifies no eigenvalue above
    −3ρ more than the top one, where (I + ηH) lets any below −2/η − ρ win once η is large."""
    return 1.0 / rho if rho > 0 else lr


def log_floor(w: Tensor) -> float:
    """log of the rounding floor GD's oscillation never decays below (Edge Flow's noise floor)."""
    return math.log(max(NOISE_FLOOR * unit_roundoff(w.dtype) * float(w.norm()), 1e-300))


def edge_capped_update(
    w: Tensor,
    g_mean: Tensor,
    u: Tensor,
    rho: float,
    kappa: float,
    lr: float,
    margin: float,
    log_r: float,
    loss: float,
    max_share: float = 1.0,
    cap_curvature: float | None = None,
) -> tuple[Tensor, float, float]:
    """One ``edge_capped`` step from the symmetrized gradient ``g_mean`` at ``w ± r u`` (the
    flow and ``EdgeStableGD`` share it): the new iterate, the step size across u, the new log r.

    r grows by GD's factor |ηκ − 1| (κ the secant curvature along the segment), between the
    rounding floor and ``max_share`` of the catapult scale: ½ρr² ≤ max_share · loss. The step
    across u is capped by ``cap_curvature`` (default ρ)."""
    along = float(u @ g_mean)
    step_size = capped_step(lr, margin, rho if cap_curvature is None else cap_curvature)
    damped = lr * along / (1.0 + lr * max(rho, 0.0))
    w_next = w - step_size * (g_mean - along * u) - damped * u
    grown = log_r + math.log(max(abs(lr * kappa - 1.0), 1e-300))
    catapult = 0.5 * math.log(max(2.0 * max_share * loss, 1e-300) / max(rho, 1e-300))
    return w_next, step_size, max(min(grown, catapult), log_floor(w_next))


def remember(recent: list[float], curvature: float) -> list[float]:
    """The last ``CAP_MEMORY`` curvatures, ``curvature`` the newest."""
    return [*recent[-(CAP_MEMORY - 1) :], curvature]


def crossed_curvature(last_step: tuple[Tensor, Tensor] | None, g_mean: Tensor) -> float:
    """dᵀ(ḡ − ḡ₀)/‖d‖²: the curvature the last step d (taken from a point with gradient ḡ₀) actually
    crossed. Where the iterates jump between a flat and a sharp point, neither point's top
    eigenvalue sees it (sort-transformer at η = 0.5: ηS/2 0.85, 1.35, 0.86, 1.77 at consecutive
    iterates, ηρ/2 ≈ 0.9 at every one), and a cap at ρ let that jump grow into a spike."""
    if last_step is None:
        return 0.0
    d, g_before = last_step
    length = float(d @ d)
    return float(d @ (g_mean - g_before)) / length if length > 0 else 0.0


def capped_step(lr: float, margin: float, curvature: float) -> float:
    """min(η, (2 − margin)/curvature): GD's step, stable on every direction up to ``curvature``."""
    return min(lr, (2.0 - margin) / curvature) if curvature > 0 else lr


class Mitigated(Process):
    name = "mitigated"
    description = "GD with a remedy for EoS instabilities (default: Edge Flow's center step, capped)"
    fields = ("train_loss", "sharpness", "effective_sharpness", "rayleigh", "step_size", "magnitude")
    optimizers = ("gd",)

    def __init__(
        self,
        problem: Problem,
        lr: float,
        remedy: str = "edge_capped",
        margin: float = 0.1,
        warmup_steps: int = 100,
        clip_norm: float | None = None,
        refresh_every: int = 10,
        max_share: float = 0.25,
    ) -> None:
        super().__init__(problem, lr)
        if remedy not in REMEDIES:
            raise invalid_choice("remedy", remedy, REMEDIES)
        self.remedy = remedy
        self.margin = nonnegative_float("margin", margin)
        self.warmup_steps = positive_int("warmup_steps", warmup_steps)
        self.clip_norm = None if clip_norm is None else positive_float("clip_norm", clip_norm)
        self.refresh_every = positive_int("refresh_every", refresh_every)
        self.max_share = positive_float("max_share", max_share)

    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.time = 0
        self.edge: EdgeFlow | None = None
        if self.remedy == "edge":
            self.edge = EdgeFlow(self.problem, self.lr, substeps=1)
            self.edge.init(w0, seed)
            self.w = self.edge.c
        else:
            self.w = w0.clone()
        self.loss, self.grad = self.problem.value_and_grad(self.w)
        self.rho = math.nan
        self.step_size = self.lr
        self.u: Tensor | None = None
        self.last_loss = math.inf  # the loss at the start of the last step
        if self.remedy in ("damped", "lr_cap", "edge_capped"):
            self.top = SharpnessTracker(self.problem, seed=seed, tol=TRACKING_TOL, min_iter=2)
            self.rho, self.u = self.top(self.w)
        self.recent_rho = [self.rho]
        self.last_step: tuple[Tensor, Tensor] | None = None
        self.log_r = log_floor(self.w)  # edge_capped's r starts at the rounding floor
        if self.remedy == "clip" and self.clip_norm is None:
            self.clip_norm = float(self.grad.norm())

    def step(self) -> None:
        self.time += 1
        if self.edge is not None:
            self.edge.step()
            self.w, self.rho = self.edge.c, self.edge.rho
            self.loss = self.problem.loss(self.w)  # Edge Flow's step took its own gradients
            return
        g, lr = self.grad, self.lr
        if self.u is not None:
            rose = float(self.loss) > (1.0 + RISE) * self.last_loss
            self.last_loss = float(self.loss)
            self._track(self.w, refresh=rose)
        if self.remedy == "edge_capped":
            self._edge_capped_step()
            return
        if self.remedy == "damped":
            assert self.u is not None
            along = float(self.u @ g)
            if lr * self.rho >= 2.0 - self.margin:
                self.w = self.w - lr * (g - along * self.u) - (lr * along / (1.0 + lr * self.rho)) * self.u
                self.step_size = lr / (1.0 + lr * self.rho)
            else:
                self.w = self.w - lr * g
                self.step_size = lr
        else:
            self.step_size = self._step_size(g)
            self.w = self.w - self.step_size * g
        self.loss, self.grad = self.problem.value_and_grad(self.w)

    def _edge_capped_step(self) -> None:
        assert self.u is not None
        p, w, u, rho = self.problem, self.w, self.u, self.rho
        r = math.exp(self.log_r)
        if secant_resolves(r, w):
            g_plus, g_minus = p.grads(torch.stack([w + r * u, w - r * u]))
            g_mean = 0.5 * (g_plus + g_minus)
            kappa = float(u @ (g_plus - g_minus)) / (2 * r)
        else:
            # r²∇S/2 is below rounding and the secant would cancel: the gradient and ρ, their limits
            g_mean, kappa = p.grad(w), rho
        self.recent_rho[-1] = max(self.recent_rho[-1], crossed_curvature(self.last_step, g_mean))
        w_before = w
        self.w, self.step_size, self.log_r = edge_capped_update(
            w,
            g_mean,
            u,
            rho,
            kappa,
            self.lr,
            self.margin,
            self.log_r,
            float(self.loss),
            self.max_share,
            cap_curvature=max(self.recent_rho),
        )
        self.last_step = (self.w - w_before, g_mean)
        self.loss = p.loss(self.w)

    def _track(self, w: Tensor, refresh: bool = False) -> None:
        """One shifted power step per step, replaced by a warm-started Lanczos solve every
        ``refresh_every`` steps, after a step that raised the loss, and whenever the power step's
        Rayleigh quotient moves by more than 10%. At a large η the power step (I + ηH) also
        amplifies negative eigenvalues, and its quotient then collapses while the sharpness does
        not (on digits-mlp at η = 3.2 it read 0.16 one step in, where S was 2.3, and the capped
        step diverged); and when another eigenvector overtakes the tracked one, the power step
        follows it only slowly, so ρ underestimates S and the cap lets that direction grow (on
        sort-transformer at η = 0.25, ηρ/2 read 0.82 where ηS/2 was 1.18): the loss rises first,
        and a Lanczos solve warm-started from u can stop at the old pair (its residual is small),
        so after a rise the solve starts from u plus an equal share of noise and runs longer."""
        assert self.u is not None
        self.rho, self.u = self._tracked_pair(w, refresh)
        self.recent_rho = remember(self.recent_rho, self.rho)

    def _tracked_pair(self, w: Tensor, refresh: bool) -> tuple[float, Tensor]:
        assert self.u is not None
        if refresh:
            return self._search(w)
        if self.time % self.refresh_every:
            v = self.problem.hvp(w, self.u)
            rho = float(self.u @ v)
            if abs(rho - self.rho) <= 0.1 * abs(self.rho):
                u = self.u + power_shift(rho, self.lr) * v
                return rho, u / u.norm()
        return self.top(w)

    def _search(self, w: Tensor) -> tuple[float, Tensor]:
        assert self.u is not None
        noise = torch.randn(self.u.shape, dtype=self.u.dtype, device=self.u.device, generator=self.top.gen)
        pairs = self.problem.eigs(
            w,
            v0=self.u + noise / noise.norm(),
            tol=TRACKING_TOL,
            min_iter=SEARCH_ITERATIONS,
            generator=self.top.gen,
        )
        self.top.vector = pairs.vectors[0]
        return float(pairs.values[0]), self.top.vector

    def _step_size(self, g: Tensor) -> float:
        if self.remedy == "lr_cap":
            return capped_step(self.lr, self.margin, max(self.recent_rho))
        if self.remedy == "warmup":
            return self.lr * min(1.0, self.time / self.warmup_steps)
        assert self.clip_norm is not None
        norm = float(g.norm())
        return self.lr * min(1.0, self.clip_norm / norm) if norm > 0 else self.lr

    @property
    def position(self) -> Tensor:
        return self.w

    def observe(self, sharpness: bool) -> dict[str, float]:
        return {
            "train_loss": float(self.loss),
            **self.measure_both(self.w, {}, sharpness),
            "rayleigh": self.rho,
            "step_size": self.step_size,
            "magnitude": self._magnitude(),
        }

    def _magnitude(self) -> float:
        """r of the remedies built on Edge Flow's magnitude (NaN for the others)."""
        if self.edge is not None:
            return self.edge.r
        return math.exp(self.log_r) if self.remedy == "edge_capped" else math.nan

    def is_finite(self) -> bool:
        return super().is_finite() and math.isfinite(float(self.loss))
