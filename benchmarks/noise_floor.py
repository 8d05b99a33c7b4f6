"""How GD's rounding seeds its oscillation, and whether Edge Flow's model of it times the onset of
the edge of stability, across model sizes (widths, depths) and dtypes. Regenerates
``docs/noise_floor.md`` (with a JSON copy and a figure).

    python benchmarks/noise_floor.py            # five sizes, float64 and float32 (~20 min on 2 cores)
    python benchmarks/noise_floor.py --quick    # two sizes, for a smoke test
    python benchmarks/noise_floor.py --reuse docs/noise_floor.json    # redraw the page and figure

Part 1 measures the kick each GD step's rounding gives the oscillation along the top Hessian
eigenvector u, per part: the rounding of the update w − ηg (the formula Σᵢ uᵢ² ulp(wᵢ)²/12 against
the exact error of float32 steps, recomputed in float64) and the rounding inside the gradient (Edge
Flow's probe at ulp-perturbed points against float32 gradients minus float64 ones at the same
point). Part 2 runs GD and Edge Flow through the onset and compares the first sharpness overshoot:
its step, as a fraction of GD's delay from crossing 2/η to that peak, and its height. Every number
is measured here.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import edgeflow as ef
from edgeflow.metrics import onset_profile
from edgeflow.processes.edge import gradient_rounding, ulp, unit_roundoff, update_rounding
from edgeflow.results import FlowRecord

ROOT = Path(__file__).resolve().parents[1]
SHARPNESS_EVERY = 2
#: the goals of the fidelity issue for the first overshoot
STEP_GOAL, HEIGHT_GOAL = 0.10, 0.02
#: GD's oscillation is compared with Edge Flow's r where it first reaches this share of its peak:
#: large enough to stand clear of the center's curvature, early enough to be still growing linearly
SEED_SHARE = 0.01


@dataclass(frozen=True)
class Size:
    width: int
    depth: int
    lr: float
    steps: int

    @property
    def label(self) -> str:
        return f"{self.width}×{self.depth}"


SIZES = (
    Size(32, 2, 0.4, 340),
    Size(64, 2, 0.4, 300),
    Size(128, 2, 0.3, 310),
    Size(64, 1, 0.4, 280),
    Size(64, 3, 0.3, 390),
)
DTYPES = ("float64", "float32")
VARIANTS = {
    "edge": ({}, "Edge Flow (update + gradient rounding)"),
    "edge-update-only": ({"probe_rounding": False}, "update rounding only"),
}


def problem(size: Size, dtype: str) -> ef.Problem:
    return ef.make_problem("digits-mlp", dtype=dtype, width=size.width, depth=size.depth)


# ------------------------------------------------------------------ part 1: the kicks
def measure_kicks(size: Size, dtype: str, until: int, every: int = 40, run: int = 4) -> dict:
    """Along GD's path up to step ``until``: every ``every`` steps, ``run`` consecutive steps of
    the formula, the probe and (float32) the exact errors, in units of u_dtype·‖w‖."""
    prob = problem(size, dtype)
    wide = ef.make_problem("digits-mlp", dtype="float64", width=size.width, depth=size.depth)
    gen = torch.Generator().manual_seed(0)
    scale = unit_roundoff(prob.dtype)
    w, u = prob.w0.clone(), None
    formula, probe, update_exact, grad_exact, pairs = [], [], [], [], []
    for k in range(until):
        g = prob.grad(w)
        w_next = w - size.lr * g
        if k % every < run:
            if k % every == 0:
                u = prob.eigs(w, v0=u, tol=1e-6, generator=gen).vectors[0]
                unit = scale * float(w.norm())
                probe.append(size.lr * math.sqrt(gradient_rounding(prob, w, u, gen, probes=16)) / unit)
            ud, wd = u.double(), w.double()
            formula.append(math.sqrt(update_rounding(w, u)) / unit)
            if prob.dtype == torch.float32:  # float64 recomputes a float32 step exactly
                exact_update = wd - size.lr * g.double()
                update_exact.append(float(ud @ (w_next.double() - exact_update)) / unit)
                grad_exact.append(size.lr * float(ud @ (g.double() - wide.grad(wd))) / unit)
                if k % every:  # the kick of this step and of the one before, along the same u
                    pairs.append((update_exact[-2] + grad_exact[-2], update_exact[-1] + grad_exact[-1]))
        w = w_next

    def rms(x: list[float]) -> float | None:
        return float(np.sqrt(np.mean(np.square(x)))) if x else None

    return {
        "params": prob.dim,
        "update_formula": rms(formula),
        "update_exact": rms(update_exact),
        "gradient_probe": rms(probe),
        "gradient_probe_first_last": [probe[0], probe[-1]],
        "gradient_exact": rms(grad_exact),
        # successive kicks independent? (float32: their exact values; pairs of consecutive steps)
        "lag1_correlation": float(np.corrcoef(np.array(pairs).T)[0, 1]) if pairs else None,
        "spacing_check": float((ulp(w) / w.abs().clamp_min(1e-30)).median() / (2 * scale)),
    }


# ------------------------------------------------------------------ part 2: the onset
def seed_ratio(gd: FlowRecord, edge: FlowRecord, cross: int | None, peak_step: int | None) -> float | None:
    """Edge Flow's r over GD's oscillation where the latter, after crossing 2/η, first reaches
    SEED_SHARE of its size at the peak."""
    if cross is None or peak_step is None:
        return None
    steps, osc = gd["step"], np.asarray(gd["oscillation"], dtype=float)
    window = (steps >= cross) & (steps <= peak_step) & np.isfinite(osc)
    if not window.any():
        return None
    first = np.flatnonzero(window & (osc >= SEED_SHARE * osc[window].max()))[0]
    r = dict(zip(edge["step"].tolist(), np.asarray(edge["magnitude"], dtype=float).tolist(), strict=True))
    return r.get(int(steps[first]), math.nan) / osc[first]


def measure_onset(size: Size, dtype: str) -> dict:
    out: dict = {}
    curves: dict = {}
    for variant, (options, _) in VARIANTS.items():
        flows = ["midpoint", "edge"] if not out else ["edge"]
        t0 = time.perf_counter()
        res = ef.compare(
            problem(size, dtype),
            size.lr,
            size.steps,
            flows,
            sharpness_every=SHARPNESS_EVERY,
            options={"edge": options},
        )
        wall = time.perf_counter() - t0
        if "midpoint" in flows:
            gd = res["midpoint"]
            out["gd"] = onset_profile(gd["step"], gd["sharpness"], res.threshold)
            osc = np.asarray(gd["oscillation"], dtype=float)
            measured = np.isfinite(osc)  # at the sharpness records only
            curves["gd"] = (gd["step"][measured].tolist(), osc[measured].tolist())
            out["threshold"] = res.threshold
        e = res["edge"]
        prof = onset_profile(e["step"], e["sharpness"], res.threshold)
        ref = out["gd"]
        delay = ref["peak_step"] - ref["cross"] if ref["peak_step"] and ref["cross"] else None
        prof["step_error"] = (
            abs(prof["peak_step"] - ref["peak_step"]) / delay if delay and prof["peak_step"] else None
        )
        prof["height_error"] = abs(prof["peak"] - ref["peak"]) / ref["peak"] if prof["peak"] else None
        prof["seed_ratio"] = seed_ratio(gd, e, ref["cross"], ref["peak_step"])
        prof["cost"] = e.info["cost"]
        prof["wall_s"] = wall
        out[variant] = prof
        curves[variant] = (e["step"].tolist(), np.asarray(e["magnitude"], dtype=float).tolist())
    out["delay"] = out["gd"]["peak_step"] - out["gd"]["cross"]
    out["curves"] = curves
    return out


# ------------------------------------------------------------------ report
def _f(x, fmt: str = ".3g") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def report(data: dict) -> str:
    lines = [
        "# GD's rounding noise and the onset of the edge of stability",
        "",
        f"Generated by `python benchmarks/noise_floor.py` ({data['meta']['date']}, "
        f"{data['meta']['machine']}, "
        f"{data['meta']['wall_min']:.0f} min). Problems: tanh MLPs width×depth on 500 scikit-learn digits "
        "(MSE), each at an η where GD starts below 2/η and sharpens to it.",
        "",
        "## 1. The kick each GD step's rounding gives the oscillation",
        "",
        "Standard deviation of the rounding error along the top Hessian eigenvector u, in units of "
        "u_dtype·‖w‖ (u_dtype = 2⁻⁵³ float64, 2⁻²⁴ float32), rms over GD's path before the crossing. "
        "*Update*: rounding of w − ηg, the formula √(Σᵢ uᵢ² ulp(wᵢ)²/12) and, in float32, the exact "
        "error (recomputed in float64). *Gradient*: η·uᵀε, ε the gradient's rounding, from Edge Flow's "
        "probe (16 points ±32 ulps apart, first → last measurement along the path) and, in float32, "
        "the float32 gradient minus the float64 one at the same point (this also holds the rounding of "
        "the data to float32). *Lag-1 corr.*: correlation of the exact float32 kicks "
        "(update + gradient) of consecutive steps; near 0, successive kicks are independent.",
        "",
        "| size | params | dtype | update: formula | update: exact | gradient: probe | (first → last) "
        "| gradient: float32 − float64 | lag-1 corr. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in data["cases"]:
        k = case["kicks"]
        first, last = k["gradient_probe_first_last"]
        lines.append(
            f"| {case['size']} | {k['params']} | {case['dtype']} | {_f(k['update_formula'], '.4f')} | "
            f"{_f(k['update_exact'], '.4f')} | {_f(k['gradient_probe'], '.4f')} | {first:.4f} → {last:.4f} | "
            f"{_f(k['gradient_exact'], '.4f')} | {_f(k.get('lag1_correlation'), '+.2f')} |"
        )
    lines += [
        "",
        "## 2. The first sharpness overshoot: GD against Edge Flow",
        "",
        "GD's midpoint crosses 2/η at *cross* and peaks at *peak*; the *delay* is the difference. "
        "Step error = |Edge Flow's peak step − GD's| / delay (goal ≤ 10%); height error = relative "
        "difference of the peak sharpness (goal ≤ 2%). *Seed ratio*: Edge Flow's r over GD's "
        f"oscillation amplitude where GD's first reaches {SEED_SHARE:.0%} of its peak (1 = the seed "
        f"exactly right). Sharpness measured every {SHARPNESS_EVERY} steps.",
        "",
        "| size | dtype | GD cross | GD peak (step) | delay | model | peak (step) | step error "
        "| height error | seed ratio | grads, HVPs / step |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    met = {v: [0, 0] for v in VARIANTS}
    errors: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    for case in data["cases"]:
        o, gd = case["onset"], case["onset"]["gd"]
        for variant, (_, name) in VARIANTS.items():
            e = o[variant]
            ok = e["step_error"] is not None and e["step_error"] <= STEP_GOAL
            ok = ok and e["height_error"] is not None and e["height_error"] <= HEIGHT_GOAL
            met[variant][0] += ok
            met[variant][1] += 1
            if e["step_error"] is not None and e["height_error"] is not None:
                errors[variant].append((e["step_error"], e["height_error"]))
            cost = e["cost"]
            steps = case["steps"]
            lines.append(
                f"| {case['size']} | {case['dtype']} | {gd['cross']} | {gd['peak']:.3f} "
                f"({gd['peak_step']}) | {o['delay']} | {name} | {_f(e['peak'], '.3f')} ({e['peak_step']}) | "
                f"{_f(e['step_error'], '.1%')} | {_f(e['height_error'], '.2%')} | "
                f"{_f(e['seed_ratio'], '.2f')} | "
                f"{cost['grad'] / steps:.1f}, {cost['hvp'] / steps:.1f} |"
            )
    lines += ["", "## Goals", ""]
    for variant, (_, name) in VARIANTS.items():
        n_ok, n = met[variant]
        lines.append(
            f"- {name}: step error ≤ {STEP_GOAL:.0%} and height error ≤ {HEIGHT_GOAL:.0%} "
            f"in {n_ok} of {n} runs; mean step error {np.mean([x for x, _ in errors[variant]]):.1%}, "
            f"mean height error {np.mean([y for _, y in errors[variant]]):.2%}."
        )
    lines += ["", "![GD's oscillation and Edge Flow's magnitude](noise_floor.png)", ""]
    return "\n".join(lines)


def figure(data: dict, path: Path) -> None:
    from edgeflow.plots import add_caption, add_legend, finish_axes, new_figure, paper_style, save_figure

    sizes = list(dict.fromkeys(c["size"] for c in data["cases"]))
    with paper_style():
        ncols = min(3, len(sizes))
        fig, grid = new_figure(-(-len(sizes) // ncols), ncols, extra_height=1.2)
        axes = grid.ravel()
        for ax in axes[len(sizes) :]:
            ax.set_visible(False)
        for ax, size in zip(axes, sizes, strict=False):
            for case in (c for c in data["cases"] if c["size"] == size):
                dashed = case["dtype"] == "float32"
                curves = case["onset"]["curves"]
                steps, osc = curves["gd"]
                ls = (0, (4, 2)) if dashed else "-"
                ax.semilogy(steps, osc, color="0.55", lw=2.2, ls=ls, label=f"GD, {case['dtype']}")
                steps, r = curves["edge"]
                ax.semilogy(steps, r, color="C3", lw=1.1, ls=ls, label=f"Edge Flow r, {case['dtype']}")
                ax.axvline(case["onset"]["gd"]["cross"], color="0.3", lw=0.6, ls=":")
            finish_axes(ax, title=f"{size}", xlabel="GD step", ylabel="oscillation along u")
        add_legend(axes[len(sizes) - 1])
        add_caption(
            fig,
            "GD's oscillation |uᵀ(w_k − w*_k)| (gray; its flat part before the growth is the center's "
            "curvature, not the oscillation) and Edge Flow's magnitude r (red), float64 solid, float32 "
            "dashed; dotted: GD's midpoint crossing 2/η.",
        )
        save_figure(fig, path)


def _meta(t0: float) -> dict:
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread",
        "wall_min": (time.perf_counter() - t0) / 60,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two sizes, float64 and float32")
    ap.add_argument("--reuse", help="a JSON written by an earlier run: only redraw the page and figure")
    ap.add_argument("--out", default=str(ROOT / "docs" / "noise_floor.md"))
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.reuse:
        data = json.loads(Path(args.reuse).read_text())
    else:
        torch.set_num_threads(1)
        sizes = SIZES[:2] if args.quick else SIZES
        t0 = time.perf_counter()
        cases = []
        for size in sizes:
            for dtype in DTYPES:
                onset = measure_onset(size, dtype)
                kicks = measure_kicks(size, dtype, until=onset["gd"]["cross"] or size.steps // 2)
                cases.append(
                    {"size": size.label, "dtype": dtype, "steps": size.steps, "config": asdict(size)}
                    | {"kicks": kicks, "onset": onset}
                )
                e = onset["edge"]
                print(
                    f"{size.label} {dtype}: step error {_f(e['step_error'], '.1%')}, "
                    f"height {_f(e['height_error'], '.2%')}, seed ratio {_f(e['seed_ratio'], '.2f')}",
                    flush=True,
                )
                # after every case, so that a stopped run keeps what it measured (--reuse redraws it)
                data = {"meta": _meta(t0), "cases": cases}
                out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    out.write_text(report(data))
    figure(data, out.with_suffix(".png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
