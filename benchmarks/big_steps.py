"""Moonshot: Edge Flow steps that cover Δt > 1 GD steps. How far can Δt go before the distance to
GD's midpoint doubles? Regenerates ``docs/big_steps.md``.

    python benchmarks/big_steps.py            # digits-mlp, 600 steps (~10 min on 2 CPU cores)
    python benchmarks/big_steps.py --quick    # 200 steps, fewer strides

An Edge Flow step of ``stride`` GD steps takes its sub-steps with Δt = stride / K; between two such
steps the state is held (records are taken at multiples of every stride). The discretization is
Edge Flow's own: linearly implicit along the tracked direction u, explicit across it, the
normalized shifted power step for u and GD's exact mean-square recursion for r. Nothing else is
changed for Δt > 1, so this measures how far that scheme carries, not a scheme built for it.
Cost is counted in gradient evaluations, an HVP as ``HVP_COST`` gradients (measured with
``benchmarks/oracle.py`` on this problem), per GD step of simulated time.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef
from edgeflow.processes.edge import EdgeFlow
from edgeflow.processes.midpoint import Midpoint

ROOT = Path(__file__).resolve().parents[1]
PROBLEM, LR = "digits-mlp", 0.4
#: an HVP in gradients (reverse-over-reverse, digits MLP, CPU): issue 13's measurement
HVP_COST = 2.2
#: records at multiples of this (a multiple of every stride)
RECORD_EVERY = 20
STRIDES = (1, 2, 4, 5, 10, 20)
#: a run whose distance to GD's midpoint passes this (GD's travel from w₀) has diverged from it
LOST = 1.0


class StridedEdgeFlow(EdgeFlow):
    """Edge Flow taking one step of ``stride`` GD steps (``substeps`` sub-steps of Δt = stride/K)
    every ``stride`` calls of ``step``; the calls between only advance the time and GD's sign."""

    def __init__(self, problem: ef.Problem, lr: float, stride: int, **options) -> None:
        super().__init__(problem, lr, **options)
        self.stride = stride

    def step(self) -> None:
        if self.time % self.stride == 0:
            self._advance(self.stride)
        self.sign = -self.sign
        self.time += 1


#: eigenvalues counted at GD's midpoint (Lanczos); a count that reaches it is a lower bound
SPECTRUM = 64


def stiff_counts(center: torch.Tensor, strides: tuple[int, ...]) -> dict:
    """How many Hessian eigenvalues at ``center`` an explicit step of Δt GD steps cannot take
    (ηλΔt > 2): the directions a Δt-step scheme must treat implicitly, each for at least one HVP."""
    prob = ef.make_problem(PROBLEM)
    gen = torch.Generator().manual_seed(0)
    values = prob.eigs(center, SPECTRUM, tol=1e-4, max_iter=400, generator=gen).values.tolist()
    return {dt: sum(LR * lam * dt > 2 for lam in values) for dt in strides} | {"top": values[:3]}


def reference(steps: int) -> tuple[dict[int, torch.Tensor], float]:
    prob = ef.make_problem(PROBLEM)
    gd = Midpoint(prob, LR)
    gd.init(prob.w0, 0)
    centers = {}
    for k in range(steps + 1):
        if k % RECORD_EVERY == 0:
            centers[k] = gd.position.clone()
        if k < steps:
            gd.step()
    return centers, float(prob.w0.norm())


