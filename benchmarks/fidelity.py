"""How faithfully each continuous-time model tracks GD, on the standard suite, side by side.
Regenerates ``docs/results.md`` (and ``docs/results.json``) from scratch.

    python benchmarks/fidelity.py                          # the whole suite (see SUITE; ~45 min, 2 cores)
    python benchmarks/fidelity.py --problems zhu,quartic --out /tmp/results.md

Every flow runs in one ``compare`` call with GD (same problem, same η, same records), then once more
with its sub-steps doubled: a flow counts as converged when doubling moves its trajectory by less
than a tenth of its distance to GD (or by less than 1e-3 of GD's travel), so the errors reported
are the model's, not the integrator's. Every number in the output is measured by this script.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef
from edgeflow.metrics import REFERENCE, fidelity, summarize
from edgeflow.processes import process_class
from edgeflow.results import FlowRecord
from edgeflow.zoo import problem_params

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("edge", "central", "gradient", "modified")
FLOWS = ("gd", REFERENCE, *MODELS)
#: converged: doubling the sub-steps moves the trajectory by less than this fraction of its distance to GD
CONVERGED_FRACTION = 0.1
#: … or by less than this fraction of GD's travel ‖w* − w₀‖ (for flows that sit on GD's center)
CONVERGED_FLOOR = 1e-3


@dataclass(frozen=True)
class Case:
    problem: str
    steps: int
    every: int = 1  # record (and measure the sharpness) every this many steps
    params: dict = field(default_factory=dict)  # problem size overrides
    why: str = ""


SUITE = (
    Case("quartic", 200, why="1-D period-2 orbit: EoS in its simplest form"),
    Case("scalar", 60, why="starts above 2/η: catapult to a flatter minimum within ~20 steps"),
    Case("zhu", 400, why="drift along a valley of minima toward flatter ones while oscillating"),
    Case("digits-mlp", 400, every=5, why="the default problem: progressive sharpening, overshoot, EoS"),
)


def refined_options(flow: str) -> dict:
    """Options that double the flow's sub-steps (halve its time step) relative to its defaults."""
    defaults = {
        name: p.default for name, p in inspect.signature(process_class(flow).__init__).parameters.items()
    }
    if "substeps" in defaults:
        return {"substeps": 2 * defaults["substeps"]}
    if "substep_rate" in defaults:  # RK4 sub-steps are sized so that rate·Δt ≤ substep_rate
        return {"substep_rate": defaults["substep_rate"] / 2}
    raise ValueError(f"flow {flow!r} has no sub-step option to refine")


def resolution(rec: FlowRecord, options: dict, flow: str) -> str:
    """Sub-steps per GD step, as run: fixed K, or the median of the RK4 flows' adaptive count."""
    if "substeps" in rec and flow in ("gradient", "modified"):
        n = rec["substeps"][1:]
        return f"RK4 ×{np.median(n):.0f}" if n.size else "RK4"
    sig = inspect.signature(process_class(flow).__init__).parameters
    k = options.get("substeps", sig["substeps"].default)
    return f"K = {k}"


def trajectory_change(a: ef.Result, b: ef.Result, flow: str) -> tuple[float, float]:
    """Median and max of ‖c_a(k) − c_b(k)‖ / ‖w*_k − w₀‖ over shared records (k > 0)."""
    pa, pb = a[flow], b[flow]
    steps, ia, ib = np.intersect1d(pa["step"], pb["step"], return_indices=True)
    _, ja, _ = np.intersect1d(a.distances["step"], steps, return_indices=True)
    scale = a.distances[f"{REFERENCE}-w0"][ja]
    diff = np.linalg.norm(pa["params"][ia] - pb["params"][ib], axis=1)
    ok = scale > 0
    rel = diff[ok] / scale[ok]
    rel = rel[np.isfinite(rel)]
    if not rel.size:
        return float("nan"), float("nan")
    return float(np.median(rel)), float(np.max(rel))


