"""How faithfully each continuous-time model tracks GD, on the standard suite, side by side.
Regenerates ``docs/results.md`` (and ``docs/results.json``) from scratch.

    python benchmarks/fidelity.py                          # the whole suite (see SUITE; ~45 min, 2 cores)
    python benchmarks/fidelity.py --problems zhu,quartic --out /tmp/results.md
    python benchmarks/fidelity.py --reuse docs/results.json    # only what is not measured there

Every flow runs in one ``compare`` call with GD (same problem, same η, same records), then again
with its sub-steps doubled, and doubled again while that still moves it: a flow is reported at the
first resolution whose doubling moves its trajectory (median over records, relative to GD's
travel ‖w* − w₀‖) by less than a tenth of its distance to GD or by less than 1e-3 — so the errors
reported are the model's, not the integrator's. Every number in the output is measured here.
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
#: … or by less than this (relative to GD's travel ‖w* − w₀‖; for flows that sit on GD's center)
CONVERGED_FLOOR = 1e-3


@dataclass(frozen=True)
class Case:
    problem: str
    steps: int
    every: int = 1  # record (and measure the sharpness) every this many steps
    params: dict = field(default_factory=dict)  # problem size overrides
    why: str = ""
    max_doublings: int = 3  # of every flow's sub-steps, until its trajectory stops changing
    label: str = ""  # the case's name in the report (default: the problem's)

    @property
    def name(self) -> str:
        return self.label or self.problem


SUITE = (
    Case("quartic", 200, why="1-D period-2 orbit: EoS in its simplest form"),
    Case("scalar", 60, why="starts above 2/η: catapult to a flatter minimum within ~20 steps"),
    Case("zhu", 400, why="drift along a valley of minima toward flatter ones while oscillating"),
    Case(
        "digits-mlp",
        300,
        every=5,
        max_doublings=1,
        why="the default problem through the onset: sharpening, overshoot (step ~260), dip",
    ),
    Case(
        "digits-mlp",
        600,
        every=5,
        max_doublings=0,
        label="digits-mlp-600",
        why="the same, 300 steps deeper into EoS (sub-steps as checked on the 300-step case)",
    ),
    Case(
        "mnist5k-cnn",
        160,
        every=5,
        max_doublings=1,
        why="a CNN on real images (registry defaults); it starts near the edge (S₀ ≈ 9.3, 2/η = 10), "
        "where GD's first steps already leave gradient flow's path",
    ),
    Case("mnist5k-vit", 160, every=5, max_doublings=1, why="a ViT with LayerNorm (registry defaults)"),
)


def refined_options(flow: str, doublings: int) -> dict:
    """Options with the flow's sub-steps doubled ``doublings`` times relative to its defaults."""
    defaults = {
        name: p.default for name, p in inspect.signature(process_class(flow).__init__).parameters.items()
    }
    if "substeps" in defaults:
        return {"substeps": defaults["substeps"] * 2**doublings}
    if "substep_rate" in defaults:  # RK4 sub-steps are sized so that rate·Δt ≤ substep_rate
        return {"substep_rate": defaults["substep_rate"] / 2**doublings}
    raise ValueError(f"flow {flow!r} has no sub-step option to refine")


def resolution(rec: FlowRecord, options: dict) -> str:
    """Sub-steps per GD step as run: a fixed K, or the median of the RK4 flows' adaptive count."""
    if "substeps" in options:
        return f"K = {options['substeps']}"
    n = rec["substeps"][1:]
    return f"RK4 ×{np.median(n):.0f}" if n.size else "RK4"


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
    """Every model at its default sub-steps, then doubled until its trajectory stops moving."""
    spec = ef.PROBLEMS[case.problem]
    lr = spec.lr
    t0 = time.perf_counter()

    def run(flows: tuple[str, ...], doublings: int) -> ef.Result:
        problem = ef.make_problem(case.problem, dtype=dtype, **case.params)
        options = {f: refined_options(f, doublings) for f in flows if f in MODELS}
        return ef.compare(
            problem,
            lr,
            case.steps,
            ("gd", REFERENCE, *flows),
            options=options,
            record_every=case.every,
            sharpness_every=case.every,
            save_params=True,
            progress=True,
        )

    base = run(MODELS, 0)
    current = dict.fromkeys(MODELS, base)  # each model's result at its finest level so far
    level = dict.fromkeys(MODELS, 0)
    changes: dict[str, list[tuple[float, float]]] = {f: [] for f in MODELS}
    pending = list(MODELS)
    for doublings in range(1, case.max_doublings + 1):
        if not pending:
            break
        finer = run(tuple(pending), doublings)
        for flow in list(pending):
            change = trajectory_change(current[flow], finer, flow)
            changes[flow].append(change)
            dist = fidelity(current[flow])[flow].get("distance_median") or 0.0
            if change[0] <= max(CONVERGED_FRACTION * dist, CONVERGED_FLOOR):
                pending.remove(flow)  # converged at the current level: report it there
            else:
                current[flow], level[flow] = finer, doublings
    wall = time.perf_counter() - t0

    flows = {REFERENCE: {**fidelity(base)[REFERENCE], "resolution": "exact"}}
    for flow in MODELS:
        res = current[flow]
        rec = res[flow]
        done = max(rec.info["steps_completed"], 1)
        options = refined_options(flow, level[flow])
        flows[flow] = {
            **fidelity(res)[flow],
            "options": options,
            "resolution": resolution(rec, options),
            "diverged_at": rec.info["diverged_at"],
            "wall_vs_gd": summarize(res)["flows"][flow]["wall_vs_gd"],
            "per_step": {k: v / done for k, v in rec.info["cost"].items()},
            "doubling_changes": changes[flow],
            "converged": None if case.max_doublings == 0 else flow not in pending,
        }
    return {
        "name": case.name,
        "problem": case.problem,
        "why": case.why,
        "params": {**problem_params(case.problem), **case.params},
        "lr": lr,
        "threshold": 2 / lr,
        "steps": case.steps,
        "every": case.every,
        "dim": base.config["dim"],
        "dtype": base.config["dtype"],
        "wall_s": wall,
        "gd_onset": flows[REFERENCE]["onset"],
        "flows": flows,
    }


