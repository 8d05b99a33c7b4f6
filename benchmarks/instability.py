"""Instabilities at the edge of stability: the monitor's forecasts of GD's loss spikes, and GD against
the remedies of the `mitigated` flow, over a grid of learning rates → docs/instability.md.

    python benchmarks/instability.py [--problems digits-mlp,mnist5k-cnn,mnist5k-vit,sort-transformer]
                                     [--lrs 0.2,0.4,...] [--steps 600] [--out docs/instability.md]

Per problem and η (float64 for digits, the problem's dtype otherwise):
(a) GD with ``StabilityMonitor`` in the loop: GD's first loss spike (the first step whose loss is
    20% above its running minimum), the lead time of the monitor's first warning, the error of its
    ``spike_in`` forecasts from that warning on, and false warnings (a warning with no spike in the
    ``horizon`` steps after it);
(b) GD and every remedy (``ef.compare`` with flow ``mitigated``): final loss at equal steps, loss at
    equal gradient evaluations (an HVP counted as two gradients), the largest spike (max over steps
    of loss / running minimum), divergence, wall time per step relative to GD (same process).
Summaries: the largest η that trains (finite, final loss below the initial) per method. A figure
per problem: final loss against η for GD and each remedy, divergence marked. The page ends with the
conclusion of the mini-batch study (``benchmarks/minibatch.py``), read from docs/minibatch.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef
from edgeflow.metrics import fmt
from edgeflow.processes.mitigated import REMEDIES

RECOMMENDED = REMEDIES[0]  # the `mitigated` flow's default
MINIBATCH = Path(__file__).resolve().parents[1] / "docs" / "minibatch.json"
METHOD_COLORS = {
    "gd": "black",
    "edge_capped": "tab:red",
    "lr_cap": "tab:blue",
    "damped": "tab:orange",
    "edge": "tab:green",
    "warmup": "tab:purple",
    "clip": "tab:brown",
}

SPIKE = 1.2  # a loss 20% above its running minimum is a spike
MIN_LEAD = 5  # the goal: warn at least this many steps ahead
HVP_IN_GRADIENTS = 2.0
DEFAULT_LRS = {
    "digits-mlp": [0.2, 0.4, 0.8, 1.6, 3.2, 6.4],
    "mnist5k-cnn": [0.05, 0.1, 0.2, 0.4, 0.8, 1.6],
    "mnist5k-vit": [0.01, 0.02, 0.05, 0.1, 0.2, 0.4],
    "sort-transformer": [0.1, 0.25, 0.5, 1.0, 2.0, 4.0],
}


def first_spike(losses: np.ndarray) -> int | None:
    """The first step whose loss is SPIKE× above its running minimum, or not finite."""
    finite = np.isfinite(losses)
    end = int(np.flatnonzero(~finite)[0]) if not finite.all() else len(losses)
    hits = np.flatnonzero(losses[:end] > SPIKE * np.minimum.accumulate(losses[:end]))
    if hits.size:
        return int(hits[0])
    return end if end < len(losses) else None


def largest_spike(losses: np.ndarray) -> float:
    finite = losses[np.isfinite(losses)]
    return float(np.max(finite / np.minimum.accumulate(finite))) if finite.size else math.nan


def monitor_case(problem: ef.Problem, lr: float, steps: int, horizon: int) -> dict:
    """GD with the monitor in the loop; the monitor's forecasts against GD's spikes. GD runs
    ``horizon`` steps past the last monitored step so that every warning can be checked."""
    mon = ef.StabilityMonitor(problem, lr, horizon=horizon)
    w, losses, reports = problem.w0.clone(), [], []
    for k in range(steps + horizon):
        loss, grad = problem.value_and_grad(w)
        if not torch.isfinite(loss):
            losses.append(math.inf)
            break
        if k < steps:
            reports.append(mon.update(w, loss=float(loss)))
        losses.append(float(loss))
        w = w - lr * grad
    losses = np.array(losses)
    spike = first_spike(losses)
    if spike is not None and spike >= steps:
        spike = None  # in the verification window only: not one of the run's spikes
    warned = [r["step"] for r in reports if r["warning"]]
    spikes_at = [k for k in range(1, len(losses)) if not losses[k] <= SPIKE * np.min(losses[:k])]
    false = [k for k in warned if not any(k < s <= k + horizon for s in spikes_at)]
    first = next((k for k in warned if spike is None or k < spike), None)
    timely = next((k for k in warned if spike is not None and spike - horizon <= k < spike), None)
    errors = (
        [abs(r["step"] + r["spike_in"] - spike) for r in reports[timely:spike]] if timely is not None else []
    )
    return {
        "gd_spike": spike,
        "first_warning": first,
        "lead": spike - first if spike is not None and first is not None and first < spike else None,
        "timely_warning": timely,
        "timely_lead": spike - timely if timely is not None else None,
        "forecast_error_median": float(np.median(errors)) if errors else None,
        "forecast_error_max": float(np.max(errors)) if errors else None,
        "false_warnings": len(false),
        "warnings": len(warned),
    }


def remedy_cases(problem: ef.Problem, lr: float, steps: int) -> dict[str, dict]:
    gd = remedy_row(problem, lr, steps, None)
    out = {"gd": gd}
    for remedy in REMEDIES:
        out[remedy] = remedy_row(problem, lr, steps, {"remedy": remedy}, gd)
    return out


def remedy_row(
    problem: ef.Problem, lr: float, steps: int, options: dict | None, gd: dict | None = None
) -> dict:
    """GD (``options`` None) or the ``mitigated`` flow with ``options``: final loss, loss at GD's
    number of gradients, largest spike, cost; wall time against ``gd``'s (a row of this function)."""
    flows = ["gd"] if options is None else ["gd", "mitigated"]
    res = ef.compare(
        problem, lr, steps, flows, options={"mitigated": options} if options else {}, sharpness_every=steps
    )
    rec = res["gd" if options is None else "mitigated"]
    losses = rec["train_loss"]
    done = max(rec.info["steps_completed"], 1)
    cost = rec.info["cost"]
    per_step = (cost["grad"] + HVP_IN_GRADIENTS * cost["hvp"]) / done
    equal = min(int(steps / max(per_step, 1e-12)), len(losses) - 1)
    wall = rec.info["wall_time"] / done
    trained = rec.info["diverged_at"] is None
    if gd is None:
        vs_gd = 1.0 if options is None else None
    else:
        vs_gd = wall / gd["wall_per_step"] if gd["wall_per_step"] > 0 else None
    return {
        "final_loss": float(losses[-1]) if trained else None,
        "loss_at_equal_gradients": float(losses[equal]) if trained else None,
        "largest_spike": largest_spike(losses),
        "diverged_at": rec.info["diverged_at"],
        "gradients_per_step": per_step,
        "wall_per_step": wall,
        "wall_vs_gd": vs_gd,
        "initial_loss": float(losses[0]),
    }