def run(stride: int, options: dict, steps: int, centers: dict[int, torch.Tensor]) -> dict:
    prob = ef.make_problem(PROBLEM)
    w0 = prob.w0
    flow = StridedEdgeFlow(prob, LR, stride, **options)
    t0 = time.perf_counter()
    flow.init(w0, 0)
    distances, diverged = {}, None
    for k in range(steps + 1):
        if k in centers:
            travel = float((centers[k] - w0).norm())
            distances[k] = float((flow.c - centers[k]).norm()) / travel if travel > 0 else math.nan
            if distances[k] > LOST and diverged is None:
                diverged = k  # it has left GD's path: farther from it than GD has travelled
        if k < steps:
            flow.step()
            if not flow.is_finite():
                diverged = diverged or k + 1
                break
    cost = prob.counts
    per_step = (cost.grad + HVP_COST * cost.hvp) / steps
    values = np.array([v for k, v in distances.items() if k > 0])
    return {
        "stride": stride,
        "options": options,
        "median": float(np.nanmedian(values)) if values.size else None,
        "max": float(np.nanmax(values)) if values.size else None,
        "grad_equivalents_per_step": per_step,
        "diverged_at": diverged,
        "wall_s": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "big_steps.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps = 200 if args.quick else 600
    strides = STRIDES[:3] if args.quick else STRIDES
    t0 = time.perf_counter()
    centers, _ = reference(steps)
    at = max(k for k in centers if k <= 2 * steps // 3)
    stiff = stiff_counts(centers[at], strides)
    variants = {
        "modified center, K = 2 per step": {"substeps": 2},
        "modified center, K = 1 per step": {"substeps": 1},
        "gradient center, K = 1 per step": {"substeps": 1, "center": "gradient"},
        "hvp='pair', K = 1 per step": {"substeps": 1, "hvp": "pair"},
        "hvp='pair+center', K = 1 per step": {"substeps": 1, "hvp": "pair+center"},
        "modified center, implicit='secant', K = 1 per step": {"substeps": 1, "implicit": "secant"},
        "hvp='pair', implicit='secant', K = 1 per step": {"substeps": 1, "hvp": "pair", "implicit": "secant"},
    }
    rows = []
    for label, options in variants.items():
        for stride in strides:
            row = run(stride, options, steps, centers) | {"variant": label}
            rows.append(row)
            print(
                label, stride, {k: row[k] for k in ("median", "max", "grad_equivalents_per_step")}, flush=True
            )
    lines = [
        "# Edge Flow with steps of Δt > 1 GD steps",
        "",
        f"Generated by `python benchmarks/big_steps.py` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"torch {torch.__version__}, {(time.perf_counter() - t0) / 60:.0f} min). Problem `{PROBLEM}` "
        f"(defaults), η = {LR}, {steps} steps; distance ‖c − w*‖/‖w* − w₀‖ to GD's midpoint at every "
        f"{RECORD_EVERY}th step; cost in gradient evaluations per GD step of simulated time, an HVP "
        f"counted as {HVP_COST} gradients (GD costs 1). *Stride*: GD steps per Edge Flow step. *Lost GD at*: "
        f"the first record farther than {LOST:g}× GD's travel from its midpoint, or where r overflowed.",
        "",
        "| variant | stride | distance median | distance max | cost / GD step | lost GD at |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['stride']} | {_f(r['median'])} | {_f(r['max'])} | "
            f"{r['grad_equivalents_per_step']:.2f} | {r['diverged_at'] or '–'} |"
        )
    lines += [
        "",
        f"## The stiff directions (GD's midpoint at step {at})",
        "",
        f"Hessian eigenvalues λ with ηλΔt > 2, which an explicit step of Δt GD steps amplifies instead of "
        f"damping, counted among the top {SPECTRUM} (top three: "
        + ", ".join(f"{LR * v:.3f}" for v in stiff["top"])
        + " in units of 1/η). A scheme that steps them implicitly with their exact curvature needs at "
        f"least one HVP per such direction and step: at least (count × {HVP_COST} + 2)/Δt gradients per "
        "GD step. `implicit='secant'` (rows above) takes their curvature from the center's last moves "
        "instead, for no evaluation: it damps the directions the center has moved in, not all of them.",
        "",
        "| Δt | stiff directions | cost of such a scheme / GD step, at least |",
        "|---|---|---|",
    ]
    for dt in strides:
        n = stiff[dt]
        shown = f"≥ {n}" if n >= SPECTRUM else str(n)
        lines.append(f"| {dt} | {shown} | {(n * HVP_COST + 2) / dt:.2f} |")
    base = rows[0]["median"]  # the default: modified center, K = 2, a step per GD step
    lines += [
        "",
        "## How far Δt goes",
        "",
        f"Against the default (modified center, K = 2 sub-steps per GD step, Δt = ½): median distance "
        f"{base:.4f}. Per variant, the largest sub-step Δt (= stride / K) up to which every run stays "
        "within twice that distance and on GD's path, and the cheapest such run:",
        "",
    ]
    for label, options in variants.items():
        ok = []
        for r in (r for r in rows if r["variant"] == label):  # by stride, up to the first that fails
            if r["median"] is None or r["diverged_at"] or r["median"] > 2 * base:
                break
            ok.append(r)
        if not ok:
            lines.append(f"- {label}: none (its stride-1 run is already more than twice as far).")
            continue
        cheapest = min(ok, key=lambda r: r["grad_equivalents_per_step"])
        cost = cheapest["grad_equivalents_per_step"]
        lines.append(
            f"- {label}: Δt ≤ {max(r['stride'] for r in ok) / options['substeps']:g}; the cheapest costs "
            f"{cost:.2f} gradients per GD step ({'less' if cost < 1 else 'more'} than GD)."
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def _f(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.4f}" if abs(x) < 1e3 else f"{x:.1e}"


if __name__ == "__main__":
    main()
