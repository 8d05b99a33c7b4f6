"""A learning rate per optimizer per zoo problem at which the optimizer reaches the edge of stability
within the problem's default steps, measured with the discrete optimizer alone.

    python benchmarks/optimizer_lrs.py [--problems a,b] [--optimizers scalar-rmsprop,rmsprop,...]
        [--tries 8] [--json FILE] [--markdown FILE]

For each problem and optimizer (with its default hyper-parameters) it starts from a guess
(``guess``) and doubles or halves η until the run crosses its threshold on λ₁(P⁻¹H) between 10%
and 50% of the default steps after having been below it (RMSProp and Adam with bias correction
start above it: ν̂ = g0⊙g0 makes P⁻¹ huge where the first gradient is small), without diverging.
It reports, per η tried, the first crossing, the first peak and the median of
λ₁(P⁻¹H)/threshold over the last third of the run (≈ 1 at EoS). The chosen η are the
``optimizer_lrs`` of ``edgeflow.zoo.registry``; docs/optimizer_lrs.md is this script's markdown
output.
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
from edgeflow.metrics import onset_profile
from edgeflow.optimizers import make_optimizer
from edgeflow.zoo import PROBLEMS, problem_params

#: problems that need no download
OFFLINE = [name for name in PROBLEMS if "download" not in problem_params(name)]
OPTIMIZERS = ("scalar-rmsprop", "rmsprop", "momentum", "nesterov", "adam")


def guess(problem: ef.Problem, optimizer: str, gd_lr: float) -> float:
    """The first η tried. The RMSProps: GD's first step (scalar: η_GD·‖∇L(w0)‖; per coordinate:
    η_GD·‖∇L(w0)‖/√d, g/|g| having norm √d). Momentum and Nesterov (P = I/η): the sharpness at which
    GD reaches its threshold 2, at theirs, η_GD·threshold/2. Adam: RMSProp's guess, scaled the same
    way by its threshold (on λ₁(P⁻¹H) too)."""
    scale = make_optimizer(optimizer, 1.0).threshold / 2
    if optimizer in ("momentum", "nesterov"):
        return gd_lr * scale
    norm = float(problem.grad(problem.w0).norm())
    if optimizer == "scalar-rmsprop":
        return gd_lr * norm
    return gd_lr * norm / math.sqrt(problem.dim) * scale


def trial(problem: ef.Problem, optimizer: str, lr: float, steps: int, every: int) -> dict:
    start = time.perf_counter()
    res = ef.compare(problem, lr, steps, ["gd"], sharpness_every=every, optimizer=optimizer)
    rec = res["gd"]
    steps_rec, s = rec["step"], rec["effective_sharpness"]
    threshold = res.threshold
    measured = np.isfinite(s)
    below = np.flatnonzero(measured & (s < threshold))
    cross = None
    if below.size:  # the first upward crossing after the first measurement below the threshold
        after = np.flatnonzero(measured & (s >= threshold) & (np.arange(len(s)) > below[0]))
        cross = int(steps_rec[after[0]]) if after.size else None
    profile = (
        onset_profile(steps_rec, s, threshold) if cross is not None else {"peak": None, "peak_step": None}
    )
    tail = s[(steps_rec >= steps - steps // 3) & measured]
    return {
        "lr": lr,
        "initial": float(s[0]) / threshold,
        "cross": cross,
        "peak": None if profile["peak"] is None else profile["peak"] / threshold,
        "peak_step": profile["peak_step"],
        "last_third": float(np.median(tail)) / threshold if tail.size else None,
        "diverged_at": rec.info.get("diverged_at"),
        "seconds": time.perf_counter() - start,
    }


def judge(row: dict, steps: int) -> str:
    """``accept``, ``smaller`` or ``larger``: the run should cross its threshold from below between
    10% and 50% of its steps; a run that starts above it (RMSProp's first steps) is accepted when it
    is at the edge of stability over its last third (0.9–1.3 × the threshold)."""
    cross, tail = row["cross"], row["last_third"]
    if row["diverged_at"] is not None or (cross is not None and cross < steps // 10):
        return "smaller"
    if cross is not None:
        return "accept" if cross <= steps // 2 else "larger"
    if row["initial"] > 1 and tail is not None:
        return "accept" if 0.9 <= tail <= 1.3 else ("larger" if tail < 0.9 else "smaller")
    return "larger"


def search(name: str, optimizer: str, tries: int) -> dict:
    spec = PROBLEMS[name]
    problem = ef.make_problem(name)
    steps, every = spec.steps, spec.sharpness_every
    lr = float(f"{guess(problem, optimizer, spec.lr):.2g}")
    rows, chosen = [], None
    for _ in range(tries):
        row = trial(problem, optimizer, lr, steps, every)
        rows.append(row)
        print(
            name,
            optimizer,
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
            flush=True,
        )
        verdict = judge(row, steps)
        if verdict == "accept":
            chosen = row
            break
        lr = float(f"{lr / 2 if verdict == 'smaller' else lr * 2:.2g}")
        if any(r["lr"] == lr for r in rows):
            break
    return {"problem": name, "optimizer": optimizer, "steps": steps, "chosen": chosen, "tried": rows}


def markdown(results: list[dict]) -> str:
    lines = [
        "# Learning rates per optimizer (`benchmarks/optimizer_lrs.py`)",
        "",
        "Discrete optimizer only (flow `gd`), default steps and initialization of each problem, each",
        "optimizer's default hyper-parameters (`edgeflow list`; the RMSProps: β₂ = 0.99, ε = 1e-7, bias",
        "correction). λ₁(P⁻¹H) relative to the optimizer's threshold: at step 0,",
        "at its first peak after the first upward crossing, and its median over the last third of",
        "the run. **Bold**: the η the registry uses.",
        "",
        "| problem | optimizer | η | at step 0 | crosses (step) | first peak (step) | last third "
        "| diverged | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:.3g}"

    for item in results:
        for row in item["tried"]:
            bold = "**" if row is item["chosen"] else ""
            lr = f"{bold}{row['lr']:g}{bold}"
            lines.append(
                f"| {item['problem']} | {item['optimizer']} | {lr} | {f(row['initial'])} | "
                f"{f(row['cross'])} of {item['steps']} | {f(row['peak'])} ({f(row['peak_step'])}) | "
                f"{f(row['last_third'])} | {f(row['diverged_at'])} | {row['seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=",".join(OFFLINE))
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--tries", type=int, default=8)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = []
    for name in args.problems.split(","):
        for optimizer in args.optimizers.split(","):
            results.append(search(name, optimizer, args.tries))
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
            if args.markdown:
                args.markdown.write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
