"""Measurements on a finished comparison: how each flow tracks GD, and where GD reaches EoS.

Fidelity metrics (SPEC section 5), per flow F against GD, at the records both have:

* ``distance``: ``‖c_F(k) − w*_k‖ / ‖w*_k − w_0‖`` (w* = GD's midpoint; k = 0 is left out);
* ``mean_loss``: ``|L̄_F(k) − L̄_GD(k)| / L̄_GD(k)`` with ``L̄_GD = ½[L(w_k) + L(w_{k+1})]`` and
  ``L̄_F`` the flow's prediction of it (``MEAN_LOSS_FIELD``; plain flows predict ``L(c)``); undefined
  where ``L̄_GD`` has fallen below √(machine ε) of its start;
* ``sharpness``: ``|S_F(k) − S(w*_k)| · η/2``, a fraction of the threshold;
* ``oscillation`` (flows with a ``magnitude``): ``|r(k) − o(k)| / o(k)`` with ``o = |uᵀ(w_k − w*_k)|``
  GD's oscillation along the top eigenvector at its midpoint.

Each is summarized by its median and mean over the run and over the EoS window (records from GD's
first crossing of 2/η on).
"""

from __future__ import annotations

import math

import numpy as np

from edgeflow.results import Result

REFERENCE = "midpoint"
#: the field with which a flow predicts GD's loss averaged over one oscillation period
MEAN_LOSS_FIELD = {"edge": "predicted_mean_loss", "central": "predicted_loss"}
ERRORS = ("distance", "mean_loss", "sharpness", "oscillation")


def first_crossing(steps: np.ndarray, values: np.ndarray, level: float) -> int | None:
    """First step whose measured value is at or above ``level`` (NaNs skipped)."""
    hit = np.flatnonzero(np.nan_to_num(values, nan=-np.inf) >= level)
    return int(steps[hit[0]]) if hit.size else None


