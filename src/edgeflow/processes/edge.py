"""Edge Flow: a continuous-time model of GD at the edge of stability.

GD's iterates are modelled as ``w_k ≈ c(k) + s_k r(k) u(k)`` with ``s_k = ±1`` alternating. Per unit
of time (one GD step), with g± = ∇L(c ± r u), ḡ = ½(g₊ + g₋) = ∇L_r(c), L_r(c) = ½[L(c+ru) + L(c−ru)]::

    dc/dt = −η [ḡ + (η/2)∇²L_r ḡ − ½ṙ ∂ḡ/∂r]   the center: ḡ taken half a GD step back
    du/dt =  η (H u − ρ u)                      ρ = uᵀHu, H = ∇²L(c): Rayleigh-quotient dynamics
    dℓ/dt =  log|ηκ(t − ½) − 1|                 ℓ = log r, κ = uᵀ(g₊ − g₋)/(2r): GD's growth factor

GD takes each gradient at the start of its step; a flow spreads it over the step. Taking the fields
half a step back (F(x(t − ½)) ≈ F − ½dF/dt) removes that O(η) drift: the modified flow's correction on
the symmetrized loss, the oscillation's push half a step late, κ half a step back.
``center="gradient"`` is the model without them: dc/dt = −ηḡ (gradient flow on L_r), κ at t.
Each sub-step (Δt = 1/K) costs three gradients and two HVPs in two calls (g± vmapped; Hu and ∇²L ḡ
at c, with ∇L(c) from their shared pass); two and one with ``center="gradient"``. ``hvp="pair"``
costs two gradients and no HVP with either center: Hu, ḡ and the correction all come from the pair
(below); ``hvp="pair+center"`` three, ∇L(c) with the pair.

Discretization, and why it is stable:

* **Center.** Along u the center ODE is stiff (rate ηρ ≈ 2 per step at EoS); an explicit Euler step
  with Δt = 1 there *is* a GD step and would put GD's own period-2 oscillation into c. The u-component
  is stepped linearly implicitly, ``a ← a − ηΔt·(uᵀḡ)/(1 + ηΔt·ρ₊)`` (ρ₊ = max(ρ, 0)), which is
  backward Euler on the local quadratic model: it relaxes monotonically for every Δt. The other
  directions are stepped explicitly, like GD; with K ≥ 2 they are smooth as long as ηλΔt < 1. The
  corrected center keeps its correction along u too (GD's slow manifold needs it), stepped implicitly;
  each part of the half step of delay is reduced by what the sub-step's discretization supplies
  (explicit: Δt/2 behind, implicit: Δt/2 ahead) — see ``_modified_center_step``.
  ``implicit="secant"`` also damps the explicit step in the directions the center recently moved in,
  with their curvature from the change of ḡ along the moves (no evaluation of its own): at Δt = 1 the
  explicit step is GD's, and every direction other than u with ηλ > 2 would re-run GD's oscillation
  in c. It makes one sub-step per GD step smooth — see ``_secant_damped``.
* **Direction.** A naive Euler step multiplies the component along eigenvalue λ by 1 + ηΔt(λ − ρ),
  which does not shrink for λ ≤ 0 when ηρ ≈ 2 and Δt = 1. We use the normalized shifted power step
  ``u ← (I + ηΔtH)u / ‖·‖`` (the same HVP), a first-order-consistent discretization of the Rayleigh
  flow whose components along λ shrink relative to the top one by (1 + ηΔtλ)/(1 + ηΔtλ_max): every
  eigenvalue above −λ_max − 2/(ηΔt) dies out, zero and negative ones included. Where one power step
  per sub-step lags (the HVP's relative residual ‖Hu − ρu‖/|ρ| passes ``refresh_tol``; by default
  only with a momentum) u is re-aligned by a warm-started Lanczos solve — see ``_refresh_direction``.
* **Without the HVP** (``hvp="pair"``, ``"pair+center"``). The pair is taken at c ± r'u,
  r' = max(r, δ), δ = ε^(2/3)·max(1, ‖c‖): (g₊ − g₋)/2r' is Hu + O(r'²), the curvature along the
  oscillation that GD's iterates feel, and ρ = κ is its Rayleigh quotient. Across u the correction
  (η/2)∇²L ḡ is −½dḡ/dt, from the change over the last sub-step (of ḡ: its c, r and u parts at
  once; or of ∇L(c), with ``pair+center``); along u the step stays linearly implicit, with
  uᵀ∇²L ḡ = vᵀḡ. See ``_pair_center_step``.
* **Magnitude.** ``ℓ ← ℓ + Δt·log|ηκ − 1|`` is exact for constant κ (r grows by GD's factor per
  step); with the delay κ is moved back by ½(1 − Δt)κ̇, κ̇ from the last sub-step. The secant κ
  cancels catastrophically when r is tiny; below ``√ε·max(1, ‖c‖)`` the Rayleigh quotient ρ (its
  r → 0 limit) is used instead.
* **Rounding noise.** GD's oscillation never decays to zero: every GD step rounds, and the rounding
  along u kicks the oscillation by a random amount of standard deviation σ. GD's amplitude obeys
  ``x ← (1 − ηS)x + ξ`` with ``Var ξ = σ²``; Edge Flow follows its mean square,
  ``r² ← r²·a^{2Δt} + σ²·(a^{2Δt} − 1)/(a² − 1)`` with ``a = e^{growth}``, which is GD's recursion
  exactly at Δt = 1 and composes exactly over sub-steps. Below 2/η it settles at GD's stationary level
  σ²/(1 − a²); near 2/η (|a| → 1) the kicks add up like a random walk, which is what seeds the
  growth. σ² has two parts (``rounding_noise``): the rounding of the update w − ηg, Σᵢ uᵢ²
  ulp(wᵢ)²/12 (uniform rounding to nearest), and η² times the variance of the gradient's own rounding
  along u, which ``gradient_rounding`` measures from gradients at ulp-perturbed points, every
  ``ROUNDING_EVERY`` steps while the kicks matter. Without the noise (``noise=0``) r underflows in the
  stable phase and Edge Flow falls onto gradient flow at the onset.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.optimizers import Optimizer, State, add_states
from edgeflow.oracle import Problem
from edgeflow.processes.base import Process
from edgeflow.processes.frame import PreconditionedFrame, to_frame
from edgeflow.processes.midpoint import Midpoint
from edgeflow.utils import nonnegative_float, positive_float, positive_int, positive_or_inf

MAGNITUDES = ("secant", "rayleigh", "linear")
CENTERS = ("modified", "gradient")
HVPS = ("exact", "pair", "pair+center")
IMPLICIT = ("u", "secant")
#: secant pairs (moves of c, changes of ḡ) kept for ``implicit="secant"``
SECANT_MEMORY = 8
#: moves whose singular value is below this fraction of the largest carry no curvature information
SECANT_RCOND = 1e-6
#: the order p of the damping 1/(1 + (μ/2)^p), μ = ηΔtλ: the explicit step to O(μ^p), no period 2
SECANT_ORDER = 4
#: r ≥ NOISE_FLOOR · unit roundoff · ‖w‖: the fixed floor the stability monitor and the remedies keep
#: their r above. Edge Flow itself models the rounding noise (below); on the default problem its level
#: just below 2/η is about this (benchmarks/noise_floor.py)
NOISE_FLOOR = 0.03
#: perturbed gradients per measurement of the gradient's rounding (its variance to about ±50%; the
#: last two measurements are averaged)
ROUNDING_PROBES = 8
#: ulps each coordinate of a probe point is moved by (at most): far enough that the gradient's rounding
#: there is independent of its rounding at w (in an ad-hoc check on the default problem 4 ulps left
#: it partly correlated, 32 and 256 gave the same variance), near enough that the gradient is linear
#: between them
PROBE_ULPS = 32
#: GD steps between measurements of the gradient's rounding, while it matters (r² < NOISE_MATTERS·σ²)
ROUNDING_EVERY = 20
NOISE_MATTERS = 1e6
#: the most sub-steps per GD step ``_substeps_now`` takes for a preconditioned optimizer
MAX_SUBSTEPS = 16
#: the largest bias correction k = 1/(1 − β₁ᵗ) of a momentum at which Edge Flow models its
#: oscillation (t ≥ 11 at β₁ = 0.9); before, its center runs the optimizer itself
MAX_MOMENTUM_GAIN = 1.5
#: ``refresh_tol``'s default with a momentum (heavy-ball, Nesterov, Adam): the relative residual
#: ‖H̃u − ρu‖/|ρ| of u above which one power step per step is taken to lag the top eigenvector and u
#: is re-aligned by Lanczos. GD and RMSProp keep the power step alone (no refresh) by default
REFRESH_TOL = 0.2
#: the relative Lanczos residual a refresh solves to: well inside ``REFRESH_TOL``, so that a refreshed
#: u does not fire again at the next step unless the spectrum has moved on
REFRESH_LANCZOS_TOL = 1e-2
#: a refreshed u whose overlap |uᵀu_old| with the power step's is below this is another eigenvector
#: (a hand-over between directions), not the same one re-aligned: the hand-over of the center's
#: motion along u to r is disarmed as at a start past the center curvature (``_refresh_direction``)
SWITCH_OVERLAP = 0.5
#: the most HVPs one refresh takes (its warm start usually converges in a handful)
REFRESH_MAX_ITER = 30
#: |d log r/dt| above which the center's delay correction for a changing r is capped (per GD step)
RATE_CAP = 4.0
_TINY = torch.finfo(torch.float64).tiny  # keeps log r finite without rounding noise
#: log r beyond which r² overflows: the magnitude has diverged
_LOG_R_MAX = 0.5 * math.log(torch.finfo(torch.float64).max)


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def ulp(w: Tensor) -> Tensor:
    """The spacing of floating-point numbers at each entry of ``w`` (in ``w``'s dtype)."""
    a = w.abs()
    return torch.nextafter(a, torch.full_like(a, math.inf)) - a


def update_rounding(w: Tensor, u: Tensor) -> float:
    """Variance along ``u`` of the rounding of ``w − ηg`` to ``w``'s dtype: Σᵢ uᵢ² ulp(wᵢ)²/12."""
    return float((u * ulp(w)).square().sum()) / 12.0


def gradient_rounding(
    problem: Problem, w: Tensor, u: Tensor, generator: torch.Generator, probes: int = ROUNDING_PROBES
) -> float:
    """Variance of ``uᵀε``, ε the rounding error of ``∇L(w)`` as ``problem`` evaluates it. ε is a
    pseudo-random function of w: at points ``PROBE_ULPS`` ulps apart the forward and backward passes
    round independently, while the exact gradient moves linearly, so the samples
    ``uᵀ(g(w+δ) − g(w)) − (Hu)ᵀδ = uᵀε(w+δ) − uᵀε(w)`` all share the one draw uᵀε(w). Their spread
    about their mean is Var(uᵀε), whatever that draw; half their mean square, (Var + (uᵀε(w))²)/2,
    would carry that one draw into every estimate (tests/test_edge.py checks several base points).
    Costs ``probes + 1`` gradients, evaluated one by one like GD's, and one HVP."""
    if probes < 2:
        raise ConfigError(f"the rounding probe needs at least 2 probes, got {probes}")
    wide = torch.float64
    base = problem.grad(w).to(wide)
    hu = problem.hvp(w, u).to(wide)
    u, spacing = u.to(wide), ulp(w)
    samples = []
    for _ in range(probes):
        jumps = torch.randint(-PROBE_ULPS, PROBE_ULPS + 1, w.shape, generator=generator, device=w.device)
        moved = w + jumps.to(w.dtype) * spacing  # exact: whole ulps
        delta = moved.to(wide) - w.to(wide)
        samples.append(float(u @ (problem.grad(moved).to(wide) - base)) - float(hu @ delta))
    mean = sum(samples) / len(samples)
    return sum((x - mean) ** 2 for x in samples) / (len(samples) - 1)


def _log_share(growth: float, dt: float) -> float:
    """log of (a^{2Δt} − 1)/(a² − 1), a = e^growth: the share of one GD step's rounding kick that a
    sub-step of length Δt collects, written so that no exponential overflows."""
    if abs(growth) < 1e-12:
        return math.log(dt)
    if growth < 0:
        return math.log(math.expm1(2 * growth * dt) / math.expm1(2 * growth))
    whole, part = -math.expm1(-2 * growth), -math.expm1(-2 * growth * dt)
    return 2 * growth * (dt - 1) + math.log(part / whole)


def _log_add(a: float, b: float) -> float:
    """log(eᵃ + eᵇ) without overflow: r² sums of two parts kept as logs."""
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def difference_scale(c: Tensor) -> float:
    """√ε·max(1, ‖c‖), where the secant ``uᵀ(g₊ − g₋)/2r`` at c ± ru starts to stand clear of the
    rounding of the gradients (``secant_resolves``)."""
    return math.sqrt(torch.finfo(c.dtype).eps) * max(1.0, float(c.norm()))


def pair_scale(c: Tensor) -> float:
    """δ = ε^(2/3)·max(1, ‖c‖), the least separation of the pair at c ± max(r, δ)u. Its mean is
    ∇L(c) + (δ²/2)∇³L[u, u]: a phantom oscillation of size δ that pushes the center toward lower
    sharpness all through the stable phase, where GD's own r is at rounding level. ε^(1/3) (the
    balance for the HVP alone) made it larger than GD's r at EoS in float32 and delayed the onset; √ε
    still moved the first sharpness peak of the fidelity suite's float32 ViT 5 steps late (sharpness
    error 0.038; at ε^(2/3) 0.027 with the peak at GD's step, docs/results.md). The price is in the
    difference: the points c ± δu round by ulp(c), so v = (g₊ − g₋)/2δ is Hu along a direction off u
    by up to ε‖c‖/δ = ε^(1/3) (float32: 5e-3, float64: 6e-6) — in the Rayleigh quotient uᵀv that is
    averaged over d coordinates of random sign."""
    return torch.finfo(c.dtype).eps ** (2 / 3) * max(1.0, float(c.norm()))


def gradient_pair(
    problem: Problem, c: Tensor, u: Tensor, r: float, center: bool = False
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(ḡ, v, ∇L(c) or None)`` from g± = ∇L(c ± r'u), r' = max(r, δ) (and ∇L(c) when ``center``),
    in one vmapped call: ḡ = ½(g₊ + g₋) (∇L_r(c), or ∇L(c) to O(δ²) below δ) and
    v = (g₊ − g₋)/2r' = ∇²L(c)u + O(r'²), the curvature along u that the oscillation spans (δ:
    ``pair_scale``)."""
    r_pair = max(r, pair_scale(c))
    points = [c + r_pair * u, c - r_pair * u, c] if center else [c + r_pair * u, c - r_pair * u]
    g = problem.grads(torch.stack(points))
    return 0.5 * (g[0] + g[1]), (g[0] - g[1]) / (2 * r_pair), (g[2] if center else None)


def secant_resolves(r: float, c: Tensor) -> bool:
    """Whether the secant ``uᵀ(g₊ − g₋)/2r`` at ``c ± r u`` stands clear of rounding: below
    ``√ε·max(1, ‖c‖)`` (``difference_scale``) it cancels catastrophically and ρ, its r → 0 limit, is
    used instead."""
    return r >= difference_scale(c)


class EdgeFlow(Process):
    """Edge Flow (the model and its discretization: this module's docstring and docs/edge_flow.md).

    ``refresh_tol``: the relative residual ‖H̃u − ρu‖/|ρ| of the direction u (H̃ the Hessian in the
    optimizer's frame, ρ = uᵀH̃u) above which u, otherwise advanced by one shifted power step per
    sub-step, is re-aligned with the top eigenvector by a warm-started Lanczos solve
    (``_refresh_direction``). The residual comes from the HVP the power step takes anyway, so where
    u keeps up it costs nothing. Default (None): ``REFRESH_TOL`` with a momentum (heavy-ball,
    Nesterov, Adam), never for GD and RMSProp; ``math.inf`` turns it off. It needs ``hvp="exact"``.
    """

    name = "edge"
    description = (
        "Edge Flow: center, direction and magnitude of GD's oscillation "
        "(3 grads + 2 HVPs per sub-step; 2 + 1 with center='gradient'; "
        "2 grads, no HVP with hvp='pair'; 3 with hvp='pair+center'; "
        "implicit='secant' for a smooth center at substeps=1; with a momentum optimizer 2 grads + "
        "1 HVP per step, substeps=1, + a Lanczos refresh of u where it lags: refresh_tol)"
    )
    fields = (
        "train_loss",
        "predicted_loss",
        "predicted_mean_loss",
        "sharpness",
        "effective_sharpness",
        "rayleigh",
        "secant",
        "magnitude",
    )

    def __init__(
        self,
        problem: Problem,
        lr: float,
        magnitude: str = "secant",
        substeps: int | None = None,
        r0: float | None = None,
        noise: float = 1.0,
        probe_rounding: bool = True,
        warm_start: int = 0,
        center: str | None = None,
        delay_magnitude: bool | None = None,
        hvp: str = "exact",
        implicit: str = "u",
        refresh_tol: float | None = None,
    ) -> None:
        super().__init__(problem, lr)
        if magnitude not in MAGNITUDES:
            raise invalid_choice("Edge Flow magnitude", magnitude, MAGNITUDES)
        if center is not None and center not in CENTERS:
            raise invalid_choice("Edge Flow center", center, CENTERS)
        if hvp not in HVPS:
            raise invalid_choice("Edge Flow hvp", hvp, HVPS)
        if implicit not in IMPLICIT:
            raise invalid_choice("Edge Flow implicit", implicit, IMPLICIT)
        if hvp != "exact" and magnitude == "rayleigh":
            raise ConfigError(f"Edge Flow magnitude='rayleigh' needs hvp='exact' ({hvp!r} gives the secant)")
        self.magnitude_rule = magnitude
        # None: "modified", or with a momentum the optimizer's own step (``_momentum_substep``)
        self.center_option = center
        self.center = center or "modified"
        self.hvp = hvp
        self.implicit = implicit
        if delay_magnitude is not None and not isinstance(delay_magnitude, bool):
            raise ConfigError(f"delay_magnitude must be true, false or None, got {delay_magnitude!r}")
        # default: with the center (half a step of delay in both, or in neither)
        self.delay_magnitude = self.center == "modified" if delay_magnitude is None else delay_magnitude
        self.substeps = None if substeps is None else positive_int("substeps", substeps)
        self.r0 = None if r0 is None else positive_float("r0 (r = 0 is invariant)", r0)
        self.noise = nonnegative_float("noise", noise)
        if not isinstance(probe_rounding, bool):
            raise ConfigError(f"probe_rounding must be true or false, got {probe_rounding!r}")
        self.probe_rounding = probe_rounding
        if isinstance(warm_start, bool) or not isinstance(warm_start, int) or warm_start < 0:
            raise ConfigError(f"warm_start must be a GD step ≥ 0, got {warm_start!r}")
        self.warm_start = warm_start
        if refresh_tol is not None:
            refresh_tol = positive_or_inf("refresh_tol", refresh_tol)
            if hvp != "exact" and math.isfinite(refresh_tol):
                raise ConfigError(f"Edge Flow refresh_tol needs hvp='exact' (with {hvp!r} v is a secant)")
        # None: REFRESH_TOL with a momentum, never for GD and RMSProp (``_refresh_threshold``)
        self.refresh_tol = refresh_tol

    def use_optimizer(self, optimizer: Optimizer, start_state: State | None = None) -> None:
        super().use_optimizer(optimizer, start_state)  # first: an optimizer it does not model at all
        if not optimizer.stateless:
            chosen = {
                "hvp": (self.hvp, "exact"),
                "implicit": (self.implicit, "u"),
                "warm_start": (self.warm_start, 0),
            }
            if optimizer.momentum_key is not None and self.center_option is not None:
                raise ConfigError(
                    f"Edge Flow's center option ({self.center_option!r}) is GD's and RMSProp's; with "
                    f"optimizer {optimizer.name!r} the center runs the optimizer itself: leave it unset"
                )
            if optimizer.momentum_key is not None and self.magnitude_rule == "linear":
                raise ConfigError(
                    f"Edge Flow magnitude='linear' is GD's linearization ηκ − 2; with optimizer "
                    f"{optimizer.name!r} use 'secant' or 'rayleigh' (the momentum map's period-2 root)"
                )
            for key, (value, needed) in chosen.items():
                if value != needed:
                    raise ConfigError(
                        f"Edge Flow with optimizer {optimizer.name!r} needs {key}={needed!r} "
                        f"(got {value!r}); the other options are derived for GD only"
                    )

    # ------------------------------------------------------------------ set-up
    def init(self, w0: Tensor, seed: int) -> None:
        self.seed = seed
        self.time = 0
        self.gd: Midpoint | None = None
        self.opt_state: State = {}
        if not self.optimizer.stateless:
            self._init_preconditioned(w0)
            return
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

    def _init_preconditioned(self, w0: Tensor) -> None:
        """As ``init`` in the preconditioner's frame: u the top eigenvector of P^{-1/2}HP^{-1/2} (the
        generalized one is P^{-1/2}u), r0 half the first step −P^{-1/2}∇L(w0) along it."""
        g = self.problem.grad(w0)
        self.opt_state = self.initial_state(w0, g)
        self.g_sq_prev: Tensor | None = None  # E[g⊙g] at the last sub-step, for its lead
        self.inverse_prev: Tensor | None = None  # P⁻¹ at the last sub-step, for its delay
        self.dt_prev = math.nan  # the last sub-step's length (the sub-steps adapt, ``_substeps_now``)
        self.state_seen = True  # the state has seen the gradient at the center (momentum sub-step)
        self.handover_armed = False
        scale = self._scale()
        gen = torch.Generator(device=w0.device).manual_seed(self.seed)
        u = self.problem.eigs(w0, generator=gen, scale=scale).vectors[0]
        step_along_u = -float(u @ (scale * g))
        r0 = self.r0 if self.r0 is not None else 0.5 * abs(step_along_u)
        if self.r0 is None and self.optimizer.momentum_key is not None:
            # with a momentum the start is the center (its transient along u is the center's own
            # motion until the top curvature passes the center curvature: _hand_over_along_u)
            r0 = 0.0
        self._start(w0.clone(), u, r0, sign=-1.0 if step_along_u >= 0 else 1.0)

    def _scale(self) -> Tensor:
        """P^{-1/2} of the current optimizer state: the frame's scale (``PreconditionedFrame``)."""
        return torch.as_tensor(self.optimizer.inverse_preconditioner(self.opt_state)).sqrt()

    @property
    def _frame_lr(self) -> float:
        """η in the coordinates the dynamics are written in: the preconditioner's frame has η = 1."""
        return self.lr if self.optimizer.stateless else 1.0

    def _start(self, c: Tensor, u: Tensor, r: float, sign: float) -> None:
        self.c, self.u = c, u
        self.log_r = math.log(max(r, _TINY))
        self._reset_rounding_probe()
        self.sign = sign  # s_k at the current time
        self.rho = math.nan
        self.kappa = math.nan
        self.kappa_prev = math.nan  # κ at the previous sub-step, for the magnitude's delay
        # ḡ, ∇L(c) and c at the previous sub-step, for the pair's ∇²L ḡ
        self.g_prev: Tensor | None = None
        self.gc_prev: Tensor | None = None
        self.c_prev: Tensor | None = None
        self._reset_secant_pairs()
        self._reset_refreshes()

    def _reset_refreshes(self) -> None:
        self.refreshes = 0  # Lanczos re-alignments of u so far (``_refresh_direction``)
        self.refresh_generator = torch.Generator(device=self.c.device).manual_seed(self.seed + 2)

    def _reset_secant_pairs(self) -> None:
        # ring buffers (d × SECANT_MEMORY) of the center's moves and the changes of ḡ along them
        self.secant_moves: Tensor | None = None
        self.secant_changes: Tensor | None = None
        self.secant_count = 0  # pairs seen
        self.secant_from: list[Tensor] = []  # [c, ḡ] at the previous sub-step

    def _take_over_from_gd(self) -> None:
        gd = self.gd
        assert gd is not None
        center = gd.position
        gen = torch.Generator(device=center.device).manual_seed(self.seed)
        u = self.problem.eigs(center, generator=gen).vectors[0]
        offset = float(u @ (gd.w - center))
        self.gd = None
        self._start(center, u, abs(offset) if self.r0 is None else self.r0, 1.0 if offset >= 0 else -1.0)

    def _reset_rounding_probe(self) -> None:
        """The gradient's rounding along u (a variance per gradient) is unknown: measure it afresh."""
        self.grad_rounding = 0.0
        self.probe_generator = torch.Generator(device=self.c.device).manual_seed(self.seed + 1)
        self.next_probe = self.time

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.gd is not None:
            return  # still GD: the state below is set when Edge Flow takes over
        if "grad_rounding" not in state:  # written before the rounding-noise model (a fixed floor)
            self._reset_rounding_probe()
        for name in ("g_prev", "gc_prev", "c_prev"):  # … or before the HVP-free options
            if name not in state:
                setattr(self, name, None)
        if "secant_count" not in state:  # … or before implicit="secant"
            self._reset_secant_pairs()
        if "refreshes" not in state:  # … or before refresh_tol
            self._reset_refreshes()

    def rounding_noise(self, c: Tensor, u: Tensor) -> float:
        """σ², the variance of the kick GD's rounding gives its oscillation along ``u`` per step: the
        rounding of the update w − ηg plus η² times the gradient's own."""
        if self.noise == 0:
            return 0.0
        if self.optimizer.stateless:
            return self.noise**2 * (update_rounding(c, u) + self.lr**2 * self.grad_rounding)
        # In the frame (η = 1) the update's rounding δw is δw/D along u; the gradient's, Dε.
        return self.noise**2 * (update_rounding(c, to_frame(u, self._scale())) + self.grad_rounding)

    def _probe_rounding(self) -> None:
        """Re-measure the gradient's rounding every ``ROUNDING_EVERY`` steps while the oscillation is
        within reach of the kicks; the last two measurements are averaged."""
        if not self.probe_rounding or self.noise == 0 or self.time < self.next_probe:
            return
        kicks = self.rounding_noise(self.c, self.u)
        if kicks > 0 and 2 * self.log_r >= math.log(NOISE_MATTERS * kicks):
            return
        along = self.u if self.optimizer.stateless else self._scale() * self.u
        fresh = gradient_rounding(self.problem, self.c, along, self.probe_generator)
        self.grad_rounding = fresh if self.grad_rounding == 0 else 0.5 * (self.grad_rounding + fresh)
        self.next_probe = self.time + ROUNDING_EVERY

    def _grow(self, growth: float, dt: float) -> None:
        """``r² ← r²·a^{2Δt} + σ²·(a^{2Δt} − 1)/(a² − 1)``, a = e^growth: GD's mean-square recursion
        ``r² ← a²r² + σ²``, exact at Δt = 1 and over any split of a step into sub-steps."""
        grown = 2 * (self.log_r + growth * dt)
        kicks = self.rounding_noise(self.c, self.u)
        if kicks > 0:
            grown = _log_add(grown, math.log(kicks) + _log_share(growth, dt))
        self.log_r = max(0.5 * grown, math.log(_TINY))

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
        self._advance(1.0)
        self.sign = -self.sign
        self.time += 1

    def _advance(self, duration: float) -> None:
        """The ``substeps`` sub-steps that cover ``duration`` GD steps of time."""
        self._probe_rounding()
        substeps = self._substeps_now()
        dt = duration / substeps
        for _ in range(substeps):
            self._substep(dt)

    @property
    def _base_substeps(self) -> int:
        """``substeps``, by default 2, and 1 with a momentum: its sub-step at Δt = 1 is the
        optimizer's own step on the symmetrized loss (``_momentum_substep``); a smaller Δt steps
        the stable flow's ODE, which misses the optimizer's O(1)-in-η discretization."""
        if self.substeps is not None:
            return self.substeps
        return 1 if self.optimizer.momentum_key is not None else 2

    def _substeps_now(self) -> int:
        """``substeps``, raised for a preconditioned optimizer while its effective sharpness ρ is far
        above the threshold: there the other eigenvalues of P⁻¹H can be above it too, and the
        center's explicit step across u multiplies a component along curvature λ by
        1 − Δt·λ(1 + ½(1 − Δt)λ) (the modified center; 1 − Δtλ without the correction). Δt is cut
        until that factor stays above −1 for every λ ≤ ρ. At EoS (ρ ≈ 2) two sub-steps suffice;
        adaptive RMSProp overshoots to twice the threshold at the onset. GD keeps its fixed count."""
        # with a momentum the sub-step at Δt = 1 is the optimizer's own step, stable wherever the
        # optimizer is: nothing to raise
        if self.optimizer.stateless or self.optimizer.momentum_key is not None or not math.isfinite(self.rho):
            return self._base_substeps
        rho = max(self.rho, 0.0)
        correction = 0.5 if self.center == "modified" else 0.0
        k = self._base_substeps
        while k < MAX_SUBSTEPS and rho / k * (1.0 + correction * (1.0 - 1.0 / k) * rho) > 2.0:
            k += 1
        return k

    def _substep(self, dt: float) -> None:
        if self.optimizer.momentum_key is not None:
            self._momentum_substep(dt)
            return
        frame = None
        if self.optimizer.stateless:
            p, lr, c, u = self.problem, self.lr, self.c, self.u
        else:  # GD with η = 1 in the preconditioner's frame, centred at c (frame.py)
            frame = PreconditionedFrame(self.problem, self.c, self._scale())
            p, lr, c, u = frame, 1.0, torch.zeros_like(self.c), self.u
        r = self.r
        modified = self.center == "modified"
        pair = self.hvp != "exact"
        if pair:
            g_mean, v, g_c = gradient_pair(p, c, u, r, center=modified and self.hvp == "pair+center")
            rho = secant = float(u @ v)  # the pair's secant: ρ to O(δ²) where r < δ
        else:
            g = p.grads(torch.stack([c + r * u, c - r * u]))  # g₊, g₋ in one vmapped call
            g_mean, g_c, z = 0.5 * (g[0] + g[1]), None, None
            if modified:
                # Hu and ∇²L ḡ in one call at c, whose gradient ∇L(c) is the pass they share
                g_c, products = p.grad_and_hvps(c, torch.stack([u, g_mean]))
                v, z = products[0], products[1]
            else:
                v = p.hvp(c, u)
            rho = float(u @ v)
            secant = float(u @ (g[0] - g[1])) / (2 * r)
            resolved = r if frame is None else r * float((frame.scale * u).norm())
            if not secant_resolves(resolved, self.c):
                secant = rho
        kappa = rho if self.magnitude_rule == "rayleigh" else secant
        rate = self._growth(kappa)
        if self.delay_magnitude and math.isfinite(self.kappa_prev):
            # GD multiplies r by |ηκ_k − 1| with κ at the start of its step: the flow takes κ half a
            # GD step back, less the Δt/2 by which the explicit sub-step already lags.
            delayed = kappa - 0.5 * (1.0 - dt) * (kappa - self.kappa_prev) / self._previous_dt(dt)
            growth = self._growth(delayed)
        else:
            growth = rate
        self.kappa_prev = kappa

        h = lr * dt
        if modified and pair:
            c_next = self._pair_center_step(c, u, v, rho, g_mean, g_c, rate, dt)
        elif modified:
            assert g_c is not None and z is not None
            c_next = self._modified_center_step(c, u, v, z, rho, g_mean, g_c, rate, dt)
        else:
            along = float(u @ g_mean)
            c_next = c - h * (g_mean - along * u) - (h * along / (1.0 + h * max(rho, 0.0))) * u
        if self.implicit == "secant":
            c_next = c + self._secant_damped(c, u, g_mean, c_next - c, h)
        if frame is None:
            self.c = c_next
        else:
            self.c = self.c + frame.scale * c_next + self._preconditioner_delay(frame, dt)

        u_next = u + h * v
        self.u = u_next / u_next.norm()
        self._grow(growth, dt)
        self.rho, self.kappa = rho, secant
        if frame is not None:
            self._feed_state(frame, dt)
            self.dt_prev = dt
        if not pair:  # with the pair, v is a secant and a refresh would spend the HVPs it saves
            self._refresh_direction(u, v, rho)

    def _momentum_substep(self, dt: float) -> None:
        """One sub-step for an optimizer with a momentum (edge_flow.md, "Momentum and Adam"), in the
        frame x = P^{1/2}(w − c) with frame momentum μ = kP^{-1/2}m (``Optimizer.momentum_gain``).

        The magnitude grows by the period-2 root of the step's 2×2 map at the secant curvature κ.
        The state and the center follow the optimizer driven by the pair's mean gradient ḡ and mean
        square ½(g₊⊙g₊ + g₋⊙g₋), in the discrete optimizer's order: the state sees this point's ḡ
        (an IMEX Euler step of its ODE over the last sub-step, ``Optimizer.relax_state``), then c
        steps with it. At Δt = 1 that is the optimizer itself on the symmetrized loss; a smaller Δt
        is a consistent step of its stable flow. Along u, where past the center curvature the step's
        modes are the oscillation's (at EoS both roots are near −1), the center's motion is handed
        over to r (``_hand_over_along_u``): the center does not oscillate."""
        opt, c, u, r = self.optimizer, self.c, self.u, self.r
        scale = self._scale()
        frame = PreconditionedFrame(self.problem, c, scale)
        g = frame.grads(torch.stack([r * u, -r * u]))
        v = frame.hvp(torch.zeros_like(c), u)
        rho = float(u @ v)
        secant = float(u @ (g[0] - g[1])) / (2 * r)
        if not secant_resolves(r * float((scale * u).norm()), c):
            secant = rho
        physical = frame.last_grads
        g_mean, g_sq = 0.5 * (physical[0] + physical[1]), 0.5 * (physical[0].square() + physical[1].square())
        gain = opt.momentum_gain(self.opt_state)
        # While the momentum's bias correction is large the preconditioner moves within a step and
        # the frozen-P map says nothing: the center (at Δt = 1 the optimizer itself) carries
        # everything, as a warm start would
        settled = gain <= MAX_MOMENTUM_GAIN
        below = gain * rho <= opt.center_curvature()
        # a run that starts past the center curvature hands nothing over until it has been below it:
        # its first momentum is its first gradient, not an oscillation (edge_flow.md)
        # … and a u known to lag the top eigenvector (``_lags``) says nothing about the top curvature
        self.handover_armed = self.handover_armed or (below and not self._lags(u, v, rho))
        if settled and not below and self.handover_armed:
            c, g_mean = self._hand_over_along_u(c, u, scale, g_mean, rho, gain)
        # the state sees this point's gradients (the first sub-step's has seen ∇L(w0) already)
        state = self.opt_state
        if not self.state_seen:
            state = opt.relax_state(state, g_mean, g_sq, self.dt_prev)
        kappa = rho if self.magnitude_rule == "rayleigh" else secant
        growth = self._growth(gain * kappa)
        if self.delay_magnitude and math.isfinite(self.kappa_prev):
            delayed = kappa - 0.5 * (1.0 - dt) * (kappa - self.kappa_prev) / self._previous_dt(dt)
            growth = self._growth(gain * delayed)
        if not settled:
            growth = min(growth, 0.0)
        self.kappa_prev = kappa

        step = to_frame(-dt * opt.inverse_preconditioner(state) * opt.direction(state, g_mean, c), scale)
        self.c = c + scale * step
        self.opt_state = state
        self.state_seen = False
        self._grow(growth, dt)
        self.rho, self.kappa = rho, secant
        u_next = u + dt * v
        self._follow_frame(u_next / u_next.norm(), scale)
        self._refresh_direction(u, v, rho)
        self.dt_prev = dt

    @property
    def _refresh_threshold(self) -> float:
        """``refresh_tol``, by default ``REFRESH_TOL`` with a momentum and never (inf) otherwise."""
        if self.refresh_tol is not None:
            return self.refresh_tol
        return REFRESH_TOL if self.optimizer.momentum_key is not None else math.inf

    def _lags(self, u: Tensor, v: Tensor, rho: float) -> bool:
        """Whether u, with v = H̃u and ρ = uᵀv, is off the eigenvector it follows by more than
        ``refresh_tol``: the relative residual ‖v − ρu‖/|ρ| (0 on an eigenvector). Never where the
        refresh is off; a NaN residual (a diverged step) does not count."""
        threshold = self._refresh_threshold
        if math.isinf(threshold):
            return False
        return float((v - rho * u).norm()) / max(abs(rho), _TINY) > threshold

    def _refresh_direction(self, u: Tensor, v: Tensor, rho: float) -> None:
        """Re-align u with the top eigenvector of the (preconditioned) Hessian at the current center
        where the power step has fallen behind it (``refresh_tol``).

        The test is the relative residual ‖H̃u − ρu‖/|ρ| of the sub-step's u, from the HVP v = H̃u and
        ρ = uᵀv that the power step uses anyway: 0 when u is an eigenvector, so the test is free. One
        shifted power step per sub-step shrinks the other components by (1 + Δtλ)/(1 + Δtλ₁) (η = 1
        in the frame), which is slow where the spectrum crowds the top (Adam's threshold is 38 in the
        frame: a component at 0.8λ₁ loses only 20% a step) and cannot follow a top eigenvector that
        turns within a few steps. Past the tolerance u is replaced by a Lanczos solve warm-started
        from it, with a small random admixture so that an eigenvector that has overtaken u can be
        seen. Where u is accurate nothing changes and nothing is spent. The new u keeps the old one's
        sign (the phase s_k is defined against it) and r is kept.

        A refreshed u nearly orthogonal to the old one (overlap below ``SWITCH_OVERLAP``) is another
        eigenvector taking the top place. With a momentum, the center's motion along it is the
        center's own (a drift of the optimizer, not an oscillation), so the hand-over of that motion
        to r (``_hand_over_along_u``) is disarmed until its curvature has been below the center
        curvature, as at a start past it (docs/edge_flow.md, "Refreshing u")."""
        if not self._lags(u, v, rho):
            return
        u = self.u  # after the power step (and, with a preconditioner, in the new frame)
        scale = None if self.optimizer.stateless else self._scale()
        noise = torch.randn(u.shape, dtype=u.dtype, device=u.device, generator=self.refresh_generator)
        try:
            pairs = self.problem.eigs(
                self.c,
                v0=u + REFRESH_LANCZOS_TOL * noise / noise.norm(),
                tol=REFRESH_LANCZOS_TOL,
                max_iter=REFRESH_MAX_ITER,
                min_iter=2,
                generator=self.refresh_generator,
                scale=scale,
            )
        except FloatingPointError:
            return  # the center has overflowed: its non-finite state stops the run (is_finite)
        fresh = pairs.vectors[0]
        if not bool(torch.isfinite(fresh).all()):
            return
        overlap = float(fresh @ u)
        self.u = fresh if overlap >= 0 else -fresh
        self.refreshes += 1
        if abs(overlap) < SWITCH_OVERLAP and self.optimizer.momentum_key is not None:
            # another eigenvector has taken the top place: the center's motion along it is its own,
            # not an oscillation, until its curvature has been seen below the center curvature
            self.handover_armed = False

    def _hand_over_along_u(
        self, c: Tensor, u: Tensor, scale: Tensor, g_mean: Tensor, rho: float, gain: float
    ) -> tuple[Tensor, Tensor]:
        """Past the center curvature (``Optimizer.center_curvature``) the step's modes along u are
        the oscillation's: the center's own motion along u is handed over to the magnitude. The
        center moves to its equilibrium along u on the local quadratic model (x·u = −(ḡ·u)/ρ in the
        frame, where the symmetrized gradient along u vanishes), its momentum along u is dropped,
        and the deviation's amplitude joins r: r² += x_dev² + μ_dev²/|ω|², |ω|² = det J of the
        flow's 2×2 field at ρ (its mode's μ per unit x). Returns the center and ḡ with no
        component along u (the gradient at the equilibrium, to first order)."""
        opt = self.optimizer
        key = opt.momentum_key
        along_u = to_frame(u, scale)  # the physical gradient of a unit frame gradient along u
        force = float(u @ (scale * g_mean))
        momentum = gain * float(u @ (scale * self.opt_state[key]))
        (p, q), (s, t) = opt.flow_matrix(rho, self.opt_state)
        deviation = (force / rho) ** 2 + momentum**2 / max(p * t - q * s, _TINY)
        self.c = c = c - (force / rho) * (scale * u)
        self.opt_state = {**self.opt_state, key: self.opt_state[key] - (momentum / gain) * along_u}
        if deviation > 0:
            self.log_r = 0.5 * _log_add(2 * self.log_r, math.log(deviation))
        return c, g_mean - force * along_u

    def _follow_frame(self, u: Tensor, old_scale: Tensor) -> None:
        """Carry the oscillation r·u of the frame of ``old_scale`` into the frame of the current
        state: the physical oscillation r·P^{-1/2}u stays where it is (the iterates do not jump)."""
        direction = to_frame(old_scale * u, self._scale())
        norm = float(direction.norm())
        if norm > 0 and math.isfinite(norm):
            self.u = direction / norm
            self.log_r += math.log(norm)
        else:
            self.u = u

    def _previous_dt(self, dt: float) -> float:
        """The last sub-step's length (GD's sub-steps all have the same)."""
        return dt if self.optimizer.stateless or not math.isfinite(self.dt_prev) else self.dt_prev

    def _preconditioner_delay(self, frame: PreconditionedFrame, dt: float) -> Tensor:
        """The part of the half step of delay that the frame does not see: the center's velocity is
        −P⁻¹ḡ half a GD step back, and P⁻¹ changes too, by ½·dP⁻¹/dt·ḡ (less the explicit step's
        own Δt/2 of lag), with dP⁻¹/dt from the last sub-step."""
        inverse = frame.scale.square()
        previous, self.inverse_prev = self.inverse_prev, inverse
        g = frame.last_grads
        if previous is None or g is None:
            return torch.zeros_like(self.c)
        slope = (inverse - previous) / self._previous_dt(dt)
        return 0.5 * (1.0 - dt) * dt * slope * (0.5 * (g[0] + g[1]))

    def _feed_state(self, frame: PreconditionedFrame, dt: float) -> None:
        """One Euler sub-step of the optimizer state's ODE, fed by the pair's gradients: their mean
        and E[g⊙g] = ½(g₊⊙g₊ + g₋⊙g₋) over the oscillation. The frame moves with the new
        preconditioner; the oscillation r·Du stays where it is (GD's iterates do not jump)."""
        g = frame.last_grads
        assert g is not None
        g_mean, g_sq = 0.5 * (g[0] + g[1]), 0.5 * (g[0] * g[0] + g[1] * g[1])
        fed = g_sq
        if self.g_sq_prev is not None:
            # The optimizer's state sees each gradient at the end of the step it starts: read its
            # feed half a GD step ahead, plus the Δt/2 the explicit sub-step lags (optimizers.md).
            slope = (g_sq - self.g_sq_prev) / self._previous_dt(dt)
            fed = (g_sq + 0.5 * (1.0 + dt) * slope).clamp(min=0.0)
        self.g_sq_prev = g_sq
        velocity = self.optimizer.state_velocity(self.opt_state, g_mean, fed)
        self.opt_state = add_states(self.opt_state, dt, velocity)
        self._follow_frame(self.u, frame.scale)

    def _secant_damped(self, c: Tensor, u: Tensor, g_mean: Tensor, step: Tensor, h: float) -> Tensor:
        """``step`` with its explicit part damped in the directions the center recently moved in.

        Across u the center is stepped explicitly, which at Δt = 1 is GD's own step: every other
        direction with ηλ > 2 (at EoS there are several) grows by |1 − ηλ| per step and puts GD's
        period-2 oscillation into c. The pairs (Δc, Δḡ) of the last ``SECANT_MEMORY`` sub-steps
        give the curvature of L_r on the span of the moves (Δḡ ≈ ∇²L_r Δc, no evaluation of its
        own): with S, Y the moves and changes less their parts along u, SᵀS = WΣ²Wᵀ, the span's
        orthonormal basis is SWΣ⁻¹ and ∇²L there is Σ⁻¹WᵀSᵀYWΣ⁻¹, whose symmetric part is ZΛZᵀ.
        Along each Ritz direction b = SWΣ⁻¹Zᵢ with μ = ηΔt·max(λᵢ, 0) the step is scaled by
        1/(1 + (μ/2)^p): the explicit step to O(μ^p) where μ is small, and per-step factor
        1 − μ/(1 + (μ/2)^p) ∈ (−0.14, 1) for every μ ≥ 0 (0 at μ = 2), so no direction re-runs GD's
        oscillation. A direction that starts to oscillate enters the moves, and with them the span,
        at once. Everything past the ring buffer of moves is m × m (m = ``SECANT_MEMORY``), in
        float64; the cost is a few products of d × m matrices with vectors.
        """
        if self.secant_from:
            if self.secant_moves is None:
                self.secant_moves = c.new_zeros(c.numel(), SECANT_MEMORY)
                self.secant_changes = c.new_zeros(c.numel(), SECANT_MEMORY)
            slot = self.secant_count % SECANT_MEMORY  # the order of the moves does not matter
            self.secant_moves[:, slot] = c - self.secant_from[0]
            self.secant_changes[:, slot] = g_mean - self.secant_from[1]
            self.secant_count += 1
        self.secant_from = [c, g_mean]
        n = min(self.secant_count, SECANT_MEMORY)
        if n == 0:
            return step
        wide = torch.float64
        moves = self.secant_moves[:, :n]
        pairs = torch.cat([moves, self.secant_changes[:, :n]], 1)
        products = (pairs.T @ torch.stack([u, step], 1)).to(wide)
        moves_u, changes_u, moves_step = products[:n, 0], products[n:, 0], products[:n, 1]
        # Sᵀu, Yᵀu: the parts along u, taken out of the products below (‖u‖ = 1)
        gram = (moves.T @ pairs).to(wide)
        gram = gram - torch.outer(moves_u, torch.cat([moves_u, changes_u]))
        if not bool(torch.isfinite(gram).all()):
            return step  # the flow has diverged: its non-finite state stops it (is_finite)
        sigma2, w = torch.linalg.eigh(0.5 * (gram[:, :n] + gram[:, :n].T))
        keep = sigma2 > SECANT_RCOND**2 * sigma2[-1].clamp(min=0.0)
        if not bool(keep.any()):
            return step
        to_basis = w[:, keep] / sigma2[keep].sqrt()  # S·to_basis is orthonormal
        curvature = to_basis.T @ gram[:, n:] @ to_basis
        lam, z = torch.linalg.eigh(0.5 * (curvature + curvature.T))
        to_ritz = to_basis @ z
        along = to_ritz.T @ (moves_step - moves_u * float(u @ step))
        mu = h * lam.clamp(min=0.0)
        change = to_ritz @ (along / (1.0 + (0.5 * mu) ** SECANT_ORDER) - along)
        return step + moves @ change.to(step.dtype) - float(moves_u @ change) * u

    def _growth(self, kappa: float) -> float:
        """dℓ/dt, ℓ = log r, for curvature κ across the oscillation."""
        lr = self._frame_lr
        if self.magnitude_rule == "linear":
            return lr * kappa - 2.0
        if self.optimizer.momentum_key is not None:  # the 2×2 map's period-2 root (optimizers.md)
            return math.log(max(abs(self.optimizer.period2_factor(kappa)), 1e-300))
        return math.log(max(abs(lr * kappa - 1.0), 1e-300))

    def _modified_center_step(
        self,
        c: Tensor,
        u: Tensor,
        v: Tensor,
        z: Tensor,
        rho: float,
        g_mean: Tensor,
        g_c: Tensor,
        rate: float,
        dt: float,
    ) -> Tensor:
        """One sub-step of the center driven by ``ḡ`` as it was half a GD step earlier (edge_flow.md):
        ``ḡ + (η/2)∇²L ḡ − ½ṙ ∂ḡ/∂r``, with the share of that half step that the sub-step's own
        discretization already supplies taken out: the explicit step across u lags by Δt/2, the
        linearly implicit step along u leads by Δt/2."""
        lr = self._frame_lr
        h = lr * dt
        # z = ∇²L(c) ḡ stands in for ∇²L_r ḡ (they differ by O(r²))
        force = g_mean - g_c  # ½(g₊ + g₋) − ∇L(c) ≈ (r²/2)∇S: ∂ḡ/∂r ≈ 2·force/r, ṙ = rate·r
        # a first-order expansion in the rate, capped (|rate| ≤ RATE_CAP) where r changes by more than e⁴
        # per GD step: near ηκ = 1 the rate → −∞ while the expansion has long stopped holding
        rate = min(max(rate, -RATE_CAP), RATE_CAP)
        across, along = 0.5 * lr * (1.0 - dt), 0.5 * lr * (1.0 + dt)
        lagged = g_mean + across * z - (1.0 - dt) * rate * force
        step_across = -h * (lagged - float(u @ lagged) * u)
        # Along u: linearly implicit in the u-coordinate a, linearized around the point the step
        # reaches (the coupling through ∇²L: uᵀ(H + βH²)Δc across u, with HΔc ≈ −h(z − (uᵀḡ)v)), so
        # that the center tracks its moving equilibrium along u without a lag of its own.
        # The correction's own stiff term ρ·uᵀḡ enters with ρ₊ = max(ρ, 0): with negative curvature
        # along u, 1 + βρ could vanish and make a spurious equilibrium of the center.
        a_g = float(u @ g_mean)
        stiff = max(rho, 0.0)
        field = a_g * (1.0 + along * stiff) + along * (float(u @ z) - rho * a_g)
        field -= (1.0 - dt) * rate * float(u @ force)
        coupling = float(v @ step_across) - h * along * float(v @ (z - a_g * v))
        step_along = -h * (field + coupling) / (1.0 + h * stiff * (1.0 + along * stiff))
        return c + step_across + step_along * u

    def _pair_center_step(
        self,
        c: Tensor,
        u: Tensor,
        v: Tensor,
        rho: float,
        g_mean: Tensor,
        g_c: Tensor | None,
        rate: float,
        dt: float,
    ) -> Tensor:
        """``_modified_center_step`` without ∇²L ḡ (edge_flow.md), from the pair (and ∇L(c)).

        Across u, ``(η/2)(1 − Δt)∇²L ḡ`` is ``−((1 − Δt)/2)·dḡ/dt`` with dḡ/dt the change over the
        last sub-step: of ∇L(c) with ``hvp="pair+center"`` (the center's move alone; the
        oscillation's part is ``_modified_center_step``'s), of ḡ with ``hvp="pair"`` (the center's
        move, r's and u's at once: ḡ half a GD step back taken literally). Along u the step is
        ``_modified_center_step``'s linearly implicit one with ``uᵀ∇²L ḡ = vᵀḡ``; with
        ``hvp="pair"`` the oscillation's part is the change of uᵀḡ that the center's move does not
        explain (``uᵀΔḡ − vᵀΔc``). The coupling to the step across u, ``(∇²L v)ᵀΔc⊥``, comes from the
        last sub-step's change (it vanishes when u is an eigenvector). The first sub-step after a
        start has no history: no ∇²L ḡ in it.
        """
        lr = self.lr
        h = lr * dt
        lag = 0.5 * (1.0 - dt) / dt  # the delay left after the explicit step's own Δt/2, in sub-steps
        along = 0.5 * lr * (1.0 + dt)  # along u the implicit step leads by Δt/2: the delay plus Δt/2
        g_prev, gc_prev, c_prev = self.g_prev, self.gc_prev, self.c_prev
        self.g_prev, self.gc_prev, self.c_prev = g_mean, g_c, c
        a_g = float(u @ g_mean)
        stiff = max(rho, 0.0)
        field = a_g * (1.0 + along * stiff) + along * (float(v @ g_mean) - rho * a_g)
        delayed = g_mean
        if g_c is not None:  # the oscillation's part as in _modified_center_step
            push = (1.0 - dt) * min(max(rate, -RATE_CAP), RATE_CAP) * (g_mean - g_c)
            delayed = delayed - push
            field -= float(u @ push)
        cross = 0.0
        if g_prev is not None and c_prev is not None:
            moved = c - c_prev
            change = g_mean - g_prev if g_c is None or gc_prev is None else g_c - gc_prev
            delayed = delayed - lag * change
            if g_c is None:
                field -= lag * (float(u @ change) - float(v @ moved))
            # (∇²L v)ᵀΔc⊥: vᵀΔg less ρ·(its part along u that vᵀΔc does not explain) and ‖v‖²·uᵀΔc
            v_perp = v - rho * u
            cross = float(v_perp @ (change + rho * moved)) - float(v_perp @ v_perp) * float(u @ moved)
        step_across = -h * (delayed - float(u @ delayed) * u)
        coupling = float(v @ step_across) + along * cross
        step_along = -h * (field + coupling) / (1.0 + h * stiff * (1.0 + along * stiff))
        return c + step_across + step_along * u

    # ------------------------------------------------------------------ measurements
    @property
    def position(self) -> Tensor:
        return self.gd.position if self.gd is not None else self.c

    def is_finite(self) -> bool:
        return super().is_finite() and (self.gd is not None or self.log_r < _LOG_R_MAX)

    def observe(self, sharpness: bool) -> dict[str, float]:
        if self.gd is not None:
            obs = self.gd.observe(sharpness)
            nan = math.nan
            return {
                "train_loss": obs["train_loss"],
                "predicted_loss": float(self.gd.loss),
                "predicted_mean_loss": obs["mean_loss"],
                "sharpness": obs["sharpness"],
                "effective_sharpness": obs["effective_sharpness"],
                "rayleigh": nan,
                "secant": nan,
                "magnitude": obs["oscillation"],
            }
        c, u, r = self.c, self.u, self.r
        if not self.optimizer.stateless:
            u = self._scale() * u  # the oscillation's physical direction, uᵀPu = 1
        losses = self.problem.losses(torch.stack([c, c + r * u, c - r * u]))
        here, plus, minus = (float(x) for x in losses)
        return {
            "train_loss": here,
            "predicted_loss": plus if self.sign > 0 else minus,
            "predicted_mean_loss": 0.5 * (plus + minus),
            **self.measure_both(c, self.opt_state, sharpness),
            "rayleigh": self.rho,
            "secant": self.kappa,
            "magnitude": r,
        }