def run_case(case: Case, dtype: str | None) -> dict:
    spec = ef.PROBLEMS[case.problem]
    problem = ef.make_problem(case.problem, dtype=dtype, **case.params)
    lr = spec.lr
    kwargs = dict(record_every=case.every, sharpness_every=case.every, save_params=True, progress=True)
    t0 = time.perf_counter()
    base = ef.compare(problem, lr, case.steps, FLOWS, **kwargs)
    refined = {flow: refined_options(flow) for flow in MODELS}
    fine = ef.compare(
        ef.make_problem(case.problem, dtype=dtype, **case.params),
        lr,
        case.steps,
        ("gd", REFERENCE, *MODELS),
        options=refined,
        **kwargs,
    )
    wall = time.perf_counter() - t0
    fid, fid_fine = fidelity(base), fidelity(fine)
    costs = summarize(base)["flows"]
    flows = {}
    for flow in (REFERENCE, *MODELS):
        row = dict(fid[flow])
        done = max(base[flow].info["steps_completed"], 1)
        cost = base[flow].info["cost"]
        row.update(
            resolution=resolution(base[flow], {}, flow) if flow in MODELS else "exact",
            diverged_at=base[flow].info["diverged_at"],
            wall_vs_gd=costs[flow]["wall_vs_gd"],
            per_step={k: v / done for k, v in cost.items()},
        )
        if flow in MODELS:
            change_median, change_max = trajectory_change(base, fine, flow)
            dist = row.get("distance_median") or 0.0
            row.update(
                refined_resolution=resolution(fine[flow], refined[flow], flow),
                refined_distance_median=fid_fine[flow].get("distance_median"),
                refined_mean_loss_median=fid_fine[flow].get("mean_loss_median"),
                refinement_change_median=change_median,
                refinement_change_max=change_max,
                converged=bool(change_median <= CONVERGED_FRACTION * dist or change_max <= CONVERGED_FLOOR),
            )
        flows[flow] = row
    return {
        "problem": case.problem,
        "why": case.why,
        "params": {**problem_params(case.problem), **case.params},
        "lr": lr,
        "threshold": 2 / lr,
        "steps": case.steps,
        "every": case.every,
        "dim": problem.dim,
        "dtype": str(problem.dtype).removeprefix("torch."),
        "wall_s": wall,
        "gd_onset": fid[REFERENCE]["onset"],
        "flows": flows,
    }