def _local_maxima(
    steps: np.ndarray, values: np.ndarray, after: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Finite values from the last record before ``after`` on, and the indices (into them) of their
    local maxima at or after ``after`` — a maximum at ``after`` itself counts (the crossing record
    can be the peak when GD crosses 2/η in a jump)."""
    ok = np.isfinite(values)
    s, v = steps[ok], values[ok]
    start = max(int(np.searchsorted(s, after)) - 1, 0)
    s, v = s[start:], v[start:]
    maxima = [i for i in range(1, len(v) - 1) if s[i] >= after and v[i] >= v[i - 1] and v[i] > v[i + 1]]
    return s, v, maxima


def overshoot_peaks(
    steps: np.ndarray, values: np.ndarray, after: int | None, min_drop: float = 0.01
) -> list[tuple[int, float]]:
    """Steps and heights of the overshoot peaks at or after ``after``: local maxima that the values
    later fall below by the fraction ``min_drop`` before they exceed them. Rounding-level bumps on a
    plateau (a smooth flow pinned at or rising past 2/η) are not peaks."""
    if after is None:
        return []
    s, v, maxima = _local_maxima(steps, values, after)
    peaks = []
    for i in maxima:
        later = v[i + 1 :]
        higher = np.flatnonzero(later > v[i])
        before_higher = later[: higher[0]] if higher.size else later
        if before_higher.min() < v[i] * (1 - min_drop):
            peaks.append((int(s[i]), float(v[i])))
    return peaks


def first_peak(
    steps: np.ndarray, values: np.ndarray, after: int | None, min_drop: float = 0.01
) -> tuple[int, float] | None:
    """The first of ``overshoot_peaks``, or None."""
    peaks = overshoot_peaks(steps, values, after, min_drop)
    return peaks[0] if peaks else None


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


def oscillation_period(
    steps: np.ndarray, values: np.ndarray, after: int | None, min_drop: float = 0.01
) -> int | None:
    """Steps between the first two overshoot peaks at or after ``after`` (NaNs skipped); None when
    the values settle without a second real peak."""
    peaks = overshoot_peaks(steps, values, after, min_drop)
    return peaks[1][0] - peaks[0][0] if len(peaks) >= 2 else None


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


def _require_reference(res: Result) -> None:
    if REFERENCE not in res:
        raise ValueError(f"fidelity metrics need the {REFERENCE!r} flow (GD's center) in the run")


def error_traces(res: Result, flow: str) -> dict[str, np.ndarray]:
    """Relative errors of ``flow`` against GD at the records both have (``step`` included)."""
    _require_reference(res)
    ref, rec = res[REFERENCE], res[flow]
    steps, i_ref, i_flow = np.intersect1d(ref["step"], rec["step"], return_indices=True)
    gd_mean = ref["mean_loss"][i_ref]
    predicted = rec[MEAN_LOSS_FIELD.get(flow, "train_loss")][i_flow]
    out = {"step": steps}
    with np.errstate(divide="ignore", invalid="ignore"):
        # Once GD's loss has fallen to rounding level (relative to its start) a relative error of the
        # prediction is noise over noise, so it is undefined (NaN) there.
        floor = np.sqrt(np.finfo(np.dtype(res.config.get("dtype", "float64"))).eps) * gd_mean[0]
        out["mean_loss"] = np.where(gd_mean > floor, np.abs(predicted - gd_mean) / gd_mean, np.nan)
        out["sharpness"] = np.abs(rec["sharpness"][i_flow] - ref["sharpness"][i_ref]) * res.lr / 2
        if "magnitude" in rec:
            osc = ref["oscillation"][i_ref]
            out["oscillation"] = np.abs(rec["magnitude"][i_flow] - osc) / osc
    rel = relative_distance(res, flow) if flow != REFERENCE else None
    if rel is not None:
        _, i_dist, i_steps = np.intersect1d(res.distances["step"], steps, return_indices=True)
        distance = np.full(len(steps), np.nan)
        distance[i_steps] = rel[i_dist]
        out["distance"] = distance
    return out


def fidelity(res: Result) -> dict[str, dict]:
    """``{flow: {metric: value}}``: medians and means of each relative error over the run and the
    EoS window, and each flow's onset (crossing, first overshoot, dip, period) beside GD's."""
    _require_reference(res)
    onsets = {flow: _onset_with_period(res[flow], res.threshold) for flow in res}
    eos_from = onsets[REFERENCE]["cross"]
    out: dict[str, dict] = {}
    for flow in res:
        traces = error_traces(res, flow)
        eos = traces["step"] >= eos_from if eos_from is not None else np.zeros(len(traces["step"]), bool)
        row: dict = {}
        for name in ERRORS:
            if name not in traces:
                continue
            values = traces[name]
            for label, mask in (("", slice(None)), ("_eos", eos)):
                chunk = values[mask]
                chunk = chunk[np.isfinite(chunk)]
                row[f"{name}{label}_median"] = float(np.median(chunk)) if chunk.size else None
                row[f"{name}{label}_mean"] = float(np.mean(chunk)) if chunk.size else None
        row["onset"] = onsets[flow]
        out[flow] = row
    return out


def _onset_with_period(rec, threshold: float) -> dict:
    onset = onset_profile(rec["step"], rec["sharpness"], threshold)
    onset["period"] = oscillation_period(rec["step"], rec["sharpness"], onset["cross"])
    return onset


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
    summary = {"lr": res.lr, "threshold": res.threshold, "eos": eos_onset(res), "flows": flows}
    if REFERENCE in res:
        summary["fidelity"] = fidelity(res)
    return summary


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
    if "fidelity" in summary:
        lines += ["", *fidelity_markdown(summary["fidelity"])]
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


def fidelity_markdown(fid: dict[str, dict]) -> list[str]:
    """Fidelity against GD: medians over the run / over the EoS window, and the onset."""
    lines = [
        "Fidelity against GD (median over the run / over the EoS window; GD's center = its midpoint):",
        "",
        "| flow | rel. distance | mean-loss rel. error | sharpness error · η/2 | crosses 2/η | "
        "first peak (step) | dip (step) | period |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in fid.items():
        o = row["onset"]

        def pair(metric: str, row: dict = row) -> str:
            return f"{_fmt(row.get(metric + '_median'))} / {_fmt(row.get(metric + '_eos_median'))}"

        lines.append(
            f"| {name} | {pair('distance')} | {pair('mean_loss')} | {pair('sharpness')} | "
            f"{_fmt(o['cross'])} | {_fmt(o['peak'])} ({_fmt(o['peak_step'])}) | "
            f"{_fmt(o['dip'])} ({_fmt(o['dip_step'])}) | {_fmt(o['period'])} |"
        )
    return lines


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
