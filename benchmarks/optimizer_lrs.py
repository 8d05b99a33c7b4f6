"""A learning rate per optimizer per zoo problem at which the optimizer reaches the edge of stability
within the problem's default steps, measured with the discrete optimizer alone.

    python benchmarks/optimizer_lrs.py [--problems a,b] [--optimizers scalar-rmsprop,rmsprop,...]
        [--tries 8] [--json FILE] [--markdown FILE]

For each problem and optimizer (its default hyper-parameters) it starts from a guess (``guess``)
and doubles or halves η, then bisects, until the run crosses its threshold on λ₁(P⁻¹H) between 10%
and 50% of the default steps after having been below it, without diverging, and sits near it over
its last third (RMSProp and Adam with bias correction start above it: ν̂ = g0⊙g0 makes P⁻¹ huge
where the first gradient is small; they need only the last condition). It reports, per η tried,
the first crossing, the first peak and the median of λ₁(P⁻¹H)/threshold over the last third of
the run (≈ 1 at EoS). The chosen
η are the ``optimizer_lrs`` of ``edgeflow.zoo.registry``; docs/optimizer_lrs.md is this script's
markdown output.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
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
#: optimizers whose bias-corrected first steps put λ₁(P⁻¹H) above the threshold at any η
STARTS_ABOVE = ("rmsprop", "adam")


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


#: the last third of a run at the edge of stability: λ₁(P⁻¹H) / threshold within this band
AT_EOS = (0.8, 1.3)


def at_eos(row: dict) -> bool:
    return row["last_third"] is not None and AT_EOS[0] <= row["last_third"] <= AT_EOS[1]


def judge(row: dict, steps: int, optimizer: str) -> str:
    """``accept``, ``smaller`` or ``larger``: the run should cross its threshold from below between
    10% and 50% of its steps and be at the edge of stability over its last third. RMSProp with bias
    correction starts above its threshold whatever η (ν̂ = g₀⊙g₀ at the first step makes P⁻¹ large
    where the first gradient is small): such a run needs only the last condition. A run that crossed
    in time but is still far above the threshold at the end (spiking, not settled) asks for a larger
    η: it crosses earlier and has longer to settle."""
    cross, tail = row["cross"], row["last_third"]
    if row["diverged_at"] is not None or (cross is not None and cross < steps // 10):
        return "smaller"
    if row["initial"] > 1 and optimizer not in STARTS_ABOVE:
        return "smaller"  # a later crossing after a dip is no onset: the run started above
    if cross is not None:
        if cross > steps // 2 or (tail is not None and tail > AT_EOS[1]):
            return "larger"
        return "accept" if at_eos(row) else "larger"
    if row["initial"] > 1:
        if tail is not None:
            return "accept" if at_eos(row) else ("larger" if tail < AT_EOS[0] else "smaller")
    return "larger"


def fallback(rows: list[dict]) -> dict | None:
    """When no η met every condition: of the runs that did not diverge and are at the edge of
    stability over their last third, the one that crossed latest (or started above); else none."""
    settled = [r for r in rows if r["diverged_at"] is None and at_eos(r)]
    if not settled:
        return None
    return max(settled, key=lambda r: (r["cross"] if r["cross"] is not None else -1, -r["lr"]))


def _lr(x: float) -> float:
    return float(f"{x:.2g}")


def search(
    name: str,
    optimizer: str,
    tries: int,
    earlier: dict,
    every: int | None = None,
    save: Callable[[dict], None] | None = None,
) -> dict:
    """Doubles or halves η from the guess until the verdict turns, then bisects (geometrically)
    between the largest η that asked for larger and the smallest that asked for smaller.
    ``save`` gets the search so far after every trial (a long search that is stopped keeps its
    trials for ``--reuse``)."""
    spec = PROBLEMS[name]
    problem = ef.make_problem(name)
    steps, every = spec.steps, every or spec.sharpness_every
    lr = _lr(guess(problem, optimizer, spec.lr))
    rows, chosen = [], None
    low, high = 0.0, math.inf  # η known too small / too large
    for _ in range(tries):
        row = earlier.get(lr) or trial(problem, optimizer, lr, steps, every)
        rows.append(row)
        if save is not None:
            save(_item(name, optimizer, steps, every, None, "searching", rows))
        print(
            name,
            optimizer,
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
            flush=True,
        )
        verdict = judge(row, steps, optimizer)
        if verdict == "accept":
            chosen = row
            break
        if verdict == "smaller":
            high = min(high, lr)
        else:
            low = max(low, lr)
        if low > 0 and high < math.inf:
            lr = _lr(math.sqrt(low * high))
        else:
            lr = _lr(lr / 2 if verdict == "smaller" else lr * 2)
        if any(r["lr"] == lr for r in rows):
            break  # the bracket is as narrow as two significant digits go
    how = "met"
    if chosen is None:
        chosen, how = fallback(rows), "fallback"
    return _item(name, optimizer, steps, every, chosen, how if chosen else "none", rows)


def _item(name: str, optimizer: str, steps: int, every: int, chosen, how: str, rows: list) -> dict:
    return {
        "problem": name,
        "optimizer": optimizer,
        "steps": steps,
        "sharpness_every": every,
        "chosen": chosen,
        "how": how,
        "tried": rows,
    }


def markdown(results: list[dict]) -> str:
    lo, hi = AT_EOS
    lines = [
        "# Learning rates per optimizer",
        "",
        "Generated by `python benchmarks/optimizer_lrs.py --markdown docs/optimizer_lrs.md`; regenerate",
        "rather than edit. Discrete optimizer only (flow `gd`), default steps and initialization of each",
        f"problem, each optimizer's defaults (`edgeflow list`), torch {torch.__version__}, one thread.",
        "λ₁(P⁻¹H) relative to the optimizer's threshold: at step 0, at its first peak after the first",
        "upward crossing, and its median over the last third of the run.",
        "",
        "An η is accepted when its run crosses the threshold from below between 10% and 50% of the",
        f"steps, does not diverge, and sits at {lo:g}–{hi:g} × the threshold over its last third; a run",
        "that starts above the threshold (RMSProp, Adam with bias correction: ν̂ = g₀⊙g₀ at the first step",
        "makes P⁻¹ large where the first gradient is small) needs only the last condition. The search",
        "starts from the η whose first step matches GD's in size and halves or doubles it. Where no η",
        "met every condition, the registry takes the settled run that crossed latest ('fallback').",
        "",
        *(
            [
                f"Not searched in this run (no default η for them yet; `--problems {','.join(missing)}`): "
                f"{', '.join(missing)}.",
                "",
            ]
            if (missing := [p for p in OFFLINE if p not in {item["problem"] for item in results}])
            else []
        ),
        *(
            [
                "λ₁(P⁻¹H) measured every "
                + ", ".join(f"{e} steps on {p}" for p, e in sparse.items())
                + " (cheaper trials; the others at their problem's `sharpness_every`).",
                "",
            ]
            if (
                sparse := {
                    item["problem"]: item["sharpness_every"]
                    for item in results
                    if item.get("sharpness_every", PROBLEMS[item["problem"]].sharpness_every)
                    != PROBLEMS[item["problem"]].sharpness_every
                }
            )
            else []
        ),
        "## Chosen (the zoo registry's `optimizer_lrs`)",
        "",
        "| problem | optimizer | η | how | crosses (step) | last third |",
        "|---|---|---|---|---|---|",
    ]

    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:.3g}"

    for item in results:
        row = item["chosen"]
        if row is None:
            lines.append(f"| {item['problem']} | {item['optimizer']} | none found | — | — | — |")
            continue
        lines.append(
            f"| {item['problem']} | {item['optimizer']} | {row['lr']:g} | {item['how']} | "
            f"{f(row['cross'])} of {item['steps']} | {f(row['last_third'])} |"
        )
    lines += [
        "",
        "## Every η tried (bold: chosen)",
        "",
        "| problem | optimizer | η | at step 0 | crosses (step) | first peak (step) | last third "
        "| diverged | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
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
    ap.add_argument(
        "--reuse",
        type=Path,
        nargs="*",
        default=[],
        help="--json files of earlier runs: their trials are taken, not rerun",
    )
    ap.add_argument(
        "--sharpness-every",
        action="append",
        default=[],
        metavar="PROBLEM=N",
        help="measure λ₁(P⁻¹H) every N steps on PROBLEM instead of its own cadence (cheaper trials)",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    every = {key: int(value) for key, value in (pair.split("=", 1) for pair in args.sharpness_every)}
    done: dict[tuple[str, str], dict[float, dict]] = {}
    for path in args.reuse:
        for item in json.loads(path.read_text()):
            done.setdefault((item["problem"], item["optimizer"]), {}).update(
                {row["lr"]: row for row in item["tried"]}
            )
    results = []
    for name in args.problems.split(","):
        for optimizer in args.optimizers.split(","):
            earlier = done.get((name, optimizer), {})

            def save(item: dict) -> None:
                if args.json:
                    args.json.write_text(json.dumps([*results, item], indent=1))

            results.append(search(name, optimizer, args.tries, earlier, every.get(name), save))
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
            if args.markdown:
                args.markdown.write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
