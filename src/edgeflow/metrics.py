"""Measurements on a finished comparison: how each flow tracks GD, and where GD reaches EoS.

Distances are relative to how far GD's midpoint has moved, ``‖c_F(k) − w*_k‖ / ‖w*_k − w_0‖``
(SPEC section 5). Steps where the denominator is still zero (k = 0) are left out.
"""

from __future__ import annotations

import math

import numpy as np

from edgeflow.results import Result

REFERENCE = "midpoint"


def first_crossing(steps: np.ndarray, values: np.ndarray, level: float) -> int | None:
    """First step whose measured value is at or above ``level`` (NaNs skipped)."""
    hit = np.flatnonzero(np.nan_to_num(values, nan=-np.inf) >= level)
    return int(steps[hit[0]]) if hit.size else None


def first_peak(steps: np.ndarray, values: np.ndarray, after: int | None) -> tuple[int, float] | None:
    """Step and height of the first local maximum of the measured values at or after ``after``."""
    if after is None:
        return None
    ok = ~np.isnan(values) & (steps >= after)
    s, v = steps[ok], values[ok]
    for i in range(1, len(v) - 1):
        if v[i] >= v[i - 1] and v[i] > v[i + 1]:
            return int(s[i]), float(v[i])
    return None


def onset_profile(steps: np.ndarray, sharpness: np.ndarray, threshold: float, dip_window: int = 80) -> dict:
    """The onset of EoS in a sharpness trace: first crossing of ``threshold`` (2/η), the first
    overshoot peak after it, and the dip (lowest value within ``dip_window`` steps after the peak)."""
    cross = first_crossing(steps, sharpness, threshold)
    peak = first_peak(steps, sharpness, cross)
    out = {"cross": cross, "peak_step": None, "peak": None, "dip_step": None, "dip": None}
    if peak:
        out["peak_step"], out["peak"] = peak
        sel = (steps > peak[0]) & (steps <= peak[0] + dip_window) & np.isfinite(sharpness)
        if sel.any():
            i = int(np.argmin(np.where(sel, sharpness, np.inf)))
            out["dip_step"], out["dip"] = int(steps[i]), float(sharpness[i])
    return out


def relative_distance(res: Result, flow: str, reference: str = REFERENCE) -> np.ndarray | None:
    """``‖c_flow − w*‖ / ‖w* − w0‖`` over the shared record steps (NaN where undefined)."""
    key = f"{flow}-{reference}"
    if key not in res.distances:
        return None
    scale = res.distances[f"{reference}-w0"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, res.distances[key] / scale, np.nan)


def eos_onset(res: Result) -> dict:
    """Where GD (measured at its midpoints) first reaches 2/η, its first overshoot and the dip after
    it, and how close to 2/η its sharpness stays after the dip."""
    ref = REFERENCE if REFERENCE in res else "gd"
    rec = res[ref]
    steps, s = rec["step"], rec["sharpness"]
    profile = onset_profile(steps, s, res.threshold)
    after = np.array([])
    if profile["dip_step"] is not None:
        after = s[(steps > profile["dip_step"]) & np.isfinite(s)]
    return {
        "measured_at": ref,
        "threshold": res.threshold,
        "initial_sharpness": _finite_first(s),
        "onset_step": profile["cross"],
        "peak_step": profile["peak_step"],
        "peak_sharpness": profile["peak"],
        "dip_step": profile["dip_step"],
        "dip_sharpness": profile["dip"],
        "after_dip_median": float(np.median(after)) if after.size else None,
        "after_dip_min": float(after.min()) if after.size else None,
        "after_dip_max": float(after.max()) if after.size else None,
    }


def summarize(res: Result) -> dict:
    """Per-flow summary (final loss, sharpness, distance to GD's midpoint, cost per unit time)."""
    gd_wall = _per_step(res["gd"].info, "wall_time") if "gd" in res else None
    flows = {}
    for name in res:
        rec, info = res[name], res[name].info
        s = rec["sharpness"]
        rel = relative_distance(res, name)
        done = max(info["steps_completed"], 1)
        wall = _per_step(info, "wall_time")
        flows[name] = {
            "steps_completed": info["steps_completed"],
            "diverged_at": info["diverged_at"],
            "final_loss": float(rec["train_loss"][-1]) if len(rec["train_loss"]) else None,
            "final_sharpness": _finite_last(s),
            "max_sharpness": float(np.nanmax(s)) if np.isfinite(s).any() else None,
            "median_rel_distance": _nanmedian(rel),
            "final_rel_distance": _finite_last(rel) if rel is not None else None,
            "grads_per_step": info["cost"]["grad"] / done,
            "hvps_per_step": info["cost"]["hvp"] / done,
            "wall_per_step_s": wall,
            "wall_vs_gd": wall / gd_wall if gd_wall else None,
        }
    return {"lr": res.lr, "threshold": res.threshold, "eos": eos_onset(res), "flows": flows}


def summary_markdown(summary: dict) -> str:
    cols = [
        ("flow", None),
        ("final loss", "final_loss"),
        ("final S", "final_sharpness"),
        ("max S", "max_sharpness"),
        ("median rel. dist. to GD midpoint", "median_rel_distance"),
        ("grads/step", "grads_per_step"),
        ("HVPs/step", "hvps_per_step"),
        ("wall/step vs GD", "wall_vs_gd"),
        ("diverged at", "diverged_at"),
    ]
    lines = [
        f"η = {summary['lr']:g}, stability threshold 2/η = {summary['threshold']:.4g}",
        "",
        "| " + " | ".join(c for c, _ in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for name, row in summary["flows"].items():
        cells = [name] + [_fmt(row[key]) for _, key in cols[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    eos = summary["eos"]
    lines.append("")
    if eos["onset_step"] is None:
        lines.append(f"GD's sharpness (at its {eos['measured_at']}) did not reach 2/η in this run.")
    else:
        text = (
            f"GD's sharpness (at its {eos['measured_at']}s) rose from {_fmt(eos['initial_sharpness'])} "
            f"to 2/η at step {eos['onset_step']}"
        )
        if eos["peak_step"] is not None:
            text += f", overshot to {_fmt(eos['peak_sharpness'])} (step {eos['peak_step']})"
        if eos["dip_step"] is not None:
            text += f", dipped to {_fmt(eos['dip_sharpness'])} (step {eos['dip_step']})"
        if eos["after_dip_median"] is not None:
            text += (
                f", then stayed within [{_fmt(eos['after_dip_min'])}, {_fmt(eos['after_dip_max'])}] "
                f"(median {_fmt(eos['after_dip_median'])})"
            )
        lines.append(text + ".")
    return "\n".join(lines) + "\n"


def _per_step(info: dict, key: str) -> float:
    return info[key] / max(info["steps_completed"], 1)


def _finite_last(x: np.ndarray | None) -> float | None:
    if x is None:
        return None
    ok = x[np.isfinite(x)]
    return float(ok[-1]) if ok.size else None


def _finite_first(x: np.ndarray) -> float | None:
    ok = x[np.isfinite(x)]
    return float(ok[0]) if ok.size else None


def _nanmedian(x: np.ndarray | None) -> float | None:
    if x is None or not np.isfinite(x).any():
        return None
    return float(np.nanmedian(x))


def _fmt(x: object) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        return f"{x:.4g}"
    return str(x)
