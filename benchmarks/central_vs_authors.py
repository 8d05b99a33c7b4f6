"""Our central flow on the digits configuration, side by side with the authors' implementation:
cost and accuracy.

    python benchmarks/central_vs_authors.py --out DIR [--export-data FILE] [--substeps 4,2]
        [--reference 16] [--repeats 1] [--authors FILE] [--authors-reference FILE] [--reuse]
    python benchmarks/central_vs_authors.py --out DIR --authors-discrete rmsprop THEIRS.npz
    python benchmarks/central_vs_authors.py --out DIR --authors-central scalar-rmsprop THEIRS.npz \
        [--authors-reference THEIRS16.npz]

Configuration: scikit-learn digits, 256 class-balanced examples, standardized; tanh MLP 64-32-32-10
(float64, ``torch.manual_seed(0)`` before building it); MSE; η = 0.5; 240 steps; eigenvalues every
step.

Accuracy is the distance of a run's trajectory to a reference run of the same code with
``--reference`` sub-steps: max over steps of ‖w_k − w_ref,k‖, relative to the reference's whole
distance travelled ‖w_ref,240 − w_0‖. Our reference solves the eigenproblem in full at every
sub-step (``resolve="substep"``).

Runs GD and our central flow at each of ``--substeps`` (the first is the main setting; each timed
``--repeats`` times, median), and the reference. At the main setting it measures η·S independently at
the flow's point at every step from the onset (cold single-vector Lanczos to a residual of 1e-10; a
dense ``eigvalsh`` at steps 200, 220 and 240 as a check). Writes ``DIR/ours.npz`` and
``DIR/settings.npz``. ``--export-data`` writes the examples (``X``, ``y``) for the authors' side.
``--authors`` reads the arrays their run recorded (``gd_w``, ``cf_w``, ``cf_loss``, ``cf_trX``,
``cf_pred``, ``cf_eigs``, ``cf_tracked``, ``cf_time``; how that run was made is in
docs/central_flow.md), measures their points the same way and prints the side-by-side table;
``--authors-reference`` is their run at the reference's sub-steps, for their accuracy.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef
from edgeflow.zoo import data

LR, STEPS = 0.5, 240
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


def run_ours(problem: ef.Problem, options: dict, with_gd: bool = False) -> dict[str, np.ndarray]:
    """One run of our central flow (and GD); the wall time is ``Process.step``'s alone."""
    start = time.perf_counter()
    res = ef.compare(
        problem,
        LR,
        STEPS,
        ["gd", "central"] if with_gd else ["central"],
        sharpness_every=1 if with_gd else None,
        save_params=True,
        options={"central": options},
    )
    total = time.perf_counter() - start
    c = res["central"]
    out = {
        "w": c["params"],
        "loss": c["train_loss"],
        "trace_over_lr": c["sigma_sq"] / LR,
        "predicted_loss": c["predicted_loss"],
        "eigs": c["hessian_eigs"],
        "seconds_per_step": np.array(c.info["wall_time"] / STEPS),
        "hvps_per_step": np.array(c.info["cost"]["hvp"] / STEPS),
        "thirds_per_step": np.array(c.info["cost"]["third"] / STEPS),
        "total_seconds": np.array(total),
    }
    if with_gd:
        out |= {"gd_w": res["gd"]["params"], "recorded_sharpness": c["sharpness"]}
    return out


