"""Our central flow on the configuration of issue 12, side by side with the authors' implementation.

    python benchmarks/central_vs_authors.py --out DIR [--export-data FILE] [--authors FILE]

Configuration: scikit-learn digits, 256 class-balanced examples, standardized; tanh MLP 64-32-32-10
(float64, ``torch.manual_seed(0)`` before building it); MSE; η = 0.5; 240 steps; 4 sub-steps;
eigenvalues every step.

Runs GD and our central flow, measures η·S independently at the central flow's point at every step
from the onset (cold single-vector Lanczos to a residual of 1e-10; a dense ``eigvalsh`` at steps 200,
220 and 240 as a check) and writes ``DIR/ours.npz``. ``--export-data`` writes the examples (``X``,
``y``) for the authors' side. ``--authors`` reads the arrays their run recorded (``gd_w``, ``cf_w``,
``cf_loss``, ``cf_trX``, ``cf_pred``, ``cf_eigs``, ``cf_tracked``, ``cf_time``; how that run was made
is in docs/central_flow.md), measures their points the same way and prints the side-by-side table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef
from edgeflow.zoo import data

LR, STEPS, SUBSTEPS = 0.5, 240, 4
REPORT_STEPS = (200, 220, 240)
DENSE_STEPS = (200, 220, 240)


def build_problem() -> ef.Problem:
    # models.seeded_init calls torch.manual_seed(seed) right before building the MLP.
    return ef.make_problem("digits-mlp", n=256, width=32, depth=2, seed=0)


def tight_sharpness(problem: ef.Problem, w: torch.Tensor, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    return float(problem.eigs(w, tol=1e-10, max_iter=400, generator=gen).values[0])


def dense_sharpness(problem: ef.Problem, w: torch.Tensor) -> float:
    eye = torch.eye(problem.dim, dtype=problem.dtype)
    H = torch.cat([problem.hvps(w, block) for block in eye.split(256)])
    return float(torch.linalg.eigvalsh(0.5 * (H + H.T))[-1])


def measure(problem: ef.Problem, params: np.ndarray, onset: int) -> dict[str, np.ndarray]:
    """η·S at every step from ``onset`` (Lanczos) and at ``DENSE_STEPS`` (dense)."""
    lanczos = np.full(len(params), np.nan)
    dense = np.full(len(params), np.nan)
    for k in range(onset, len(params)):
        w = torch.from_numpy(params[k])
        lanczos[k] = LR * tight_sharpness(problem, w, seed=k)
        if k in DENSE_STEPS:
            dense[k] = LR * dense_sharpness(problem, w)
    return {"lanczos": lanczos, "dense": dense}


def run_ours(problem: ef.Problem) -> dict[str, np.ndarray]:
    start = time.perf_counter()
    res = ef.compare(
        problem,
        LR,
        STEPS,
        ["gd", "central"],
        sharpness_every=1,
        save_params=True,
        options={"central": {"substeps": SUBSTEPS}},
    )
    total = time.perf_counter() - start
    c = res["central"]
    return {
        "gd_w": res["gd"]["params"],
        "w": c["params"],
        "loss": c["train_loss"],
        "trace_over_lr": c["sigma_sq"] / LR,
        "predicted_loss": c["predicted_loss"],
        "eigs": c["hessian_eigs"],
        "recorded_sharpness": c["sharpness"],
        "seconds_per_step": np.array(c.info["wall_time"] / STEPS),
        "hvps_per_step": np.array(c.info["cost"]["hvp"] / STEPS),
        "thirds_per_step": np.array(c.info["cost"]["third"] / STEPS),
        "total_seconds": np.array(total),
    }


def onset_of(trace: np.ndarray) -> int:
    return int(np.flatnonzero(trace > 0)[0])


def largest_jump(trace: np.ndarray, onset: int, settle: int = 20) -> float:
    """Largest step-to-step change of trΣ/η, relative to its value, after ``settle`` steps of the
    onset (trΣ rises from 0 there)."""
    t = trace[onset + settle :]
    return float(np.max(np.abs(np.diff(t)) / t[1:]))


def row(name: str, ours: str, theirs: str) -> str:
    return f"| {name} | {ours} | {theirs} |"


def held(eigs_times_lr: np.ndarray) -> str:
    """Tracked eigenvalues / above the SDCP threshold 1.95 / at 2 (η·λ ≥ 1.999)."""
    e = eigs_times_lr[np.isfinite(eigs_times_lr)]
    return f"{e.size} / {(e > 1.95).sum()} / {(e >= 1.999).sum()}"


def side_by_side(problem: ef.Problem, ours: dict, theirs: dict) -> list[str]:
    t_ours, t_theirs = ours["trace_over_lr"], theirs["cf_trX"]
    on_ours, on_theirs = onset_of(t_ours), onset_of(t_theirs)
    S_ours, S_theirs = ours["S"], measure(problem, theirs["cf_w"], min(on_ours, on_theirs))
    travelled = np.linalg.norm(ours["w"] - ours["w"][0], axis=1)
    gap = np.linalg.norm(ours["w"] - theirs["cf_w"], axis=1) / np.where(travelled > 0, travelled, np.nan)
    lines = [
        f"GD agreement: max |w_ours − w_theirs| = {np.abs(ours['gd_w'] - theirs['gd_w']).max():.3g}",
        f"onset (first active SDCP): ours {on_ours}, theirs {on_theirs}",
        "",
        row("quantity", "ours", "authors"),
        "|---|---|---|",
    ]
    for k in REPORT_STEPS:
        lines.append(row(f"trΣ/η at step {k}", f"{t_ours[k]:.5f}", f"{t_theirs[k]:.5f}"))
    for k in REPORT_STEPS:
        mine, other = ours["predicted_loss"][k], theirs["cf_pred"][k]
        lines.append(row(f"L + trΣ/η at step {k}", f"{mine:.5f} ({mine / other - 1:+.2%})", f"{other:.5f}"))
    for k in REPORT_STEPS:
        lines.append(row(f"L at step {k}", f"{ours['loss'][k]:.5f}", f"{theirs['cf_loss'][k]:.5f}"))
    lines.append(
        row(
            "max η·S after onset (Lanczos, residual 1e-10)",
            f"{np.nanmax(S_ours['lanczos']):.5f}",
            f"{np.nanmax(S_theirs['lanczos']):.5f}",
        )
    )
    lines.append(
        row(
            "η·S (dense) at steps " + "/".join(map(str, DENSE_STEPS)),
            " / ".join(f"{S_ours['dense'][k]:.5f}" for k in DENSE_STEPS),
            " / ".join(f"{S_theirs['dense'][k]:.5f}" for k in DENSE_STEPS),
        )
    )
    lines.append(
        row(
            "largest step-to-step change of trΣ/η, relative (from 20 steps after onset)",
            f"{largest_jump(t_ours, on_ours):.2%}",
            f"{largest_jump(t_theirs, on_theirs):.2%}",
        )
    )
    for k in REPORT_STEPS:
        lines.append(
            row(
                f"eigenvalues tracked / η·λ > 1.95 / η·λ ≥ 1.999 at step {k}",
                held(ours["eigs"][k] * LR),
                held(theirs["cf_eigs"][k]),
            )
        )
    lines.append(
        row(
            "most eigenvalues tracked",
            str(int(np.isfinite(ours["eigs"]).sum(1).max())),
            str(int(theirs["cf_tracked"].max())),
        )
    )
    lines.append(
        row(
            f"seconds per step ({SUBSTEPS} sub-steps)",
            f"{float(ours['seconds_per_step']):.3f}",
            f"{float(np.mean(theirs['cf_time'][1:])):.3f}",
        )
    )
    lines += ["", "| step | ‖w_ours − w_theirs‖ / ‖w_ours − w0‖ |", "|---|---|"]
    lines += [f"| {k} | {gap[k]:.2e} |" for k in (100, 150, 200, 220, 240)]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for ours.npz")
    ap.add_argument("--export-data", type=Path, help="write the examples (X, y) here")
    ap.add_argument("--authors", type=Path, help="the authors' run (.npz) to compare with")
    ap.add_argument("--reuse", action="store_true", help="read DIR/ours.npz instead of running again")
    args = ap.parse_args()
    torch.set_num_threads(1)
    problem = build_problem()
    if args.export_data:
        X, y = data.digits(n=256, classes=10, seed=0)
        np.savez(args.export_data, X=X.numpy(), y=y.numpy(), w0=problem.w0.numpy())
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "ours.npz"
    if args.reuse:
        stored = np.load(path)
        ours = {k: stored[k] for k in stored.files if not k.startswith("S_")}
        ours["S"] = {"lanczos": stored["S_lanczos"], "dense": stored["S_dense"]}
    else:
        ours = run_ours(problem)
        ours["S"] = measure(problem, ours["w"], onset_of(ours["trace_over_lr"]))
        flat = {k: v for k, v in ours.items() if k != "S"}
        np.savez(path, **flat, S_lanczos=ours["S"]["lanczos"], S_dense=ours["S"]["dense"])
    S, seconds = ours["S"]["lanczos"], float(ours["seconds_per_step"])
    print(f"ours: max η·S after onset {np.nanmax(S):.6f}; seconds per step {seconds:.3f}")
    for k in REPORT_STEPS:
        print(f"step {k}: trΣ/η {ours['trace_over_lr'][k]:.5f}  L + trΣ/η {ours['predicted_loss'][k]:.5f}")
    if args.authors:
        theirs = dict(np.load(args.authors))
        print("\n".join(side_by_side(problem, ours, theirs)))


if __name__ == "__main__":
    main()