# ---------------------------------------------------------------------------------------------- report
def _f(x, fmt: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return format(x, fmt) if isinstance(x, float) else str(x)


def _name(case: dict) -> str:
    return case.get("name", case["problem"])


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
            last = row["doubling_changes"][-1] if row["doubling_changes"] else (None, None)
            mark = {True: "", False: " — not converged", None: "not checked"}[row["converged"]]
            lines.append(
                f"| {_name(case)} | {flow} ({row['resolution']}) | {_pair(row, 'distance')} | "
                f"{_pair(row, 'mean_loss')} | {_pair(row, 'sharpness')} | {cross} | {peak} | "
                f"{_f(row['onset']['period'])} ({_f(gd_period)}) | {_f(row['wall_vs_gd'], '.3g')} | {ops} | "
                f"{_f(last[0])} / {_f(last[1])}{mark} |"
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
                f"| {_name(case)} | {case['threshold']:.4g} | {name} | {_f(o['cross'])} | "
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
            f"- **{_name(case)}**: Edge Flow vs central flow, medians over the run — "
            + "; ".join(parts)
            + (f"; Edge Flow costs {_f(cost, '.2f')}× the central flow per GD step." if cost else ".")
        )
    return lines


def write_report(cases: list[dict], out: Path, started: str, partial: str | None) -> None:
    lines = [
        "# Fidelity of the continuous-time models of GD",
        "",
        *([f"**Partial: {partial} measured so far.**", ""] if partial else []),
        *(
            [f"Not measured in this file (run them with `--problems`): {', '.join(missing)}.", ""]
            if (missing := [c.name for c in SUITE if c.name not in {_name(x) for x in cases}])
            else []
        ),
        f"Generated by `python benchmarks/fidelity.py` (written {started}; edgeflow {ef.__version__}, "
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, CPU); "
        "each problem's wall time is in the first table. Regenerate it rather than edit it.",
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
        "sub-steps are doubled. Each flow is reported at the first resolution whose doubling moves it "
        f"by a median below {CONVERGED_FRACTION:g}× its distance to GD or below {CONVERGED_FLOOR:g} "
        "(sub-steps in the flow column; the RK4 flows choose theirs from the sharpness, the median is "
        "shown); 'not converged' marks a flow still moving at the finest resolution tried.",
        "",
        "## Problems",
        "",
        "| problem | η (2/η) | steps | records every | d | dtype | parameters | what it shows | wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        params = ", ".join(f"{k}={v}" for k, v in c["params"].items() if v is not None)
        lines.append(
            f"| {_name(c)} | {c['lr']:g} ({c['threshold']:.4g}) | {c['steps']} | {c['every']} | "
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
    names = [c.name for c in SUITE]
    ap.add_argument("--problems", default=",".join(names), help=f"subset of: {'; '.join(names)}")
    ap.add_argument("--dtype", default=None, help="override every problem's dtype")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    ap.add_argument(
        "--reuse",
        nargs="*",
        default=[],
        metavar="JSON",
        help="results.json files of earlier runs of this script: a case measured there with the same "
        "problem, steps and record interval is taken from it instead of being run again",
    )
    args = ap.parse_args()
    wanted = [p.strip() for p in args.problems.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in names]
    if unknown:
        ap.error(f"unknown problem(s) {', '.join(unknown)}; the suite has: {'; '.join(names)}")
    measured = {}
    for path in args.reuse:
        for case in json.loads(Path(path).read_text())["cases"]:
            measured[(_name(case), case["steps"], case["every"])] = case
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    cases = []
    todo = [case for case in SUITE if case.name in wanted]
    for case in todo:
        key = (case.name, case.steps, case.every)
        if key in measured and args.dtype is None:
            print(f"== {case.name}: measured before, reused", flush=True)
            cases.append({**measured[key], "name": case.name, "why": case.why})
            continue
        print(f"== {case.name}", flush=True)
        cases.append(run_case(case, args.dtype))
        print(f"   {cases[-1]['wall_s'] / 60:.1f} min", flush=True)
        # written after every problem, so a long run that is stopped still leaves what it measured
        partial = None if len(cases) == len(todo) else f"{len(cases)} of {len(todo)} problems"
        write_report(cases, Path(args.out), started, partial)
    write_report(cases, Path(args.out), started, None)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
