"""Edge Flow with a momentum on the default problem: the single runs docs/edge_flow.md quotes
("With a momentum"), each as `edgeflow run --problem digits-mlp --optimizer NAME --lr η --steps 300
--sharpness-every 5` would run it, plus the variants its choices are measured against.

    python benchmarks/edge_momentum.py [--out docs/edge_momentum.md]

Rows: heavy-ball (β = 0.9) at η = 0.4 with Edge Flow's default (one sub-step), with two sub-steps
(the stable flow's ODE on the symmetrized loss) and with GD's initial magnitude (r₀ half the first
step along u instead of 0); Nesterov at η = 0.15; Adam at η = 0.003 from step 0 and after 20
warm-up steps. Each reports Edge Flow's and the stable flow's distance to the discrete run's
midpoints (median over the run / over the EoS window) and the onset (crossing, first peak) of
λ₁(P⁻¹H); the default heavy-ball row also Edge Flow's r against the discrete run's oscillation
|ũᵀP^{1/2}(w_k − w*_k)| just before the crossing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef
from edgeflow.metrics import fidelity
from edgeflow.optimizers import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
PROBLEM, STEPS, EVERY = "digits-mlp", 300, 5
#: (label, optimizer, η, warm start, Edge Flow's options, with the stable flow)
RUNS = [
    ("heavy-ball, default (K = 1)", "momentum", 0.4, 0, {}, True),
    ("heavy-ball, K = 2", "momentum", 0.4, 0, {"substeps": 2}, False),
    ("heavy-ball, GD's r₀ (half the first step along u)", "momentum", 0.4, 0, "gd-r0", False),
    ("Nesterov", "nesterov", 0.15, 0, {}, True),
    ("Adam", "adam", 0.003, 0, {}, True),
    ("Adam, 20 warm-up steps", "adam", 0.003, 20, {}, True),
]
#: steps at which r and the discrete run's oscillation are compared (before heavy-ball's crossing)
PROBE_STEPS = (115, 120)


def gd_r0(problem: ef.Problem, optimizer: str, lr: float) -> float:
    """GD's initial magnitude in the preconditioner's frame: half the first step along u."""
    opt = make_optimizer(optimizer, lr)
    g = problem.grad(problem.w0)
    scale = torch.as_tensor(opt.inverse_preconditioner(opt.update(opt.init(problem.w0), g))).sqrt()
    gen = torch.Generator().manual_seed(0)
    u = problem.eigs(problem.w0, generator=gen, scale=scale).vectors[0]
    return 0.5 * abs(float(u @ (scale * g)))


def run(label, optimizer, lr, warm, options, stable) -> dict:
    problem = ef.make_problem(PROBLEM)
    if options == "gd-r0":
        options = {"r0": gd_r0(problem, optimizer, lr)}
    flows = ["gd", "midpoint", "edge", *(["gradient"] if stable else [])]
    res = ef.compare(
        problem,
        lr,
        STEPS,
        flows,
        options={"edge": options},
        record_every=ef.PROBLEMS[PROBLEM].record_every,
        sharpness_every=EVERY,
        optimizer=optimizer,
        warm_start=warm,
    )
    fid = fidelity(res)
    row = {"label": label, "optimizer": optimizer, "lr": lr, "warm_start": warm, "options": options}
    for flow in flows[1:]:
        f = fid[flow]
        row[flow] = {k: f.get(k) for k in ("distance_median", "distance_eos_median")} | {
            "onset": f.get("onset")
        }
    steps = np.asarray(res["edge"]["step"])
    row["probe"] = {
        int(k): {
            "edge_r": float(np.asarray(res["edge"]["magnitude"])[steps == k][0]),
            "oscillation": float(np.asarray(res["midpoint"]["oscillation"])[steps == k][0]),
        }
        for k in PROBE_STEPS
        if k in steps
    }
    print(label, row["edge"], flush=True)
    return row


def _f(x, spec=".2g") -> str:
    return "–" if x is None else format(x, spec)


def _onset(o: dict | None) -> str:
    if not o or o.get("cross") is None:
        return "–"
    peak = "–" if o.get("peak") is None else f"{o['peak']:.4g} ({o['peak_step']})"
    return f"{o['cross']}, {peak}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Edge Flow with a momentum on the default problem",
        "",
        f"`python benchmarks/edge_momentum.py`: {PROBLEM}, {STEPS} steps, λ₁(P⁻¹H) every {EVERY} steps "
        "(see the script's docstring). Distances to the discrete run's midpoints, median over the run / "
        "over the EoS window; onset: crossing of the threshold, first peak (step).",
        "",
        "| run | η | Edge Flow | stable flow | onset, discrete | onset, Edge Flow |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        e, s = r["edge"], r.get("gradient")
        stable = "–" if s is None else f"{_f(s['distance_median'])} / {_f(s['distance_eos_median'])}"
        lines.append(
            f"| {r['label']} | {r['lr']:g} | {_f(e['distance_median'])} / {_f(e['distance_eos_median'])} | "
            f"{stable} | {_onset(r['midpoint']['onset'])} | {_onset(e['onset'])} |"
        )
    lines += ["", "Edge Flow's r against the discrete run's oscillation (frame units) before the crossing:"]
    lines += [""]
    lines += ["| run | step | Edge Flow r | discrete oscillation |", "|---|---|---|---|"]
    for r in rows:
        if r["optimizer"] == "momentum":
            for k, p in r["probe"].items():
                lines.append(f"| {r['label']} | {k} | {p['edge_r']:.2g} | {p['oscillation']:.2g} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "edge_momentum.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [run(*spec) for spec in RUNS]
    args.out.write_text(markdown(rows))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
