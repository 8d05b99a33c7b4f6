"""The stability monitor's warnings over optimizers, problems and learning rates → docs/forecasts.md.

    python benchmarks/forecasts.py [--optimizers gd,momentum,adam] [--problems digits-mlp,...]
                                   [--steps 600] [--horizon 50] [--reuse docs/forecasts.json]

Each run trains with the optimizer (edgeflow's discrete map, which equals torch.optim's) for
``steps + horizon`` steps with ``ef.StabilityMonitor`` in the loop at its defaults, fed the optimizer's
state and not the loss (as ``for_optimizer`` is), for the first ``steps``. A *spike* is the first step
of an episode of losses above 1.2× the running minimum (``benchmarks/instability.py``'s rule), which
ends when the loss is back under 1.1× it, or a divergence; spikes in the first 5 steps are not counted
(the run is unstable from its start: nothing to forecast).

* **recall**: the spikes after step 5 with a warning 5–100 steps before them / those spikes;
* **precision**: the warnings followed by a spike within the horizon / all warnings;
* **silent**: no warning in a run without a counted spike;
* **overhead**: the monitor's oracle calls per training step in gradient evaluations, an HVP counted
  as 2, a third-derivative contraction as 3 (three reverse passes) and a loss as 0.5 (measured on
  these problems: an HVP takes 2.1–2.2 gradients' time, a loss 0.24–0.37), and the monitor's wall
  time over the training loop's, same process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef
from edgeflow.optimizers import make_optimizer
from edgeflow.oracle.problem import HVP_GRADIENTS, LOSS_GRADIENTS, THIRD_GRADIENTS, Counts

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("instability", ROOT / "benchmarks" / "instability.py")
instability = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(instability)
SPIKE, MIN_LEAD, MAX_LEAD = instability.SPIKE, instability.MIN_LEAD, 100
RECOVERED = 1.1  # a spike episode ends when the loss is back under this × the running minimum

#: η per optimizer: GD's grid of benchmarks/instability.py; momentum's and Adam's around the η at
#: which each reaches its threshold within the problem's default steps (docs/optimizer_lrs.md)
GRIDS = {
    "gd": instability.DEFAULT_LRS,
    "momentum": {
        "digits-mlp": [0.1, 0.2, 0.4, 0.8, 1.6, 3.2],
        "mnist5k-cnn": [0.07, 0.14, 0.27, 0.54, 1.1, 2.2],
        "mnist5k-vit": [0.02, 0.044, 0.087, 0.17, 0.35, 0.7],
        "sort-transformer": [0.08, 0.17, 0.33, 0.66, 1.3, 2.6],
    },
    "adam": {
        "digits-mlp": [0.0015, 0.003, 0.0075, 0.015, 0.03, 0.06],
        "mnist5k-cnn": [0.0025, 0.005, 0.01, 0.02, 0.04, 0.08],
        "mnist5k-vit": [0.012, 0.024, 0.048, 0.095, 0.19, 0.38],
        "sort-transformer": [0.005, 0.01, 0.02, 0.04, 0.08, 0.16],
    },
}


def spike_onsets(losses: np.ndarray) -> list[int]:
    """The first step of every spike episode: a loss above SPIKE × the running minimum before it starts
    one, which lasts until the loss is back under ``RECOVERED`` × that minimum (a loss hovering about
    1.2× is one episode, not one per crossing). A divergence (an infinite loss) is a spike."""
    onsets, inside, lowest = [], False, math.inf
    for k, loss in enumerate(losses):
        if not inside and not loss <= SPIKE * lowest:
            onsets.append(k)
            inside = True
        elif inside and loss <= RECOVERED * lowest:
            inside = False
        if math.isfinite(loss):
            lowest = min(lowest, loss)
    return onsets


def score(losses: np.ndarray, warned: list[int], steps: int, horizon: int) -> dict:
    """Recall, precision and silence of the warnings ``warned`` (steps) against the spikes of ``losses``
    (which run ``horizon`` steps past the ``steps`` monitored ones)."""
    onsets = spike_onsets(losses)
    if len(losses) and not math.isfinite(losses[-1]) and (not onsets or onsets[-1] != len(losses) - 1):
        onsets.append(len(losses) - 1)  # the divergence, inside an episode that started earlier
    counted = [s for s in onsets if MIN_LEAD < s < steps]
    caught = [s for s in counted if any(MIN_LEAD <= s - k <= MAX_LEAD for k in warned)]
    right = [k for k in warned if any(k < s <= k + horizon for s in onsets)]
    return {
        "spikes": counted,
        "early_spikes": [s for s in onsets if s <= MIN_LEAD],
        "caught": caught,
        "warnings": len(warned),
        "right_warnings": len(right),
        "first_warning": warned[0] if warned else None,
    }


def monitor_run(
    problem: ef.Problem, optimizer: str, lr: float, steps: int, horizon: int, options: dict | None = None
) -> dict:
    opt = make_optimizer(optimizer, lr)
    mon = ef.StabilityMonitor(problem, optimizer=opt, horizon=horizon, **(options or {}))
    w, state = problem.w0.clone(), opt.init(problem.w0)
    losses, warned, wall_monitor, diverged = [], [], 0.0, None
    spent = Counts()
    t0 = time.perf_counter()
    for k in range(steps + horizon):
        loss, g = problem.value_and_grad(w)
        losses.append(float(loss))
        if not (math.isfinite(losses[-1]) and bool(torch.isfinite(w).all())):
            losses[-1], diverged = math.inf, k
            break
        state = opt.update(state, g)
        if k < steps:
            before, tm = problem.counts.copy(), time.perf_counter()
            rep = mon.update(w, state=state)
            wall_monitor += time.perf_counter() - tm
            spent.add_(problem.counts - before)
            if rep["warning"]:
                warned.append(k)
        w = opt.step(w, g, state)
    wall = time.perf_counter() - t0
    monitored = min(steps, len(losses))
    result = score(np.array(losses), warned, steps, horizon)
    result.update(
        diverged_at=diverged,
        monitored_steps=monitored,
        hvp=spent.hvp,
        third=spent.third,
        losses_evaluated=spent.loss,
        overhead=(spent.gradients() - spent.grad) / max(monitored, 1),
        wall_vs_training=wall_monitor / max(wall - wall_monitor, 1e-12),
    )
    return result


def totals(rows: dict) -> dict:
    spikes = sum(len(r["spikes"]) for r in rows)
    caught = sum(len(r["caught"]) for r in rows)
    warnings = sum(r["warnings"] for r in rows)
    right = sum(r["right_warnings"] for r in rows)
    # a run without a spike in its monitored steps whose warnings were followed by one in the steps
    # after them (the horizon past the run) spikes too: it is not a quiet run
    quiet = [r for r in rows if not r["spikes"] and not r["early_spikes"] and not r["right_warnings"]]
    steps = sum(r["monitored_steps"] for r in rows)
    cost = sum(r["overhead"] * r["monitored_steps"] for r in rows)
    return {
        "recall": caught / spikes if spikes else None,
        "precision": right / warnings if warnings else None,
        "spikes": spikes,
        "caught": caught,
        "warnings": warnings,
        "right": right,
        "silent": sum(r["warnings"] == 0 for r in quiet),
        "quiet_runs": len(quiet),
        "overhead": cost / steps if steps else None,
    }


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def markdown(results: dict, steps: int, horizon: int) -> str:
    lines = [
        "# The stability monitor's warnings, per optimizer",
        "",
        f"Generated by `python benchmarks/forecasts.py` ({steps} monitored steps per run, horizon "
        f"{horizon}, the monitor at its defaults, fed the optimizer's state and not the loss). A spike "
        f"is the first step of an episode of losses above {SPIKE:g}× the running minimum (it ends under "
        f"{RECOVERED:g}×), or a divergence; spikes in the first {MIN_LEAD} steps are not counted. "
        f"*Recall*: spikes warned {MIN_LEAD}–{MAX_LEAD} steps "
        "ahead / spikes; *precision*: warnings followed by a spike within the horizon / warnings; "
        "*silent*: runs without a spike that got no warning; *overhead*: the monitor's oracle calls "
        f"per training step in gradients (an HVP as {HVP_GRADIENTS:g}, a third derivative as "
        f"{THIRD_GRADIENTS:g}, a loss as {LOSS_GRADIENTS:g}).",
        "",
        "## Summary",
        "",
        "| optimizer | problem | recall | precision | silent | overhead (grads/step) |",
        "|---|---|---|---|---|---|",
    ]
    for optimizer, problems in results.items():
        every = []
        for problem, rows in problems.items():
            t = totals(list(rows.values()))
            every += list(rows.values())
            lines.append(
                f"| {optimizer} | {problem} | {pct(t['recall'])} ({t['caught']}/{t['spikes']}) | "
                f"{pct(t['precision'])} ({t['right']}/{t['warnings']}) | {t['silent']}/{t['quiet_runs']} | "
                f"{t['overhead']:.3f} |"
            )
        t = totals(every)
        lines.append(
            f"| **{optimizer}** | all | {pct(t['recall'])} ({t['caught']}/{t['spikes']}) | "
            f"{pct(t['precision'])} ({t['right']}/{t['warnings']}) | {t['silent']}/{t['quiet_runs']} | "
            f"{t['overhead']:.3f} |"
        )
    lines += ["", "## Runs", ""]
    lines += [
        "| optimizer | problem | η | spikes (counted) | early spikes | caught | warnings (right) | "
        "first warning | diverged at | HVPs | overhead | monitor wall / training |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for optimizer, problems in results.items():
        for problem, rows in problems.items():
            for lr, r in sorted(rows.items(), key=lambda item: float(item[0])):
                lines.append(
                    f"| {optimizer} | {problem} | {float(lr):g} | {_steps(r['spikes'])} | "
                    f"{_steps(r['early_spikes'])} | {_steps(r['caught'])} | {r['warnings']} "
                    f"({r['right_warnings']}) | {_or_dash(r['first_warning'])} | "
                    f"{_or_dash(r['diverged_at'])} | {r['hvp']} | "
                    f"{r['overhead']:.3f} | {r['wall_vs_training']:.2f} |"
                )
    return "\n".join(lines) + "\n"


def _or_dash(value: int | None) -> str:
    return "–" if value is None else str(value)


def _steps(steps: list[int]) -> str:
    if not steps:
        return "–"
    shown = ", ".join(map(str, steps[:6]))
    return shown + (f", … ({len(steps)})" if len(steps) > 6 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizers", default="gd,momentum,adam")
    ap.add_argument("--problems", default="digits-mlp,mnist5k-cnn,mnist5k-vit,sort-transformer")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--horizon", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "docs" / "forecasts.md"))
    ap.add_argument("--reuse", help="a JSON written by an earlier run: its runs are not repeated")
    ap.add_argument(
        "--monitor-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a StabilityMonitor option other than its default (a number), e.g. spike_ratio=0.1",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    options = {key: float(value) for key, value in (o.split("=", 1) for o in args.monitor_option)}
    out = Path(args.out)
    results: dict = json.loads(Path(args.reuse).read_text()) if args.reuse else {}
    for optimizer in args.optimizers.split(","):
        for problem_name in args.problems.split(","):
            rows = results.setdefault(optimizer, {}).setdefault(problem_name, {})
            for lr in GRIDS[optimizer][problem_name]:
                if str(lr) in rows:
                    continue
                t0 = time.time()
                problem = ef.make_problem(problem_name)
                rows[str(lr)] = monitor_run(problem, optimizer, lr, args.steps, args.horizon, options)
                r = rows[str(lr)]
                print(
                    f"{optimizer} {problem_name} η = {lr:g}: spikes {r['spikes']} caught {r['caught']} "
                    f"warnings {r['warnings']} ({r['right_warnings']} right), overhead {r['overhead']:.3f}, "
                    f"{time.time() - t0:.0f} s",
                    flush=True,
                )
                out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.write_text(markdown(results, args.steps, args.horizon))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