def share_grid(problem_name: str, lrs: list[float], steps: int, shares: list[float]) -> dict:
    """``edge_capped`` at each ``max_share`` against GD, per η: the trade its docstring states."""
    rows = {}
    for lr in lrs:
        problem = ef.make_problem(problem_name)
        gd = remedy_row(problem, lr, steps, None)
        rows[lr] = {"gd": gd}
        for share in shares:
            options = {"remedy": "edge_capped", "max_share": share}
            rows[lr][share] = remedy_row(problem, lr, steps, options, gd)
        print(f"{problem_name} η = {lr:g}: max_share grid done", flush=True)
    return rows


def share_markdown(grids: dict, steps: int) -> str:
    lines = [
        "# `edge_capped`'s max_share: bumps against final loss",
        "",
        f"Generated by `python benchmarks/instability.py --max-share …` ({steps} steps per run). The "
        "remedy's r is capped at ½ρr² ≤ max_share · loss; *largest bump*: the largest loss over its "
        f"running minimum (a spike when above {SPIKE:g}); *final / GD's*: its final loss over GD's "
        "('GD diverged' where GD does not finish).",
        "",
        "| problem | η | max_share | largest bump | final loss | final / GD's | grads/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for problem, rows in grids.items():
        for lr, row in sorted(rows.items()):
            gd = row["gd"]
            lines.append(
                f"| {problem} | {lr:g} | GD | {fmt(gd['largest_spike'])} | {fmt(gd['final_loss'])} | – "
                "| 1.00 |"
            )
            for share, r in row.items():
                if share == "gd":
                    continue
                ratio = (
                    "GD diverged"
                    if gd["final_loss"] is None
                    else fmt(r["final_loss"] / gd["final_loss"] if r["final_loss"] is not None else None)
                )
                lines.append(
                    f"| {problem} | {lr:g} | {share:g} | {fmt(r['largest_spike'])} | "
                    f"{fmt(r['final_loss'])} | {ratio} | {r['gradients_per_step']:.2f} |"
                )
    return "\n".join(lines) + "\n"


def figure(problem: str, rows: dict, path: Path) -> None:
    """Final loss and largest spike against η, one line per method; a run that diverged (or ended
    more than three decades above GD's worst finite loss) is a × above the dotted line."""
    from matplotlib.ticker import FixedLocator, NullLocator

    from edgeflow.plots import add_caption, add_legend, finish_axes, new_figure, paper_style, save_figure

    lrs = sorted(rows)
    methods = ("gd", *REMEDIES)
    panels = (
        ("final_loss", "(a) Training loss after the run", "final loss"),
        ("largest_spike", "(b) Largest loss spike", "max over steps of loss / running min"),
    )
    with paper_style():
        fig, axes = new_figure(1, 2, extra_height=1.3)
        for ax, (key, title, label) in zip(axes[0], panels, strict=True):
            gd = [r[key] for lr in lrs if (r := rows[lr]["remedies"]["gd"])["diverged_at"] is None]
            finite = [y for y in gd if y is not None and math.isfinite(y)]
            ceiling = (max(finite) if finite else 1.0) * (1e3 if key == "final_loss" else 3)
            for i, method in enumerate(methods):
                runs = [rows[lr]["remedies"][method] for lr in lrs]
                ys = [r[key] for r in runs]
                ok = [
                    r["diverged_at"] is None and y is not None and math.isfinite(y) and y <= ceiling
                    for r, y in zip(runs, ys, strict=True)
                ]
                emphasis = {"color": METHOD_COLORS[method], "lw": 1.2}
                if method in ("gd", RECOMMENDED):
                    emphasis.update(lw=2, zorder=4)
                line = ax.plot(
                    [lr for lr, good in zip(lrs, ok, strict=True) if good],
                    [y for y, good in zip(ys, ok, strict=True) if good],
                    marker="o",
                    ms=4,
                    label=method,
                    **emphasis,
                )
                off = [lr for lr, good in zip(lrs, ok, strict=True) if not good]
                if off:  # one row of × per method, above the data
                    step = 3.0 if key == "final_loss" else 1.25
                    ax.plot(off, [ceiling * step ** (i + 1)] * len(off), "x", color=line[0].get_color(), ms=7)
            ax.set(xscale="log", yscale="log")
            ax.xaxis.set_major_locator(FixedLocator(lrs))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([f"{lr:g}" for lr in lrs])
            ax.axhline(ceiling, color="0.6", lw=0.8, ls=":")
            if key == "largest_spike":
                ax.axhline(SPIKE, color="0.3", lw=0.8, ls="--", label=f"spike threshold {SPIKE:g}")
            finish_axes(ax, title=title, xlabel="learning rate η", ylabel=label)
            add_legend(ax, ncols=4)
        fig.suptitle(f"{problem}: GD and the remedies of the `mitigated` flow over η")
        add_caption(
            fig,
            f"× above the dotted line: the run diverged or ended off scale. A spike is a loss {SPIKE:g}× "
            f"above its running minimum. {RECOMMENDED}: Edge Flow's symmetrized gradient, damped along the "
            "top eigenvector, its step across capped at 1.9/S; lr_cap: step ≤ 1.9/S; damped: implicit "
            "factor 1/(1 + ηS) along the top eigenvector; edge: Edge Flow's center step; warmup: linear "
            "over 100 steps; clip: gradient norm ≤ its initial value.",
        )
        save_figure(fig, path)


def markdown(results: dict, steps: int, horizon: int) -> str:
    lines = [
        "# Instabilities: forecasting GD's loss spikes, and remedies",
        "",
        f"Generated by `python benchmarks/instability.py` ({steps} steps per run). A spike is a loss "
        f"{SPIKE:g}× above its running minimum; an HVP counts as {HVP_IN_GRADIENTS:g} gradients. Wall "
        "times are measured in one process on a shared 2-core machine: read them as rough ratios.",
        "",
        f"**Monitor** (`ef.StabilityMonitor`, horizon {horizon}): GD runs {horizon} steps past the "
        "monitored ones so that every warning can be checked. *First warning*: the monitor's first "
        f"warning before GD's first spike, with its lead; *timely*: the first warning at most {horizon} "
        "steps before the spike, with its lead; the forecast error is |step + spike_in − spike| from "
        "that warning to the spike; a warning is false when no spike follows within the horizon "
        "(warnings after the first spike included).",
        "",
        "**Remedies** (flow `mitigated`, option `remedy`): `edge_capped` (the default: Edge Flow's "
        "symmetrized gradient, damped along the top eigenvector, its step across capped at 1.9/S), "
        "`lr_cap` (step ≤ 1.9/S), `damped` (Edge Flow's implicit factor along the top eigenvector), "
        "`edge` (Edge Flow's center step, uncapped), `warmup` (linear over 100 steps), `clip` (gradient "
        "norm ≤ its initial value). *At equal gradients*: the loss at the step where the method has "
        "spent as many gradient evaluations as GD in the whole run.",
        "",
        _goals(results, horizon),
        "",
    ]
    for problem, rows in results.items():
        lines += [f"## {problem}", "", f"![final loss against η](instability-{problem}.png)", ""]
        lines += [
            "| η | GD's first spike | first warning (lead) | timely warning (lead) | "
            "forecast error (median / max) | false warnings / warnings |",
            "|---|---|---|---|---|---|",
        ]
        for lr, row in sorted(rows.items()):
            m = row["monitor"]
            lines.append(
                f"| {lr:g} | {fmt(m['gd_spike'])} | {_with_lead(m['first_warning'], m['lead'])} | "
                f"{_with_lead(m['timely_warning'], m['timely_lead'])} | "
                f"{fmt(m['forecast_error_median'])} / {fmt(m['forecast_error_max'])} | "
                f"{m['false_warnings']} / {m['warnings']} |"
            )
        lines += [
            "",
            "| η | method | final loss | at equal gradients | largest spike | diverged at | grads/step | "
            "wall vs GD |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for lr, row in sorted(rows.items()):
            for method, r in row["remedies"].items():
                lines.append(
                    f"| {lr:g} | {method} | {fmt(r['final_loss'])} | {fmt(r['loss_at_equal_gradients'])} | "
                    f"{fmt(r['largest_spike'])} | {fmt(r['diverged_at'])} | {r['gradients_per_step']:.2f} | "
                    f"{fmt(r['wall_vs_gd'])} |"
                )
        lines += ["", "Largest η that trains (finite, final loss below the initial):", ""]
        for method in ("gd", *REMEDIES):
            ok = [lr for lr, row in rows.items() if _trains(row["remedies"][method])]
            lines.append(f"- {method}: {max(ok):g}" if ok else f"- {method}: none")
        lines.append("")
    return "\n".join(lines + minibatch_section())


def minibatch_section() -> list[str]:
    """The mini-batch study's conclusion as benchmarks/minibatch.py wrote it into docs/minibatch.json
    (that benchmark, not this one, measures it; rerunning it rewrites both pages' sources)."""
    lines = [
        "## Mini-batch training",
        "",
        "Spikes matter most in mini-batch training. [docs/minibatch.md](minibatch.md) (`python "
        "benchmarks/minibatch.py`) trains digits-mlp and mnist5k-cnn with torch.optim's SGD and Adam at "
        "batch sizes from full down to 32, judges spikes on the full-batch loss, and asks whether the "
        "full-batch effective sharpness (the monitor's forecast, and the plain rule a ≥ threshold) still "
        "forecasts them, and whether the batch sharpness of Andreyev & Beneventano (arXiv 2412.20553), "
        "E_B[g_BᵀH_Bg_B/‖g_B‖²] in the optimizer's frame (`batch_size=` on the monitor), forecasts "
        "better. Its conclusion, as measured (F1: the harmonic mean of recall and precision):",
        "",
    ]
    if not MINIBATCH.exists():
        return [*lines, f"(not measured: {MINIBATCH.name} is missing; run benchmarks/minibatch.py)", ""]
    measured = json.loads(MINIBATCH.read_text())
    if "conclusion" not in measured:
        raise SystemExit(
            f"{MINIBATCH} has runs but no conclusion (a run still under way, or stopped): finish it with "
            f"`python benchmarks/minibatch.py --reuse {MINIBATCH}`"
        )
    return [*lines, *measured["conclusion"], ""]


def _trains(r: dict) -> bool:
    return r["final_loss"] is not None and r["final_loss"] < r["initial_loss"]


def _with_lead(step: int | None, lead: int | None) -> str:
    if step is None:
        return "–"
    return str(step) if lead is None else f"{step} ({lead})"


def _goals(results: dict, horizon: int) -> str:
    """The issue's goals, checked on every problem and η of this run: where each holds and where
    it fails."""
    lead_ok, lead_bad, quiet_ok, quiet_bad, immediate = [], [], [], [], []
    no_spike, spiky, trains, fails, close, far = [], [], [], [], [], []
    for problem, rows in results.items():
        for lr, row in sorted(rows.items()):
            case = f"{problem} η = {lr:g}"
            m, gd, rec = row["monitor"], row["remedies"]["gd"], row["remedies"][RECOMMENDED]
            if m["gd_spike"] is None:
                # a warning followed by a spike in the steps after the run is not a false one
                (quiet_ok if m["false_warnings"] == 0 else quiet_bad).append(case)
            elif m["gd_spike"] < MIN_LEAD:
                immediate.append(f"{case} (step {m['gd_spike']})")
            else:
                ok = m["lead"] is not None and MIN_LEAD <= m["lead"] <= 100
                (lead_ok if ok else lead_bad).append(f"{case} ({fmt(m['lead'])})")
            if gd["diverged_at"] is not None:
                (trains if _trains(rec) else fails).append(case)
                continue
            if gd["largest_spike"] >= SPIKE:
                spike_gone = rec["diverged_at"] is None and rec["largest_spike"] < SPIKE
                (no_spike if spike_gone else spiky).append(f"{case} ({fmt(rec['largest_spike'])})")
            ratio = rec["final_loss"] / gd["final_loss"] if rec["final_loss"] is not None else math.inf
            (close if ratio <= 1.5 else far).append(f"{case} ({ratio:.2f}×)")

    def line(label: str, ok: list[str], bad: list[str]) -> str:
        return f"- {label}: holds at {len(ok)} of {len(ok) + len(bad)}" + (
            f"; fails at {', '.join(bad)}" if bad else ""
        )

    return "\n".join(
        [
            "**Goals**, checked on this run:",
            "",
            line("the monitor's first warning 5–100 steps before GD's first spike (lead)", lead_ok, lead_bad),
            line("no false warning where GD does not spike in the run", quiet_ok, quiet_bad),
            f"- not counted: GD's loss spikes within its first {MIN_LEAD} steps (it is unstable from the "
            f"start, nothing to forecast) at {', '.join(immediate) or 'no η'}",
            line(f"`{RECOMMENDED}` removes the spikes where GD spikes (its largest spike)", no_spike, spiky),
            line(f"`{RECOMMENDED}` trains where GD diverges", trains, fails),
            line(f"`{RECOMMENDED}`'s final loss ≤ 1.5× GD's (ratio)", close, far),
        ]
    )


def write(results: dict, out: Path, steps: int, horizon: int) -> None:
    for problem_name, rows in results.items():
        figure(problem_name, rows, out.parent / f"instability-{problem_name}.png")
    out.write_text(markdown(results, steps, horizon))
    store = out.with_suffix(".json")
    store.write_text(json.dumps({p: {str(k): v for k, v in r.items()} for p, r in results.items()}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="digits-mlp,mnist5k-cnn,mnist5k-vit,sort-transformer")
    ap.add_argument("--lrs", help="comma-separated η (default: a grid per problem)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--horizon", type=int, default=50)
    ap.add_argument("--out", default="docs/instability.md")
    ap.add_argument(
        "--reuse", help="a JSON written by an earlier run: its problems are not run again (tables redrawn)"
    )
    ap.add_argument(
        "--monitor-only",
        action="store_true",
        help="with --reuse: run the monitor's part again on every problem of it, keep its remedies",
    )
    ap.add_argument(
        "--max-share",
        help="comma-separated max_share values: run only edge_capped at each (and GD) and write "
        "docs/instability_max_share.md",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.max_share:
        shares = [float(x) for x in args.max_share.split(",")]
        grids = {}
        for name in args.problems.split(","):
            lrs = [float(x) for x in args.lrs.split(",")] if args.lrs else DEFAULT_LRS[name]
            grids[name] = share_grid(name, lrs, args.steps, shares)
        page = Path(args.out).with_name("instability_max_share.md")
        page.write_text(share_markdown(grids, args.steps))
        print(f"wrote {page}")
        return
    out = Path(args.out)
    results: dict = json.loads(Path(args.reuse).read_text()) if args.reuse else {}
    results = {p: {float(lr): row for lr, row in rows.items()} for p, rows in results.items()}
    if args.monitor_only:
        if not args.reuse:
            ap.error("--monitor-only needs --reuse (the remedies' rows it keeps)")
        for problem_name, rows in results.items():
            for lr, row in rows.items():
                row["monitor"] = monitor_case(ef.make_problem(problem_name), lr, args.steps, args.horizon)
                print(f"{problem_name} η = {lr:g}: monitor done", flush=True)
            write(results, out, args.steps, args.horizon)
    for problem_name in args.problems.split(","):
        if problem_name in results:
            continue
        lrs = [float(x) for x in args.lrs.split(",")] if args.lrs else DEFAULT_LRS[problem_name]
        rows = {}
        for lr in lrs:
            t0 = time.time()
            problem = ef.make_problem(problem_name)
            rows[lr] = {"monitor": monitor_case(problem, lr, args.steps, args.horizon)}
            rows[lr]["remedies"] = remedy_cases(problem, lr, args.steps)
            print(f"{problem_name} η = {lr:g}: {time.time() - t0:.0f} s", flush=True)
        results[problem_name] = rows
        write(results, out, args.steps, args.horizon)  # after each problem: a long run keeps its part
    write(results, out, args.steps, args.horizon)  # also redraws the tables and figures of --reuse
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
