"""Edge Flow: a continuous-time model of GD at the edge of stability.

GD's iterates are modelled as ``w_k ≈ c(k) + s_k r(k) u(k)`` with ``s_k = ±1`` alternating. Per unit
of time (one GD step)::

    dc/dt = −η · ½(g₊ + g₋)        g± = ∇L(c ± r u): gradient flow on L_r(c) = ½[L(c+ru) + L(c−ru)]
    du/dt =  η (H u − ρ u)         ρ = uᵀHu, H = ∇²L(c): Rayleigh-quotient dynamics
    dℓ/dt =  log|ηκ − 1|           ℓ = log r, κ = uᵀ(g₊ − g₋)/(2r): GD's per-step growth factor

Each sub-step (Δt = 1/K) costs two gradients (one vmapped call) and one HVP.

Discretization, and why it is stable:

* **Center.** Along u the center ODE is stiff (rate ηρ ≈ 2 per step at EoS); an explicit Euler step
  with Δt = 1 there *is* a GD step and would put GD's own period-2 oscillation into c. The u-component
  is stepped linearly implicitly, ``a ← a − ηΔt·(uᵀḡ)/(1 + ηΔt·ρ₊)`` (ρ₊ = max(ρ, 0)), which is
  backward Euler on the local quadratic model: it relaxes monotonically for every Δt. The other
  directions are stepped explicitly, like GD; with K ≥ 2 they are smooth as long as ηλΔt < 1.
* **Direction.** A naive Euler step multiplies the component along eigenvalue λ by 1 + ηΔt(λ − ρ),
  which does not shrink for λ ≤ 0 when ηρ ≈ 2 and Δt = 1. We use the normalized shifted power step
  ``u ← (I + ηΔtH)u / ‖·‖`` (the same HVP), a first-order-consistent discretization of the Rayleigh
  flow whose components along λ shrink relative to the top one by (1 + ηΔtλ)/(1 + ηΔtλ_max): every
  eigenvalue above −λ_max − 2/(ηΔt) dies out, zero and negative ones included.
* **Magnitude.** ``ℓ ← ℓ + Δt·log|ηκ − 1|`` is exact for constant κ (r grows by GD's factor per
  step). The secant κ cancels catastrophically when r is tiny; below ``√ε·max(1, ‖c‖)`` the
  Rayleigh quotient ρ (its r → 0 limit) is used instead.
* **Noise floor.** GD's oscillation never decays below the rounding every GD step injects, and it
  is from that floor that it grows once S > 2/η. We keep ``r ≥ noise_floor · u_dtype · ‖c‖``
  (u_dtype = unit roundoff). Without it r underflows in the stable phase and Edge Flow falls onto
  gradient flow at the onset. The default 0.03 was calibrated against GD's first sharpness
  overshoot on the default problem in float64 and float32 (``benchmarks/edge_flow_study.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.oracle import Problem
from edgeflow.processes.base import Process
from edgeflow.processes.midpoint import Midpoint
from edgeflow.utils import nonnegative_float, positive_float, positive_int

MAGNITUDES = ("secant", "rayleigh", "linear")
#: r ≥ NOISE_FLOOR · unit roundoff · ‖c‖: the rounding that seeds GD's oscillation (calibrated, below)
NOISE_FLOOR = 0.03
_TINY = torch.finfo(torch.float64).tiny  # keeps log r finite when the floor is 0


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


class EdgeFlow(Process):
    name = "edge"
    description = (
        "Edge Flow: center, direction and magnitude of GD's oscillation (2 grads + 1 HVP per sub-step)"
    )
    fields = (
        "train_loss",
        "predicted_loss",
        "predicted_mean_loss",
        "sharpness",
        "rayleigh",
        "secant",
        "magnitude",
    )

    def __init__(
        self,
        problem: Problem,
        lr: float,
        magnitude: str = "secant",
        substeps: int = 2,
        r0: float | None = None,
        noise_floor: float = NOISE_FLOOR,
        warm_start: int = 0,
    ) -> None:
        super().__init__(problem, lr)
        if magnitude not in MAGNITUDES:
            raise invalid_choice("Edge Flow magnitude", magnitude, MAGNITUDES)
        self.magnitude_rule = magnitude
        self.substeps = positive_int("substeps", substeps)
        self.r0 = None if r0 is None else positive_float("r0 (r = 0 is invariant)", r0)
        self.noise_floor = nonnegative_float("noise_floor", noise_floor)
        if isinstance(warm_start, bool) or not isinstance(warm_start, int) or warm_start < 0:
            raise ConfigError(f"warm_start must be a GD step ≥ 0, got {warm_start!r}")
        self.warm_start = warm_start
        eps = torch.finfo(problem.dtype).eps
        self._roundoff = unit_roundoff(problem.dtype)
        self._secant_min = math.sqrt(eps)

    # ------------------------------------------------------------------ set-up
    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.time = 0
        self.gd: Midpoint | None = None
        if self.warm_start > 0:
            # GD (with its midpoint) runs until step k0; Edge Flow takes over from its measured state.
            self.gd = Midpoint(self.problem, self.lr)
            self.gd.init(w0, seed)
            return
        gen = torch.Generator(device=w0.device).manual_seed(seed)
        u = self.problem.eigs(w0, generator=gen).vectors[0]
        g = self.problem.grad(w0)
        step_along_u = -self.lr * float(u @ g)
        # Default r0: half of GD's first step along u, the oscillation amplitude about the midpoint
        # of w0 and w1; s_1 is the side GD's first step lands on.
        r0 = self.r0 if self.r0 is not None else 0.5 * abs(step_along_u)
        self._start(w0.clone(), u, r0, sign=-1.0 if step_along_u >= 0 else 1.0)

    def _start(self, c: Tensor, u: Tensor, r: float, sign: float) -> None:
        self.c, self.u = c, u
        self.log_r = max(math.log(max(r, _TINY)), self._log_floor(c))
        self.sign = sign  # s_k at the current time
        self.rho = math.nan
        self.kappa = math.nan

    def _take_over_from_gd(self) -> None:
        gd = self.gd
        assert gd is not None
        center = gd.position
        gen = torch.Generator(device=center.device).manual_seed(self.seed)
        u = self.problem.eigs(center, generator=gen).vectors[0]
        offset = float(u @ (gd.w - center))
        self.gd = None
        self._start(center, u, abs(offset) if self.r0 is None else self.r0, 1.0 if offset >= 0 else -1.0)

    def floor(self, c: Tensor) -> float:
        return self.noise_floor * self._roundoff * float(c.norm())

    def _log_floor(self, c: Tensor) -> float:
        return math.log(max(self.floor(c), _TINY))

    @property
    def r(self) -> float:
        return math.exp(self.log_r)

    # ------------------------------------------------------------------ dynamics
    def step(self) -> None:
        if self.gd is not None:
            self.gd.step()
            self.time += 1
            if self.time == self.warm_start:
                self._take_over_from_gd()
            return
        dt = 1.0 / self.substeps
        for _ in range(self.substeps):
            self._substep(dt)
        self.sign = -self.sign
        self.time += 1

    def _substep(self, dt: float) -> None:
        p, lr, c, u = self.problem, self.lr, self.c, self.u
        r = self.r
        g = p.grads(torch.stack([c + r * u, c - r * u]))
        v = p.hvp(c, u)
        rho = float(u @ v)
        secant = float(u @ (g[0] - g[1])) / (2 * r)
        if r < self._secant_min * max(1.0, float(c.norm())):
            secant = rho
        kappa = rho if self.magnitude_rule == "rayleigh" else secant

        g_mean = 0.5 * (g[0] + g[1])
        along = float(u @ g_mean)
        h = lr * dt
        self.c = c - h * (g_mean - along * u) - (h * along / (1.0 + h * max(rho, 0.0))) * u

        u_next = u + h * v
        self.u = u_next / u_next.norm()

        if self.magnitude_rule == "linear":
            rate = lr * kappa - 2.0
        else:
            rate = math.log(max(abs(lr * kappa - 1.0), 1e-300))
        self.log_r = max(self.log_r + dt * rate, self._log_floor(self.c))
        self.rho, self.kappa = rho, secant

    # ------------------------------------------------------------------ measurements
    @property
    def position(self) -> Tensor:
        return self.gd.position if self.gd is not None else self.c

    def observe(self, sharpness: bool) -> dict[str, float]:
        if self.gd is not None:
            obs = self.gd.observe(sharpness)
            nan = math.nan
            return {
                "train_loss": obs["train_loss"],
                "predicted_loss": float(self.gd.loss),
                "predicted_mean_loss": obs["mean_loss"],
                "sharpness": obs["sharpness"],
                "rayleigh": nan,
                "secant": nan,
                "magnitude": obs["oscillation"],
            }
        c, u, r = self.c, self.u, self.r
        losses = self.problem.losses(torch.stack([c, c + r * u, c - r * u]))
        here, plus, minus = (float(x) for x in losses)
        return {
            "train_loss": here,
            "predicted_loss": plus if self.sign > 0 else minus,
            "predicted_mean_loss": 0.5 * (plus + minus),
            "sharpness": self.measure_sharpness(c, self.seed)[0] if sharpness else math.nan,
            "rayleigh": self.rho,
            "secant": self.kappa,
            "magnitude": r,
        }
