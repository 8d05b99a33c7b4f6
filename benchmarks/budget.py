"""The tuned comparison at a fixed budget of gradient evaluations: per method, the best final loss
over a grid of learning rates → docs/budget.md (and ``.json``).

    python benchmarks/budget.py [--optimizers gd,adam] [--problems digits-mlp,...] [--budget 600]
                                [--methods gd,warmup,...] [--out docs/budget.md]

A practitioner tunes η for each method and compares what each reaches for the same compute. Here
every method runs on each problem, for each η of the optimizer's grid (``benchmarks/forecasts.py``'s
``GRIDS``: GD's of ``benchmarks/instability.py``, Adam's around the η where it reaches its threshold),
until its oracle calls reach the budget (``Counts.gradients``: an HVP as 2 gradients, a loss as
0.5). Its *final loss* is the full-batch loss at the last iterate reached within the budget; its
*largest spike* the largest ratio of a loss along the way to its running minimum. Methods:

* the optimizer alone (``gd``, ``adam``);
* ``warmup``: η ramped linearly from 0 over the first ``WARMUP_SHARE`` of the budget's steps;
* ``clip``: the gradient's norm clipped to ‖∇L(w₀)‖ before the optimizer sees it;
* ``oscillation_cap``: the optimizer's own step with its edge-of-stability oscillation capped and
  its loss guarded (``edgeflow.remedies.CappedRun``: one gradient a step, one more per retried step);
* the remedies of flow ``mitigated`` (GD only).

*Tuned*: a method's best final loss over η; *spike-free*: its best over the runs that never rose
``SPIKE``× above their running minimum. The goal a remedy is held to: its spike-free best at or
below the optimizer's best (spikes allowed) on the problem.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef
from edgeflow.metrics import fmt
from edgeflow.optimizers import make_optimizer
from edgeflow.processes import make_process
from edgeflow.processes.mitigated import REMEDIES
from edgeflow.remedies import CappedRun

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("forecasts", ROOT / "benchmarks" / "forecasts.py")
forecasts = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(forecasts)
GRIDS, SPIKE = forecasts.GRIDS, forecasts.SPIKE
largest_spike = forecasts.instability.largest_spike

#: the share of the budget's steps over which ``warmup`` ramps η up
WARMUP_SHARE = 1 / 6
#: the remedies this benchmark runs (the others of flow ``mitigated`` cost several gradients a step)
GD_REMEDIES = ("edge_capped",)
#: the methods that take one gradient a step, the optimizer's own
PLAIN = ("warmup", "clip", "oscillation_cap")
#: methods per optimizer: the optimizer alone first
METHODS = {"gd": ("gd", *PLAIN, *GD_REMEDIES), "adam": ("adam", *PLAIN)}

#: a run's iterates: (gradient evaluations spent when its loss was known, the loss)
Trace = Iterator[tuple[float, float]]


def plain_trace(problem: ef.Problem, optimizer: str, lr: float, method: str, budget: int) -> Trace:
    """The optimizer alone, warmed up or clipped: one gradient a step, its loss with it. Its
    ``budget``-th gradient takes a last step, whose loss is measured outside the budget (a capped
    or ``mitigated`` run's losses come with its gradients, so it ends that one step earlier)."""
    opt = make_optimizer(optimizer, lr)
    w, state = problem.w0.clone(), opt.init(problem.w0)
    clip_norm, warmup = None, max(1, round(WARMUP_SHARE * budget))
    start = problem.counts.gradients()
    for k in range(budget):
        loss, g = problem.value_and_grad(w)
        yield problem.counts.gradients() - start, float(loss)
        if method == "clip":
            norm = float(g.norm())
            clip_norm = norm if clip_norm is None else clip_norm
            g = g * min(1.0, clip_norm / norm) if norm > 0 else g
        state = opt.update(state, g)
        stepper = opt.with_lr(lr * min(1.0, (k + 1) / warmup)) if method == "warmup" else opt
        w = stepper.step(w, g, state)
    spent = problem.counts.gradients() - start
    yield spent, float(problem.loss(w))


def stepped_trace(
    problem: ef.Problem, start: float, budget: int, step: Callable[[], None], loss: Callable[[], float]
) -> Trace:
    """A run that ``step`` advances and whose current loss is ``loss()`` (evaluated by its steps),
    until its oracle calls since ``start`` (``Counts.gradients``) pass ``budget`` or the loss is no
    longer finite."""
    while True:
        spent, current = problem.counts.gradients() - start, loss()
        yield spent, current
        if spent >= budget or not math.isfinite(current):
            return
        step()


def capped_trace(
    problem: ef.Problem, optimizer: str, lr: float, budget: int, options: dict | None = None
) -> Trace:
    """The optimizer's run with its oscillation capped and its loss guarded (``CappedRun`` with
    ``options``)."""
    start = problem.counts.gradients()
    run = CappedRun(problem, make_optimizer(optimizer, lr), **(options or {}))
    return stepped_trace(problem, start, budget, run.step, lambda: run.loss)


def remedy_trace(problem: ef.Problem, lr: float, remedy: str, budget: int) -> Trace:
    """Flow ``mitigated`` with ``remedy``, stepped until its oracle calls pass the budget."""
    start = problem.counts.gradients()
    process = make_process("mitigated", problem, lr, {"remedy": remedy})
    process.init(problem.w0, seed=0)
    return stepped_trace(problem, start, budget, process.step, lambda: float(process.loss))


def run(
    problem_name: str, optimizer: str, lr: float, method: str, budget: int, cap_options: dict | None = None
) -> dict:
    problem = ef.make_problem(problem_name)
    trace: Callable[[], Trace]
    if method == "oscillation_cap":
        trace = lambda: capped_trace(problem, optimizer, lr, budget, cap_options)  # noqa: E731
    elif method == optimizer or method in PLAIN:
        trace = lambda: plain_trace(problem, optimizer, lr, method, budget)  # noqa: E731
    else:
        trace = lambda: remedy_trace(problem, lr, method, budget)  # noqa: E731
    t0 = time.perf_counter()
    spent, losses = [], []
    for cost, loss in trace():
        if cost > budget:
            break
        spent.append(cost)
        losses.append(loss)
        if not math.isfinite(loss):
            break
    losses_arr = np.array(losses)
    finite = bool(np.isfinite(losses_arr).all())
    return {
        "final_loss": float(losses_arr[-1]) if finite else None,
        "initial_loss": float(losses_arr[0]),
        "largest_spike": largest_spike(losses_arr),
        "diverged_at": None if finite else len(losses) - 1,
        "steps": len(losses) - 1,
        "gradients": float(spent[-1]),
        "wall": time.perf_counter() - t0,
    }


def trains(row: dict) -> bool:
    return row["final_loss"] is not None and row["final_loss"] < row["initial_loss"]


def tuned(rows: dict[str, dict], spike_free: bool = False) -> tuple[float, float] | None:
    """(best final loss, its η) over the runs of one method that train (and, with ``spike_free``,
    never spike); None if none does."""
    best = None
    for lr, row in rows.items():
        if not trains(row) or (spike_free and row["largest_spike"] > SPIKE):
            continue
        if best is None or row["final_loss"] < best[0]:
            best = (row["final_loss"], float(lr))
    return best


def verdicts(results: dict) -> dict:
    """Per optimizer and remedy: the problems where its spike-free best ≤ the optimizer's best."""
    out: dict = {}
    for optimizer, problems in results.items():
        for problem, methods in problems.items():
            if optimizer not in methods:
                continue
            reference = tuned(methods[optimizer])
            for method, rows in methods.items():
                if method == optimizer:
                    continue
                mine = tuned(rows, spike_free=True)
                ok = reference is not None and mine is not None and mine[0] <= reference[0]
                out.setdefault(optimizer, {}).setdefault(method, {})[problem] = ok
    return out


def against_best(problems: dict, optimizer: str) -> list[str]:
    """A table: per problem, the optimizer's best run (its η and largest spike) against each other
    method's spike-free best, as a ratio (below 1: the method reaches a lower loss without a spike)."""
    methods = [m for m in next(iter(problems.values())) if m != optimizer]
    lines = [
        f"| problem | {optimizer}'s best (η, largest spike) | "
        + " | ".join(f"{m}: spike-free best / {optimizer}'s best" for m in methods)
        + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for problem, rows in problems.items():
        reference = tuned(rows[optimizer])
        if reference is None:
            continue
        spike = rows[optimizer][next(lr for lr in rows[optimizer] if float(lr) == reference[1])][
            "largest_spike"
        ]
        cells = []
        for method in methods:
            mine = tuned(rows.get(method, {}), spike_free=True)
            cells.append("–" if mine is None else f"{mine[0] / reference[0]:.2f} (η = {mine[1]:g})")
        lines.append(
            f"| {problem} | {fmt(reference[0])} (η = {reference[1]:g}, {spike:.3g}×) | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def _best(best: tuple[float, float] | None) -> str:
    return "–" if best is None else f"{fmt(best[0])} (η = {best[1]:g})"


def markdown(results: dict, budget: int) -> str:
    lines = [
        "# The tuned comparison at a fixed budget of gradient evaluations",
        "",
        f"Generated by `python benchmarks/budget.py` (budget {budget} gradient evaluations per run); "
        "regenerate rather than edit. Every method runs over the optimizer's grid of η until its oracle "
        "calls (an HVP as 2 gradients, a loss as 0.5) reach the budget. *Best*: its lowest final loss "
        f"over η; *spike-free best*: over the runs whose loss never rose {SPIKE:g}× above its running "
        "minimum. A method *wins or ties* on a problem when its spike-free best is at most the "
        "optimizer's own best (spikes allowed).",
        "",
    ]
    wins = verdicts(results)
    for optimizer, methods in wins.items():
        lines += [f"## {optimizer}: where each method wins or ties", ""]
        for method, problems in methods.items():
            good = [p for p, ok in problems.items() if ok]
            listed = ", ".join(good) or "none"
            lines.append(f"- `{method}`: {len(good)} of {len(problems)} problems ({listed})")
        lines += ["", *against_best(results[optimizer], optimizer), ""]
    for optimizer, problems in results.items():
        for problem, methods in problems.items():
            lines += [
                f"## {problem}, {optimizer}",
                "",
                "| method | best (η) | spike-free best (η) | "
                + " | ".join(f"η = {float(lr):g}" for lr in next(iter(methods.values())))
                + " |",
                "|---|---|---|" + "---|" * len(next(iter(methods.values()))),
            ]
            for method, rows in methods.items():
                cells = []
                for row in rows.values():
                    if row["final_loss"] is None:
                        cells.append(f"diverged at step {row['diverged_at']}")
                    else:
                        spike = f", spike {row['largest_spike']:.3g}×" if row["largest_spike"] > SPIKE else ""
                        cells.append(f"{fmt(row['final_loss'])} ({row['steps']} steps{spike})")
                lines.append(
                    f"| {method} | {_best(tuned(rows))} | {_best(tuned(rows, spike_free=True))} | "
                    + " | ".join(cells)
                    + " |"
                )
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizers", default="gd,adam")
    ap.add_argument("--problems", default="digits-mlp,mnist5k-cnn,mnist5k-vit,sort-transformer")
    ap.add_argument("--methods", help="comma-separated methods (default: every one of the optimizer's)")
    ap.add_argument("--budget", type=int, default=600)
    ap.add_argument("--out", default=str(ROOT / "docs" / "budget.md"))
    ap.add_argument("--reuse", help="a JSON written by an earlier run: its runs are not repeated")
    ap.add_argument(
        "--cap-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a CappedRun option other than its default for oscillation_cap (a number, or none), "
        "e.g. rise=none or regrow=2",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    cap_options: dict = {}
    for option in args.cap_option:
        key, _, value = option.partition("=")
        try:
            cap_options[key] = None if value.lower() == "none" else float(value)
        except ValueError:
            ap.error(f"--cap-option {option!r}: expected KEY=VALUE with a number or none as VALUE")
    out = Path(args.out)
    results: dict = json.loads(Path(args.reuse).read_text()) if args.reuse else {}
    for optimizer in args.optimizers.split(","):
        methods = args.methods.split(",") if args.methods else METHODS[optimizer]
        for problem_name in args.problems.split(","):
            for method in methods:
                # flow mitigated's remedies are GD's only
                valid = list(dict.fromkeys([*METHODS[optimizer], *(REMEDIES if optimizer == "gd" else ())]))
                if method not in valid:
                    ap.error(f"unknown method {method!r} for {optimizer}; valid: {', '.join(valid)}")
                rows = results.setdefault(optimizer, {}).setdefault(problem_name, {}).setdefault(method, {})
                for lr in GRIDS[optimizer][problem_name]:
                    if str(lr) in rows:
                        continue
                    row = rows[str(lr)] = run(problem_name, optimizer, lr, method, args.budget, cap_options)
                    print(
                        f"{optimizer} {problem_name} {method} η = {lr:g}: final {row['final_loss']}, "
                        f"spike {row['largest_spike']:.3g}, {row['steps']} steps, {row['wall']:.0f} s",
                        flush=True,
                    )
                    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.write_text(markdown(results, args.budget))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