def distance(w: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Largest and last ‖w_k − w_ref,k‖ over the steps, relative to ‖w_ref,end − w_ref,0‖."""
    gap = np.linalg.norm(w - reference, axis=1) / np.linalg.norm(reference[-1] - reference[0])
    return float(gap.max()), float(gap[-1])


def cost_table(runs: list[tuple[str, dict, dict]], authors_seconds: float | None) -> list[str]:
    """Rows: name, the run's arrays, its distances (``own``: to its reference; ``ours``: to ours)."""
    lines = [
        "| run | s / step | HVPs / step | 3rd derivs / step | distance to its reference (max / end) "
        "| distance to our reference (max) | faster than the authors' |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run, dist in runs:
        seconds = float(run["seconds_per_step"])
        hvps = f"{float(run['hvps_per_step']):.1f}" if "hvps_per_step" in run else "—"
        thirds = f"{float(run['thirds_per_step']):.1f}" if "thirds_per_step" in run else "—"
        own = f"{dist['own'][0]:.2e} / {dist['own'][1]:.2e}" if "own" in dist else "—"
        ratio = f"{authors_seconds / seconds:.1f}×" if authors_seconds else "—"
        lines.append(
            f"| {name} | {seconds:.3f} | {hvps} | {thirds} | {own} | {dist['ours'][0]:.2e} | {ratio} |"
        )
    return lines


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
    lines += ["", "| step | ‖w_ours − w_theirs‖ / ‖w_ours − w0‖ |", "|---|---|"]
    lines += [f"| {k} | {gap[k]:.2e} |" for k in (100, 150, 200, 220, 240)]
    return lines


#: the steps at which ``--authors-discrete`` reports the difference of the discrete iterates
DISCRETE_STEPS = (1, 10, 50, 100, 150, 200, 250, 300)


def run_like_theirs(problem: ef.Problem, name: str, theirs: dict, steps: int, flow: str, **kw) -> ef.Result:
    """Our ``flow`` of optimizer ``name`` with the settings of the authors' run ``theirs``."""
    return ef.compare(
        problem,
        float(theirs["lr"]),
        steps,
        [flow],
        sharpness_every=steps,
        optimizer=name,
        optimizer_options={"beta2": float(theirs["beta2"]), "eps": float(theirs["eps"])},
        warm_start=int(theirs["warm_start"]),
        **kw,
    )


def discrete_side_by_side(problem: ef.Problem, name: str, theirs: dict) -> list[str]:
    """Our discrete optimizer against the authors' iterates (``discrete_w`` of their run, with its
    ``lr``, ``warm_start``, ``beta2``, ``eps``; bias correction on): the largest entry of the
    difference relative to the largest entry of theirs, at ``DISCRETE_STEPS``."""
    steps = len(theirs["discrete_w"]) - 1
    res = run_like_theirs(problem, name, theirs, steps, "gd", save_params=True)
    ours, their_w = res["gd"]["params"], theirs["discrete_w"]
    rel = np.abs(ours - their_w).max(axis=1) / np.abs(their_w).max(axis=1)
    shown = [k for k in DISCRETE_STEPS if k <= steps]
    lines = [
        f"{name}, η = {float(theirs['lr']):g}, warm start {int(theirs['warm_start'])}: "
        "max |ours − theirs| / max |theirs| of the discrete iterates",
        "",
        "| step | " + " | ".join(str(k) for k in shown) + " |",
        "|---|" + "---|" * len(shown),
        "| relative difference | " + " | ".join(f"{rel[k]:.2g}" for k in shown) + " |",
    ]
    return lines


def central_side_by_side(
    problem: ef.Problem, name: str, theirs: dict, reference: dict | None = None
) -> list[str]:
    """Our central flow of OPTIMIZER against the authors' (their ``cf_pred``, ``cf_eigs``, ``cf_time``
    at every step, with the run's ``lr``, ``warm_start``, ``beta2``, ``eps``; ``reference``: their
    run at more sub-steps): the predicted loss L + (τ/2)·tr X at every step after the onset (the
    first step where their largest tracked eigenvalue of P⁻¹H exceeds 1.95), the largest eigenvalue
    either flow lets P⁻¹H reach, and the time per step."""
    steps = len(theirs["cf_pred"]) - 1
    start = time.perf_counter()
    res = run_like_theirs(problem, name, theirs, steps, "central")
    seconds = (time.perf_counter() - start) / steps
    ours = res["central"]
    pred = ours["predicted_loss"][ours["step"] <= steps]
    onset = int(np.flatnonzero(np.nanmax(theirs["cf_eigs"], axis=1) > 1.95)[0])
    after = slice(onset, steps + 1)
    shown = [k for k in range(onset - onset % 50 + 50, steps + 1, 50)]
    runs = [("ours, 4 sub-steps", pred, np.nanmax(ours["effective_eigs"]), seconds)]
    runs.append(
        ("authors, 4 sub-steps", theirs["cf_pred"], np.nanmax(theirs["cf_eigs"]), theirs["cf_time"].mean())
    )
    if reference is not None:
        runs.append(
            ("authors, 16 sub-steps", reference["cf_pred"], np.nanmax(reference["cf_eigs"]), math.nan)
        )
    lines = [
        f"{name}, η = {float(theirs['lr']):g}, warm start {int(theirs['warm_start'])}: central flows, "
        f"onset (an eigenvalue of P⁻¹H above 1.95 in the authors' run) at step {onset}",
        "",
        "| run | "
        + " | ".join(f"L + tr X at {k}" for k in shown)
        + " | max rel. difference to the authors' 4 after the onset | to their 16"
        + " | largest λ(P⁻¹H) − 2 | s / step |",
        "|---|" + "---|" * (len(shown) + 4),
    ]
    for label, values, top, sec in runs:
        to4 = np.abs(values[after] / theirs["cf_pred"][after] - 1).max()
        to16 = (
            np.abs(values[after] / reference["cf_pred"][after] - 1).max()
            if reference is not None
            else math.nan
        )
        cells = [f"{values[k]:.6f}" for k in shown] + [
            f"{to4:.2%}",
            f"{to16:.2%}",
            f"{top - 2:.1e}",
            f"{sec:.3f}",
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for ours.npz and settings.npz")
    ap.add_argument("--export-data", type=Path, help="write the examples (X, y) here")
    ap.add_argument("--substeps", default="4,2", help="our settings, comma-separated (first: the main one)")
    ap.add_argument("--reference", type=int, default=16, help="sub-steps of the reference runs")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per setting (median)")
    ap.add_argument("--authors", type=Path, help="the authors' run (.npz) to compare with")
    ap.add_argument("--authors-reference", type=Path, help="the authors' run at --reference sub-steps")
    ap.add_argument("--reuse", action="store_true", help="read DIR/*.npz instead of running again")
    ap.add_argument(
        "--authors-discrete",
        nargs=2,
        action="append",
        default=[],
        metavar=("OPTIMIZER", "FILE"),
        help="compare our discrete OPTIMIZER (scalar-rmsprop, rmsprop) with the authors' run in FILE "
        "(its discrete_w, lr, warm_start, beta2, eps) and stop",
    )
    ap.add_argument(
        "--authors-central",
        nargs=2,
        metavar=("OPTIMIZER", "FILE"),
        help="compare our central flow of OPTIMIZER with the authors' run in FILE (its cf_pred, cf_eigs, "
        "cf_time, lr, warm_start, beta2, eps; --authors-reference: theirs at 16 sub-steps) and stop",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    problem = build_problem()
    if args.authors_central:
        name, file = args.authors_central
        reference = dict(np.load(args.authors_reference)) if args.authors_reference else None
        print("\n".join(central_side_by_side(problem, name, dict(np.load(file)), reference)))
        return
    if args.authors_discrete:
        for name, file in args.authors_discrete:
            print("\n".join(discrete_side_by_side(problem, name, dict(np.load(file)))) + "\n")
        return
    if args.export_data:
        X, y = data.digits(n=256, classes=10, seed=0)
        np.savez(args.export_data, X=X.numpy(), y=y.numpy(), w0=problem.w0.numpy())
    args.out.mkdir(parents=True, exist_ok=True)
    substeps = [int(n) for n in args.substeps.split(",")]
    path, settings_path = args.out / "ours.npz", args.out / "settings.npz"
    if args.reuse:
        stored = np.load(path)
        ours = {k: stored[k] for k in stored.files if not k.startswith("S_")}
        ours["S"] = {"lanczos": stored["S_lanczos"], "dense": stored["S_dense"]}
        others = dict(np.load(settings_path))
    else:
        others = {}
        reference = run_ours(problem, {"substeps": args.reference, "resolve": "substep"})
        others["reference_w"] = reference["w"]
        for n in substeps:
            runs = [run_ours(problem, {"substeps": n}, with_gd=n == substeps[0]) for _ in range(args.repeats)]
            seconds = np.median([float(r["seconds_per_step"]) for r in runs])
            for key in ("w", "hvps_per_step", "thirds_per_step"):
                others[f"{key}_{n}"] = runs[0][key]
            others[f"seconds_per_step_{n}"] = np.array(seconds)
            if n == substeps[0]:
                ours = runs[0] | {"seconds_per_step": np.array(seconds)}
        ours["S"] = measure(problem, ours["w"], onset_of(ours["trace_over_lr"]))
        flat = {k: v for k, v in ours.items() if k != "S"}
        np.savez(path, **flat, S_lanczos=ours["S"]["lanczos"], S_dense=ours["S"]["dense"])
        np.savez(settings_path, **others)
    S, seconds = ours["S"]["lanczos"], float(ours["seconds_per_step"])
    print(f"ours ({substeps[0]} sub-steps): max η·S after onset {np.nanmax(S):.6f}; s / step {seconds:.3f}")
    for k in REPORT_STEPS:
        print(f"step {k}: trΣ/η {ours['trace_over_lr'][k]:.5f}  L + trΣ/η {ours['predicted_loss'][k]:.5f}")
    ref = others["reference_w"]
    runs = []
    for n in substeps:
        run = {
            key: others[f"{key}_{n}"] for key in ("w", "seconds_per_step", "hvps_per_step", "thirds_per_step")
        }
        dist = distance(run["w"], ref)
        runs.append((f"ours, {n} sub-steps", run, {"own": dist, "ours": dist}))
    authors_seconds = None
    if args.authors:
        theirs = dict(np.load(args.authors))
        authors_seconds = float(np.mean(theirs["cf_time"][1:]))
        dist = {"ours": distance(theirs["cf_w"], ref)}
        if args.authors_reference:
            dist["own"] = distance(theirs["cf_w"], np.load(args.authors_reference)["cf_w"])
        runs.append(("authors", {"seconds_per_step": authors_seconds}, dist))
    print("\n".join(["", *cost_table(runs, authors_seconds)]))
    if args.authors:
        print("\n".join(["", *side_by_side(problem, ours, theirs)]))


if __name__ == "__main__":
    main()
