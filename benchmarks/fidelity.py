"""How faithfully each continuous-time model tracks GD, on the standard suite, side by side.
Regenerates ``docs/results.md`` (and ``docs/results.json``).

    python benchmarks/fidelity.py                          # the whole suite (see SUITE; hours on 2 cores)
    python benchmarks/fidelity.py --problems zhu,quartic --out /tmp/results.md
    python benchmarks/fidelity.py --rows edge,edge-k1      # only these rows (the others are left out)
    python benchmarks/fidelity.py --reuse docs/results.json    # only what is not measured there
    python benchmarks/fidelity.py --no-refine --rows edge,edge-pair --out /tmp/k2.md   # as run by default

Every row (a flow with its options, see ROWS) runs in a ``compare`` call with GD (same problem,
same η, same records; rows of distinct flows share one call), then again with its sub-steps
doubled, and doubled again while that still moves it: a row is reported at the first resolution
whose doubling moves its trajectory (median over records, relative to GD's travel ‖w* − w₀‖) by
less than a tenth of its distance to GD or by less than 1e-3 — so the errors reported are the
model's, not the integrator's. Every number in the output is measured here; a run that reuses
rows of an earlier one says which in the page header.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef
from edgeflow.metrics import REFERENCE, fidelity, summarize
from edgeflow.optimizers import make_optimizer
from edgeflow.processes import process_class
from edgeflow.results import FlowRecord
from edgeflow.zoo import problem_params

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    """One line of the fidelity table: a flow with its options."""

    key: str  # its name in results.json
    flow: str
    options: dict = field(default_factory=dict)
    refine: bool = True  # double the sub-steps until the trajectory stops moving
    label: str = ""  # its name in the report (default: the flow's)

    @property
    def name(self) -> str:
        return self.label or self.flow


ROWS = (
    Row("edge", "edge"),
    Row("edge-gradient", "edge", {"center": "gradient"}, label="edge, gradient center"),
    Row("edge-k1", "edge", {"substeps": 1}, refine=False, label="edge, one sub-step"),
    Row("edge-pair", "edge", {"hvp": "pair"}, label="edge, HVP from the pair"),
    Row("edge-pair-center", "edge", {"hvp": "pair+center"}, label="edge, HVP from the pair, ∇L(c)"),
    Row(
        "edge-k1-secant",
        "edge",
        {"substeps": 1, "implicit": "secant"},
        refine=False,
        label="edge, one sub-step, secant-implicit",
    ),
    Row(
        "edge-k1-pair-secant",
        "edge",
        {"substeps": 1, "hvp": "pair", "implicit": "secant"},
        refine=False,
        label="edge, one sub-step, HVP from the pair, secant-implicit",
    ),
    Row("central", "central"),
    Row("gradient", "gradient"),
    Row("modified", "modified"),
)
ROW_KEYS = tuple(row.key for row in ROWS)
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
    lr: float | None = None  # default: the problem's for the optimizer
    levels_from: str = ""  # start every row at the sub-steps reported for that case (no doubling)
    optimizer: str = "gd"  # what flow ``gd`` runs and every row models
    warm_start: int = 0  # plain optimizer steps before every flow starts
    rows: tuple[str, ...] = ()  # only these rows (default: every row whose flow models the optimizer)

    @property
    def name(self) -> str:
        return self.label or self.problem


#: the models of an optimizer other than GD: Edge Flow, the central flow and the stable flow
RMSPROP_ROWS = ("edge", "central", "gradient")

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
        levels_from="digits-mlp",
        why="the same, 300 steps deeper into EoS (each flow at the sub-steps reported on the 300-step case)",
    ),
    Case(
        "mnist5k-cnn",
        260,
        every=5,
        max_doublings=1,
        lr=0.15,
        why="a CNN on real images (registry sizes) at an η where GD starts well below the edge "
        "(S₀ ≈ 9.3 = 0.70 × 2/η) and sharpens to it; at the registry's η = 0.2 it starts at 0.93 × 2/η",
    ),
    Case("mnist5k-vit", 160, every=5, max_doublings=1, why="a ViT with LayerNorm (registry defaults)"),
    *(
        Case(
            problem,
            steps,
            every=5,
            max_doublings=1,
            label=f"{problem}-rmsprop",
            lr=lr,
            optimizer="rmsprop",
            warm_start=20,
            rows=RMSPROP_ROWS,
            why=f"RMSProp (β₂ = 0.99, ε = 1e-7) after 20 warm-up steps, which leave λ₁(P⁻¹H) {why}",
        )
        for problem, steps, lr, why in (
            ("digits-mlp", 300, 5e-4, "at 0.29 × the threshold: it crosses at ~120 and overshoots to ~1.9×"),
            ("mnist5k-cnn", 260, 3e-4, "at 0.79 × the threshold: it crosses at ~40 and overshoots to ~1.2×"),
            ("mnist5k-vit", 160, 6e-4, "at 0.56 × the threshold: it crosses at ~40 and overshoots to ~1.6×"),
        )
    ),
)


#: the models of a momentum optimizer: Edge Flow and the stable flow (no central flow)
MOMENTUM_ROWS = ("edge", "gradient")
MOMENTUM_SUITE = (
    # (problem, optimizer, steps, η (None: the registry's), warm start, what the discrete run does)
    ("digits-mlp", "momentum", 300, None, 0, "crosses at ~160 and overshoots by 4%"),
    ("mnist5k-cnn", "momentum", 200, 0.19, 0, "crosses at ~110, overshoots by 9%, then falls to 0.6×"),
    ("mnist5k-vit", "momentum", 200, 0.068, 0, "starts at 0.81×, crosses at ~130 and overshoots by 19%"),
    ("sort-transformer", "momentum", 300, None, 0, "crosses at ~25 and catapults to 1.9×"),
    ("digits-mlp", "adam", 300, 0.003, 20, "starts at 0.1× and crosses at ~145, overshoots by 8%"),
    ("mnist5k-cnn", "adam", 200, 0.01, 20, "starts at 0.37× and crosses at ~90, overshoots by 8%"),
    ("mnist5k-vit", "adam", 200, 0.095, 20, "starts at 0.15×, crosses at ~55 and overshoots to 2.2×"),
    (
        "sort-transformer",
        "adam",
        300,
        0.04,
        20,
        "starts at the threshold, catapults to 2.6× at ~35, then learns the task (0.01× over the last third)",
    ),
)
SUITE = (
    *SUITE,
    *(
        Case(
            problem,
            steps,
            every=5,
            max_doublings=1,
            label=f"{problem}-{optimizer}",
            lr=lr,
            optimizer=optimizer,
            warm_start=warm,
            rows=MOMENTUM_ROWS,
            why=(
                f"{'heavy-ball momentum (β = 0.9)' if optimizer == 'momentum' else 'Adam (torch defaults)'}"
                f"{f' after {warm} warm-up steps' if warm else ''}: λ₁(P⁻¹H) {why}"
            ),
        )
        for problem, optimizer, steps, lr, warm, why in MOMENTUM_SUITE
    ),
)


def case_rows(case: Case, rows: list[Row]) -> list[Row]:
    """The rows of ``rows`` this case runs: those it names (default all), whose flows model its optimizer."""
    return [
        row
        for row in rows
        if (not case.rows or row.key in case.rows)
        and case.optimizer in (process_class(row.flow).optimizers or (case.optimizer,))
    ]


def case_lr(case: Case) -> float:
    return case.lr or ef.PROBLEMS[case.problem].lr_for(case.optimizer)


def fixed_step(case: Case, row: Row) -> bool:
    """Whether the row runs at its own sub-steps whatever the case asks: Edge Flow with a momentum
    is the optimizer's own step at Δt = 1 (docs/edge_flow.md); more sub-steps are another model
    (the stable flow's ODE on the symmetrized loss), not a finer one."""
    return row.flow == "edge" and make_optimizer(case.optimizer, 1.0).momentum_key is not None


def refined_options(row: Row, doublings: int, fixed: bool = False) -> dict:
    """The row's options with its flow's sub-steps doubled ``doublings`` times (``fixed``: as given,
    Edge Flow's default one sub-step with a momentum)."""
    if fixed:
        return {**row.options, "substeps": row.options.get("substeps", 1)}
    defaults = _defaults(row.flow)
    if "substeps" in defaults:
        base = row.options.get("substeps", defaults["substeps"])
        return {**row.options, "substeps": base * 2**doublings}
    if "substep_rate" in defaults:  # RK4 sub-steps are sized so that rate·Δt ≤ substep_rate
        rate = row.options.get("substep_rate", defaults["substep_rate"])
        return {**row.options, "substep_rate": rate / 2**doublings}
    raise ValueError(f"flow {row.flow!r} has no sub-step option to refine")


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


#: options whose default (None) the flow resolves per optimizer, at their values for GD and RMSProp:
#: the values every row measured before they became optimizer-dependent ran with
RESOLVED_DEFAULTS = {"edge": {"center": "modified", "substeps": 2}}


def _defaults(flow: str) -> dict:
    params = inspect.signature(process_class(flow).__init__).parameters
    defaults = {name: p.default for name, p in params.items() if name not in ("self", "problem", "lr")}
    return {**defaults, **RESOLVED_DEFAULTS.get(flow, {})}


def model_options(row: Row) -> dict:
    """Every constructor option of the row's flow, defaults filled in, at its starting sub-steps: a
    row measured by an earlier run is reused only where these are the same."""
    return json.loads(json.dumps({**_defaults(row.flow), **row.options}, default=str))


def same_model(row: Row, earlier: dict | None) -> bool:
    """Whether an earlier run measured ``row`` with its options. An option added to the flow since
    then counts as what that run had at its default: a new option's default keeps the flow as it was."""
    if earlier is None:
        return False
    then = json.loads(json.dumps({**_defaults(row.flow), **earlier}, default=str))
    return then == model_options(row)


def batches(rows: list[Row]) -> list[list[Row]]:
    """Rows grouped so that no flow appears twice in a group: one ``compare`` call per group."""
    groups: list[list[Row]] = []
    for row in rows:
        group = next((g for g in groups if all(r.flow != row.flow for r in g)), None)
        if group is None:
            groups.append([row])
        else:
            group.append(row)
    return groups


def run_case(case: Case, rows: list[Row], dtype: str | None, start: dict[str, int]) -> dict:
    """Every row at its starting sub-steps (``start``: row key → doublings, default 0), then doubled
    until its trajectory stops moving."""
    lr = case_lr(case)
    t0 = time.perf_counter()

    def run(todo: list[Row], level: dict[str, int]) -> dict[str, ef.Result]:
        out = {}
        for group in batches(todo):
            problem = ef.make_problem(case.problem, dtype=dtype, **case.params)
            res = ef.compare(
                problem,
                lr,
                case.steps,
                ("gd", REFERENCE, *(row.flow for row in group)),
                options={
                    row.flow: refined_options(row, level[row.key], fixed_step(case, row)) for row in group
                },
                record_every=case.every,
                sharpness_every=case.every,
                save_params=True,
                progress=True,
                optimizer=case.optimizer,
                warm_start=case.warm_start,
            )
            out.update({row.key: res for row in group})
        return out

    level = {row.key: start.get(row.key, 0) for row in rows}
    current = run(rows, level)  # each row's result at its finest level so far
    base = next(iter(current.values()))
    changes: dict[str, list[tuple[float, float]]] = {row.key: [] for row in rows}
    pending = [row for row in rows if row.refine and not fixed_step(case, row)]
    for _ in range(case.max_doublings):
        if not pending:
            break
        finer = run(pending, {row.key: level[row.key] + 1 for row in pending})
        for row in list(pending):
            change = trajectory_change(current[row.key], finer[row.key], row.flow)
            changes[row.key].append(change)
            dist = fidelity(current[row.key])[row.flow].get("distance_median") or 0.0
            if change[0] <= max(CONVERGED_FRACTION * dist, CONVERGED_FLOOR):
                pending.remove(row)  # converged at the current level: report it there
            else:
                current[row.key], level[row.key] = finer[row.key], level[row.key] + 1
    wall = time.perf_counter() - t0

    flows = {REFERENCE: {**fidelity(base)[REFERENCE], "resolution": "exact"}}
    for row in rows:
        res = current[row.key]
        rec = res[row.flow]
        done = max(rec.info["steps_completed"], 1)
        options = refined_options(row, level[row.key], fixed_step(case, row))
        checked = row.refine and case.max_doublings > 0 and not fixed_step(case, row)
        flows[row.key] = {
            **fidelity(res)[row.flow],
            "flow": row.flow,
            "label": row.name,
            "model": model_options(row) if not fixed_step(case, row) else {**model_options(row), **options},
            "doublings": level[row.key],
            "options": options,
            "resolution": resolution(rec, options),
            "diverged_at": rec.info["diverged_at"],
            "wall_vs_gd": summarize(res)["flows"][row.flow]["wall_vs_gd"],
            "per_step": {k: v / done for k, v in rec.info["cost"].items()},
            "doubling_changes": changes[row.key],
            "converged": (row not in pending) if checked else None,
        }
    return {
        "name": case.name,
        "problem": case.problem,
        "why": case.why,
        "params": {**problem_params(case.problem), **case.params},
        "lr": lr,
        "optimizer": case.optimizer,
        "warm_start": case.warm_start,
        "threshold": base.threshold,
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


def _gd_onset(case: dict, flow: str) -> dict:
    """GD's onset in the run that measured ``flow``: GD's own course at EoS moves with the rounding
    of the machine it ran on (its first peak on digits-mlp by 0.4% between two CPUs), so a row reused
    from an earlier run is compared with the GD of that run."""
    return case["flows"][flow].get("gd_onset", case["gd_onset"])


def _onset_errors(case: dict, flow: str) -> tuple[str, str]:
    gd, own = _gd_onset(case, flow), case["flows"][flow]["onset"]
    cross = "–" if own["cross"] is None or gd["cross"] is None else f"{own['cross'] - gd['cross']:+d}"
    if own["peak"] is None:
        peak = "none"
    elif gd["peak"] is None:
        peak = f"{own['peak']:.4g} @{own['peak_step']} (GD: none)"
    else:
        err = (own["peak"] - gd["peak"]) / case["threshold"]
        peak = f"{err:+.3f} @{own['peak_step'] - gd['peak_step']:+d}"
    return cross, peak


def _rows(case: dict) -> list[str]:
    """The case's row keys in ROWS order (an earlier results.json may have fewer)."""
    return [key for key in ROW_KEYS if key in case["flows"]]


def _label(case: dict, key: str) -> str:
    return case["flows"][key].get("label", key)


def fidelity_table(cases: list[dict]) -> list[str]:
    lines = [
        "| problem | flow (sub-steps) | rel. distance | mean-loss error | sharpness error / threshold | "
        "onset Δstep | 1st peak error / threshold (Δstep) | period (GD's) | cost vs GD | "
        "grads + HVPs + 3rd / step | Δ on doubling (med / max) |",
        "|" + "---|" * 11,
    ]
    for case in cases:
        for key in _rows(case):
            row = case["flows"][key]
            gd_period = _gd_onset(case, key)["period"]
            cross, peak = _onset_errors(case, key)
            per = row["per_step"]
            ops = f"{per['grad']:.3g} + {per['hvp']:.3g} + {per['third']:.3g}"
            last = row["doubling_changes"][-1] if row["doubling_changes"] else (None, None)
            mark = {True: "", False: " — not converged", None: " — not checked"}[row["converged"]]
            lines.append(
                f"| {_name(case)} | {_label(case, key)} ({row['resolution']}) | {_pair(row, 'distance')} | "
                f"{_pair(row, 'mean_loss')} | {_pair(row, 'sharpness')} | {cross} | {peak} | "
                f"{_f(row['onset']['period'])} ({_f(gd_period)}) | {_f(row['wall_vs_gd'], '.3g')} | {ops} | "
                f"{_f(last[0])} / {_f(last[1])}{mark} |"
            )
    return lines


def onset_table(cases: list[dict]) -> list[str]:
    lines = [
        "| problem | threshold | flow | crosses it | first peak (step) | dip (step) | period |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        by_onset: dict[str, tuple[dict, set]] = {}  # GD's onset → the runs that measured it
        for key in _rows(case):
            o = _gd_onset(case, key)
            by_onset.setdefault(json.dumps(o, sort_keys=True), (o, set()))[1].add(
                case["flows"][key].get("measured", "?")
            )
        gd_rows = [("GD (midpoint)", case["gd_onset"])]
        if len(by_onset) > 1:
            gd_rows = [
                (f"GD (midpoint), run{'s' if len(runs) > 1 else ''} of {', '.join(sorted(runs))}", o)
                for o, runs in sorted(by_onset.values(), key=lambda item: min(item[1]))
            ]
        rows = [*gd_rows, *((_label(case, key), case["flows"][key]["onset"]) for key in _rows(case))]
        for name, o in rows:
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
        if not {"edge", "central"} <= case["flows"].keys():
            continue
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


def _verdict(edge: float | None, bound: float | None) -> str:
    if edge is None or bound is None:
        return "–"
    return f"{'met' if edge <= bound else 'not met'} ({_f(edge)} vs {_f(bound)})"


def goals_table(cases: list[dict]) -> list[str]:
    """Edge Flow's distance to GD's midpoint against half of gradient flow's and against the
    central flow's, over the run and over the EoS window."""
    lines = [
        "| problem | window | Edge Flow ≤ ½ × gradient flow | Edge Flow ≤ central flow |",
        "|---|---|---|---|",
    ]
    for case in cases:
        flows = case["flows"]
        if not {"edge", "gradient"} <= flows.keys():
            continue
        for window, suffix in (("run", "median"), ("EoS", "eos_median")):
            edge = flows["edge"].get(f"distance_{suffix}")
            gradient = flows["gradient"].get(f"distance_{suffix}")
            half = None if gradient is None else 0.5 * gradient
            central = flows.get("central", {}).get(f"distance_{suffix}")  # none for a momentum
            lines.append(f"| {_name(case)} | {window} | {_verdict(edge, half)} | {_verdict(edge, central)} |")
    return lines


def _optimizer(case: dict) -> str:
    name = case.get("optimizer", "gd")  # results.json files written before the optimizer axis: GD
    warm = case.get("warm_start", 0)
    return f"{name}, warm start {warm}" if warm else name


def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} thread{'' if n == 1 else 's'}"


def _reused(cases: list[dict], started: str) -> list[str]:
    """'date: problem, problem: row, …' for what earlier runs measured, one item per run."""
    by_run: dict[str, list[str]] = {}
    for case in cases:
        when = {key: case["flows"][key].get("measured", started) for key in _rows(case)}
        earlier = {key: w for key, w in when.items() if w != started}
        if earlier and len(set(when.values())) == 1:
            by_run.setdefault(next(iter(earlier.values())), []).append(_name(case))
            continue
        for key, w in earlier.items():
            by_run.setdefault(w, []).append(f"{_name(case)}: {_label(case, key)}")
    return [f"{when}: {', '.join(what)}" for when, what in sorted(by_run.items())]


def write_report(
    cases: list[dict], out: Path, started: str, partial: str | None, refined: bool = True
) -> None:
    reused = _reused(cases, started)
    lines = [
        "# Fidelity of the continuous-time models of GD",
        "",
        *([f"**Partial: {partial} measured so far.**", ""] if partial else []),
        *(
            []
            if refined
            else [
                "**Not refined (`--no-refine`): every row at its own sub-steps, without doubling** — "
                "the flows as `edgeflow run` runs them with these options, not the converged models "
                "of the suite's results.md.",
                "",
            ]
        ),
        *(
            [f"Not measured in this file (run them with `--problems`): {', '.join(missing)}.", ""]
            if (missing := [c.name for c in SUITE if c.name not in {_name(x) for x in cases}])
            else []
        ),
        f"Generated by `python benchmarks/fidelity.py` (written {started}; edgeflow {ef.__version__}, "
        f"torch {torch.__version__}, {platform.machine()}, {_threads()}, CPU); "
        "each problem's wall time is in the first table. Regenerate it rather than edit it.",
        "",
        *(
            [
                "Measured by earlier runs of this script with the same options for each flow, and "
                "combined here with `--reuse` (each run's start: what it measured): "
                + "; ".join(reused)
                + ". Each row's onset errors are against GD as measured in the run of that row: GD's own "
                "course at EoS moves with the rounding of the machine it ran on, and where it moved the "
                "onset table lists GD's onset from each run.",
                "",
            ]
            if reused
            else []
        ),
        "Each problem runs GD, its midpoint w*_k (GD's center), Edge Flow, the central flow, gradient "
        "flow and the modified flow from the same w₀ with the problem's η; Edge Flow also as it was "
        "before its O(η) correction ('edge, gradient center': the center follows gradient flow on the "
        "symmetrized loss, the magnitude is not delayed), with one sub-step per GD step ('edge, "
        "one sub-step'), without HVPs ('HVP from the pair') and with one sub-step and the center's "
        "explicit step damped along its recent moves ('secant-implicit'), see "
        "[edge_flow.md](edge_flow.md). Errors are "
        "against GD at the same step: relative distance ‖c − w*‖/‖w* − w₀‖; mean-loss error "
        "|L̄_F − L̄_GD|/L̄_GD with L̄_GD = ½[L(w_k) + L(w_{k+1})] and L̄_F the flow's prediction of it "
        "(Edge Flow `predicted_mean_loss`, central flow L + tr Σ/η, the others L(c)); sharpness "
        "error |S_F − S(w*)| as a fraction of the threshold 2/η. Each cell is the median over the run / "
        "over the EoS window (from GD's first crossing of the threshold). Onset: the flow's first "
        "crossing of the threshold minus GD's; the first overshoot peak's height error as a fraction "
        "of the threshold and its step offset ('none': the flow "
        "has no overshoot); the period of the sharpness oscillation after the crossing. Cost: wall "
        "time per GD step against GD's, stepped in the same process (sharpness measurements excluded). "
        "Δ on doubling: the median / max over records of ‖c_K − c_2K‖/‖w* − w₀‖ when the flow's "
        "sub-steps are doubled. Each flow is reported at the first resolution whose doubling moves it "
        f"by a median below {CONVERGED_FRACTION:g}× its distance to GD or below {CONVERGED_FLOOR:g} "
        "(sub-steps in the flow column; the RK4 flows choose theirs from the sharpness, the median is "
        "shown); 'not converged' marks a flow still moving at the finest resolution tried.",
        "",
        "Problems with another optimizer than GD (RMSProp: ν ← β₂ν + (1 − β₂)g⊙g, bias-corrected, "
        "w ← w − η g/(√ν̂ + ε)) read the same with GD standing for that optimizer's discrete run: "
        "its midpoints are the reference, the sharpness is the effective sharpness λ₁(P⁻¹H) with "
        "P = (√ν̂ + ε)/η, the threshold is the optimizer's (2 for RMSProp) and 'gradient' is the "
        "stable flow dw/dt = −P⁻¹∇L with ν's own ODE (see [optimizers.md](optimizers.md)); the "
        "modified flow models GD alone and has no row there. Heavy-ball momentum (threshold 2 + 2β "
        "= 3.8 on ηS) and Adam ((2 + 2β₁)/(1 − β₁) = 38 on λ₁(P⁻¹H), P = diag(√ν̂ + ε)/η) read the "
        "same; their stable flow carries the momentum's ODE too, the central flow has no row (not "
        "derived for a momentum), and Edge Flow runs at its own step, one per optimizer step (its "
        "center is the optimizer on the symmetrized loss, [edge_flow.md](edge_flow.md#with-a-momentum-"
        "heavy-ball-nesterov-and-adam)), not refined.",
        "",
        "## Problems",
        "",
        "| problem | optimizer | η (threshold) | steps | records every | d | dtype | parameters "
        "| what it shows | wall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        params = ", ".join(f"{k}={v}" for k, v in c["params"].items() if v is not None)
        lines.append(
            f"| {_name(c)} | {_optimizer(c)} | {c['lr']:g} ({c['threshold']:.4g}) | {c['steps']} | "
            f"{c['every']} | {c['dim']} | {c['dtype']} | {params} | {c['why']} | {c['wall_s'] / 60:.1f} min |"
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
        "## Goals",
        "",
        "Edge Flow's distance to GD's midpoint (median over the run and over the EoS window) against "
        "half of gradient flow's and against the central flow's:",
        "",
        *goals_table(cases),
        "",
    ]
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"started": started, "cases": cases}, indent=2) + "\n")