# ---------------------------------------------------------------------------------------------- report
def _f(x, fmt: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return format(x, fmt) if isinstance(x, float) else str(x)


def _pair(row: dict, metric: str) -> str:
    return f"{_f(row.get(metric + '_median'))} / {_f(row.get(metric + '_eos_median'))}"


def _onset_errors(case: dict, flow: str) -> tuple[str, str]:
    gd, own = case["gd_onset"], case["flows"][flow]["onset"]
    cross = "–" if own["cross"] is None or gd["cross"] is None else f"{own['cross'] - gd['cross']:+d}"
    if own["peak"] is None:
        peak = "none"
    elif gd["peak"] is None:
        peak = f"{own['peak']:.4g} @{own['peak_step']} (GD: none)"
    else:
        err = (own["peak"] - gd["peak"]) * case["lr"] / 2
        peak = f"{err:+.3f} @{own['peak_step'] - gd['peak_step']:+d}"
    return cross, peak


def fidelity_table(cases: list[dict]) -> list[str]:
    lines = [
        "| problem | flow (sub-steps) | rel. distance | mean-loss error | sharpness error · η/2 | "
        "onset Δstep | 1st peak error · η/2 (Δstep) | period (GD's) | cost vs GD | "
        "grads + HVPs + 3rd / step | Δ on doubling (med / max) |",
        "|" + "---|" * 11,
    ]
    for case in cases:
        gd_period = case["gd_onset"]["period"]
        for flow in MODELS:
            row = case["flows"][flow]
            cross, peak = _onset_errors(case, flow)
            per = row["per_step"]
            ops = f"{per['grad']:.3g} + {per['hvp']:.3g} + {per['third']:.3g}"
            mark = "" if row["converged"] else " (not converged)"
            lines.append(
                f"| {case['problem']} | {flow} ({row['resolution']}) | {_pair(row, 'distance')} | "
                f"{_pair(row, 'mean_loss')} | {_pair(row, 'sharpness')} | {cross} | {peak} | "
                f"{_f(row['onset']['period'])} ({_f(gd_period)}) | {_f(row['wall_vs_gd'], '.3g')} | {ops} | "
                f"{_f(row['refinement_change_median'])} / {_f(row['refinement_change_max'])}{mark} |"
            )
    return lines


def onset_table(cases: list[dict]) -> list[str]:
    lines = [
        "| problem | 2/η | flow | crosses 2/η | first peak (step) | dip (step) | period |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        for flow in (REFERENCE, *MODELS):
            o = case["flows"][flow]["onset"]
            name = "GD (midpoint)" if flow == REFERENCE else flow
            lines.append(
                f"| {case['problem']} | {case['threshold']:.4g} | {name} | {_f(o['cross'])} | "
                f"{_f(o['peak'], '.4g')} ({_f(o['peak_step'])}) | "
                f"{_f(o['dip'], '.4g')} ({_f(o['dip_step'])}) | {_f(o['period'])} |"
            )
    return lines


def edge_vs_central(cases: list[dict]) -> list[str]:
    """One measured sentence per problem: Edge Flow's errors against the central flow's."""
    lines = []
    for case in cases:
        e, c = case["flows"]["edge"], case["flows"]["central"]
        parts = []
        for metric, label in (
            ("distance", "distance"),
            ("mean_loss", "mean-loss error"),
            ("sharpness", "sharpness error"),
        ):
            a, b = e.get(f"{metric}_median"), c.get(f"{metric}_median")
            if a is None or b is None:
                continue
            verdict = "lower" if a < b else "higher" if a > b else "equal"
            parts.append(f"{label} {_f(a)} vs {_f(b)} ({verdict})")
        cost = e["wall_vs_gd"] / c["wall_vs_gd"] if e["wall_vs_gd"] and c["wall_vs_gd"] else None
        lines.append(
            f"- **{case['problem']}**: Edge Flow vs central flow, medians over the run — "
            + "; ".join(parts)
            + (f"; Edge Flow costs {_f(cost, '.2f')}× the central flow per GD step." if cost else ".")
        )
    return lines


def write_report(cases: list[dict], out: Path, started: str, total_s: float) -> None:
    lines = [
        "# Fidelity of the continuous-time models of GD",
        "",
        f"Generated by `python benchmarks/fidelity.py` on {started} in {total_s / 60:.1f} min "
        f"(edgeflow {ef.__version__}, torch {torch.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads, CPU). Regenerate it rather than edit it.",
        "",
        "Each problem runs GD, its midpoint w*_k (GD's center), Edge Flow, the central flow, gradient "
        "flow and the modified flow in one process from the same w₀ with the problem's η. Errors are "
        "against GD at the same step: relative distance ‖c − w*‖/‖w* − w₀‖; mean-loss error "
        "|L̄_F − L̄_GD|/L̄_GD with L̄_GD = ½[L(w_k) + L(w_{k+1})] and L̄_F the flow's prediction of it "
        "(Edge Flow `predicted_mean_loss`, central flow L + tr Σ/η, the others L(c)); sharpness "
        "error |S_F − S(w*)|·η/2. Each cell is the median over the run / over the EoS window (from "
        "GD's first crossing of 2/η). Onset: the flow's first crossing of 2/η minus GD's; the first "
        "overshoot peak's height error as a fraction of 2/η and its step offset ('none': the flow "
        "has no overshoot); the period of the sharpness oscillation after the crossing. Cost: wall "
        "time per GD step against GD's, stepped in the same process (sharpness measurements excluded). "
        "Δ on doubling: the median / max over records of ‖c_K − c_2K‖/‖w* − w₀‖ when the flow's "
        f"sub-steps are doubled; a flow counts as converged when the median is below "
        f"{CONVERGED_FRACTION:g}× its distance to GD or the max below {CONVERGED_FLOOR:g}.",
        "",
        "## Problems",
        "",
        "| problem | η (2/η) | steps | records every | d | dtype | parameters | what it shows | wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        params = ", ".join(f"{k}={v}" for k, v in c["params"].items() if v is not None)
        lines.append(
            f"| {c['problem']} | {c['lr']:g} ({c['threshold']:.4g}) | {c['steps']} | {c['every']} | "
            f"{c['dim']} | {c['dtype']} | {params} | {c['why']} | {c['wall_s'] / 60:.1f} min |"
        )
    lines += [
        "",
        "## Fidelity against GD",
        "",
        *fidelity_table(cases),
        "",
        "## Onset of EoS",
        "",
        *onset_table(cases),
        "",
        "## Edge Flow against the central flow",
        "",
        *edge_vs_central(cases),
        "",
    ]
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"started": started, "cases": cases}, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [c.problem for c in SUITE]
    ap.add_argument("--problems", default=",".join(names), help=f"subset of {', '.join(names)}")
    ap.add_argument("--dtype", default=None, help="override every problem's dtype")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    args = ap.parse_args()
    wanted = [p.strip() for p in args.problems.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in names]
    if unknown:
        ap.error(f"unknown problem(s) {', '.join(unknown)}; the suite has: {', '.join(names)}")
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    t0 = time.perf_counter()
    cases = []
    for case in SUITE:
        if case.problem in wanted:
            print(f"== {case.problem}", flush=True)
            cases.append(run_case(case, args.dtype))
            print(f"   {cases[-1]['wall_s'] / 60:.1f} min", flush=True)
    write_report(cases, Path(args.out), started, time.perf_counter() - t0)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