def level_of(row: Row, options: dict) -> int:
    """How many doublings of the row's sub-steps ``options`` (as reported) are."""
    for doublings in range(8):
        if refined_options(row, doublings) == options:
            return doublings
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [c.name for c in SUITE]
    ap.add_argument("--problems", default=",".join(names), help=f"subset of: {'; '.join(names)}")
    ap.add_argument("--rows", default=",".join(ROW_KEYS), help=f"subset of: {', '.join(ROW_KEYS)}")
    ap.add_argument("--dtype", default=None, help="override every problem's dtype")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    ap.add_argument(
        "--reuse",
        nargs="*",
        default=[],
        metavar="JSON",
        help="results.json files of earlier runs of this script: a row measured there on the same "
        "problem (steps, record interval, η) with the same options is kept instead of being run again",
    )
    ap.add_argument(
        "--no-refine",
        action="store_true",
        help="every row at its own sub-steps (the flow's default unless the row sets them), no doubling",
    )
    args = ap.parse_args()
    if args.no_refine and args.reuse:
        ap.error("--no-refine reports rows as run, --reuse keeps the refined rows of earlier runs: pick one")
    wanted = [p.strip() for p in args.problems.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in names]
    if unknown:
        ap.error(f"unknown problem(s) {', '.join(unknown)}; the suite has: {'; '.join(names)}")
    row_keys = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in row_keys if r not in ROW_KEYS]
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}; the rows are: {', '.join(ROW_KEYS)}")
    rows = [row for row in ROWS if row.key in row_keys]
    measured = {}
    for path in args.reuse:
        earlier = json.loads(Path(path).read_text())
        for case in earlier["cases"]:
            for flow in case["flows"].values():
                flow.setdefault("measured", earlier["started"])
            measured[(_name(case), case["steps"], case["every"], case["lr"])] = case
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    cases: list[dict] = []
    todo = [case for case in SUITE if case.name in wanted]
    if args.no_refine:
        todo = [replace(case, max_doublings=0) for case in todo]
    for case in todo:
        lr = case_lr(case)
        old = measured.get((case.name, case.steps, case.every, lr)) if args.dtype is None else None
        mine = case_rows(case, rows)
        keep = [row for row in mine if old and same_model(row, old["flows"].get(row.key, {}).get("model"))]
        run_rows = [row for row in mine if row not in keep]
        print(f"== {case.name}: {len(keep)} rows reused, {len(run_rows)} to run", flush=True)
        start = {}
        if case.levels_from:
            source = next((c for c in cases if _name(c) == case.levels_from), None)
            if source is None:
                ap.error(f"{case.name} takes its sub-steps from {case.levels_from}: run both")
            start = {
                row.key: level_of(row, source["flows"][row.key]["options"])
                for row in run_rows
                if row.key in source["flows"]
            }
        result = run_case(case, run_rows, args.dtype, start) if run_rows else None
        if result is None:
            result = {**old, "flows": {REFERENCE: old["flows"][REFERENCE]}}
        for row in run_rows:
            result["flows"][row.key]["measured"] = started
            result["flows"][row.key]["gd_onset"] = result["gd_onset"]
        result["flows"][REFERENCE].setdefault("measured", started)
        for row in keep:
            result["flows"][row.key] = {"gd_onset": old["gd_onset"], **old["flows"][row.key]}
        result.update(name=case.name, why=case.why)
        cases.append(result)
        print(f"   {result['wall_s'] / 60:.1f} min", flush=True)
        # written after every problem, so a long run that is stopped still leaves what it measured
        partial = None if len(cases) == len(todo) else f"{len(cases)} of {len(todo)} problems"
        write_report(cases, Path(args.out), started, partial, refined=not args.no_refine)
    write_report(cases, Path(args.out), started, None, refined=not args.no_refine)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
