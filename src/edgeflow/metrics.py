"""Measurements on a finished comparison: how each flow tracks GD, and where GD reaches EoS.

Fidelity metrics, per flow F against GD, at the records both have:

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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # results.py imports this module (Result.metrics); here only the type names
    from edgeflow.results import FlowRecord, Result

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


#: A peak no higher than the threshold by this fraction is no overshoot: the central flow holds its
#: sharpness at 2/η (to its solver's tolerance), and its "peak" was 2/η itself.
PINNED = 1e-3


def onset_profile(steps: np.ndarray, sharpness: np.ndarray, threshold: float, dip_window: int = 80) -> dict:
    """The onset of EoS in a sharpness trace: first crossing of ``threshold`` (2/η), the first
    overshoot peak after it (above the threshold by more than ``PINNED``), and the dip (lowest value
    within ``dip_window`` steps after the peak)."""
    cross = first_crossing(steps, sharpness, threshold)
    peak = first_peak(steps, sharpness, cross)
    if peak and peak[1] <= threshold * (1 + PINNED):
        peak = None
    out = {"cross": cross, "peak_step": None, "peak": None, "dip_step": None, "dip": None}
    if peak:
        out["peak_step"], out["peak"] = peak
        sel = (steps > peak[0]) & (steps <= peak[0] + dip_window) & np.isfinite(sharpness)
        if sel.any():
            i = int(np.argmin(np.where(sel, sharpness, np.inf)))
            out["dip_step"], out["dip"] = int(steps[i]), float(sharpness[i])
    return out


def despiked(values: np.ndarray, window: int = 3) -> np.ndarray:
    """``values`` with each measurement replaced by the median of the ``window`` consecutive
    measurements centred on it (NaN records skipped and left NaN; the ``window // 2`` measurements
    at either end kept as they are, there being no neighbours on one side to judge them by).

    A running median of 3 removes every measurement that stands above (or below) both its
    neighbours alone — a one-record spike — and keeps a monotone stretch and a peak of two or more
    records (at its second-highest value); 5 also removes two spikes one record apart. ``window``
    must be odd and at least 1 (1 returns the values unchanged)."""
    if not isinstance(window, int | np.integer) or isinstance(window, bool) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd integer ≥ 1, got {window!r}")
    values = np.asarray(values, dtype=np.float64)
    out = values.copy()
    ok = np.flatnonzero(np.isfinite(values))
    half = window // 2
    v = values[ok]
    for j in range(half, len(ok) - half):
        out[ok[j]] = np.median(v[j - half : j + half + 1])
    return out


def smoothed_onset_profile(
    steps: np.ndarray, sharpness: np.ndarray, threshold: float, window: int = 3, dip_window: int = 80
) -> dict:
    """``onset_profile`` of the ``despiked`` trace: the crossing, first overshoot peak and dip of a
    sharpness whose single measurements can jump far above their neighbours and back.

    Adam's λ₁(P⁻¹H) is such a trace where a few coordinates have ν̂ near ε (P⁻¹ ≈ η/ε there): one
    record can read several times the threshold while the records 5 steps either side do not, and
    ``onset_profile`` then reports that record as the crossing and the first peak, whose height and
    step a perturbation of the start at rounding level moves at random. The peak here is that of
    the running median (``window`` measurements), so a one-record spike is neither a crossing nor a
    peak; a genuine overshoot spanning several records keeps its step and, when its top is a single
    record, reads at its second-highest value (lower by what the trace moves in one record). What it
    cannot tell from a spike: a catapult that rises and collapses between two records (the trace
    then has no smoothed peak at all, or a later one) — read the raw profile beside it."""
    steps = np.asarray(steps)
    return onset_profile(steps, despiked(sharpness, window), threshold, dip_window)


def oscillation_period(
    steps: np.ndarray, values: np.ndarray, after: int | None, min_drop: float = 0.01
) -> int | None:
    """Steps between the first two overshoot peaks at or after ``after`` (NaNs skipped); None when
    the values settle without a second real peak."""
    peaks = overshoot_peaks(steps, values, after, min_drop)
    return peaks[1][0] - peaks[0][0] if len(peaks) >= 2 else None


def field(rec: FlowRecord, name: str) -> np.ndarray:
    """``rec[name]`` as floats, or NaNs over the flow's records where it lacks the field: a flow that
    diverged at step 0 recorded nothing but ``step``, and older files lack newer fields."""
    if name in rec:
        return np.asarray(rec[name], dtype=np.float64)
    return np.full(len(record_steps(rec)), np.nan)


def record_steps(rec: FlowRecord) -> np.ndarray:
    """The steps of a flow's records (empty when it recorded nothing)."""
    return np.asarray(rec.get("step", np.zeros(0, dtype=np.int64)))


def stop_reason(info: dict) -> tuple[str, int | None, str | None] | None:
    """Why a flow's records end before the run does: ``("failed", step, message)`` when its
    integrator failed (a numerical failure, not a property of the flow), ``("diverged", step,
    None)`` when the flow itself diverged; None when it ran on. Older files have no ``failed_at``."""
    if info.get("failed_at") is not None or info.get("failure"):
        return "failed", info.get("failed_at"), info.get("failure") or "no message"
    if info.get("diverged_at") is not None:
        return "diverged", info["diverged_at"], None
    return None


def relative_distance(res: Result, flow: str, reference: str = REFERENCE) -> np.ndarray | None:
    """``‖c_flow − w*‖ / ‖w* − w0‖`` over the shared record steps (NaN where undefined)."""
    key, scale_key = f"{flow}-{reference}", f"{reference}-w0"
    if key not in res.distances or scale_key not in res.distances:
        return None
    scale = np.asarray(res.distances[scale_key], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, res.distances[key] / scale, np.nan)


def gd_reference(res: Result) -> str | None:
    """The flow at which GD's sharpness is read: its midpoint, else GD itself (the first of them
    with a measured sharpness); None when neither ran."""
    present = [f for f in (REFERENCE, "gd") if f in res]
    measured = [f for f in present if np.isfinite(field(res[f], res.sharpness_field)).any()]
    return (measured or present or [None])[0]


def eos_onset(res: Result) -> dict:
    """GD's sharpness against 2/η, measured at its midpoints (else its iterates): the first and last
    measurements and the largest, where it first reaches 2/η (``onset_step``; the first measurement
    when it starts above), where it first falls back below after starting above (``below_step``),
    its first overshoot peak and the dip after it, and the range it keeps after the dip. All None
    (``measured_at`` too) when GD did not run; the values None when the sharpness was never measured."""
    ref = gd_reference(res)
    out: dict = {"measured_at": ref, "threshold": res.threshold, **_threshold_words(res)}
    profile = {"cross": None, "peak_step": None, "peak": None, "dip_step": None, "dip": None}
    ends = dict.fromkeys(("initial", "initial_step", "last", "last_step", "max", "max_step", "below_step"))
    after = np.zeros(0)
    if ref is not None:
        steps, s = record_steps(res[ref]), field(res[ref], res.sharpness_field)
        measured = np.flatnonzero(np.isfinite(s))
        if measured.size:
            first, last = measured[0], measured[-1]
            top = measured[np.argmax(s[measured])]
            ends |= {"initial": float(s[first]), "initial_step": int(steps[first])}
            ends |= {"last": float(s[last]), "last_step": int(steps[last])}
            ends |= {"max": float(s[top]), "max_step": int(steps[top])}
            if s[first] >= res.threshold:
                below = measured[s[measured] < res.threshold]
                ends["below_step"] = int(steps[below[0]]) if below.size else None
        profile = onset_profile(steps, s, res.threshold)
        if profile["dip_step"] is not None:
            after = s[(steps > profile["dip_step"]) & np.isfinite(s)]
    return {
        **out,
        "initial_sharpness": ends["initial"],
        "initial_step": ends["initial_step"],
        "onset_step": profile["cross"],
        "below_step": ends["below_step"],
        "peak_step": profile["peak_step"],
        "peak_sharpness": profile["peak"],
        "dip_step": profile["dip_step"],
        "dip_sharpness": profile["dip"],
        "after_dip_median": float(np.median(after)) if after.size else None,
        "after_dip_min": float(after.min()) if after.size else None,
        "after_dip_max": float(after.max()) if after.size else None,
        "max_sharpness": ends["max"],
        "max_step": ends["max_step"],
        "last_sharpness": ends["last"],
        "last_step": ends["last_step"],
    }


def _threshold_words(res: Result) -> dict[str, str]:
    """How the text names the threshold and the quantity held against it."""
    if not res.preconditioned:
        return {"level": "2/η", "quantity": "sharpness", "symbol": "S", "subject": "GD"}
    return {
        "level": "the threshold",
        "quantity": "effective sharpness λ₁(P⁻¹H)",
        "symbol": "S_eff",
        "subject": res.optimizer,
    }


def _require_reference(res: Result) -> None:
    if REFERENCE not in res:
        raise ValueError(f"fidelity metrics need the {REFERENCE!r} flow (GD's center) in the run")


def error_traces(res: Result, flow: str) -> dict[str, np.ndarray]:
    """Relative errors of ``flow`` against GD at the records both have (``step`` included); empty
    arrays when they share none (either diverged at step 0)."""
    _require_reference(res)
    ref, rec = res[REFERENCE], res[flow]
    steps, i_ref, i_flow = np.intersect1d(record_steps(ref), record_steps(rec), return_indices=True)
    gd_mean = field(ref, "mean_loss")[i_ref]
    predicted = field(rec, MEAN_LOSS_FIELD.get(flow, "train_loss"))[i_flow]
    out = {"step": steps}
    with np.errstate(divide="ignore", invalid="ignore"):
        # Once GD's loss has fallen to rounding level (relative to its start) a relative error of the
        # prediction is noise over noise, so it is undefined (NaN) there.
        start = _finite_first(field(ref, "mean_loss"))
        floor = _sqrt_eps(res) * start if start is not None else np.inf
        out["mean_loss"] = np.where(gd_mean > floor, np.abs(predicted - gd_mean) / gd_mean, np.nan)
        key = res.sharpness_field
        gd_s = field(ref, key)[i_ref]
        if res.preconditioned:  # a fraction of the optimizer's threshold on λ₁(P⁻¹H)
            out["sharpness"] = np.abs(field(rec, key)[i_flow] - gd_s) / res.threshold
        else:
            out["sharpness"] = np.abs(field(rec, key)[i_flow] - gd_s) * res.lr / 2
        if "magnitude" in rec:
            osc = field(ref, "oscillation")[i_ref]
            out["oscillation"] = np.abs(field(rec, "magnitude")[i_flow] - osc) / osc
    rel = relative_distance(res, flow) if flow != REFERENCE else None
    if rel is not None and "step" in res.distances:
        _, i_dist, i_steps = np.intersect1d(res.distances["step"], steps, return_indices=True)
        distance = np.full(len(steps), np.nan)
        distance[i_steps] = rel[i_dist]
        out["distance"] = distance
    return out


def _sqrt_eps(res: Result) -> float:
    try:
        dtype = np.dtype(res.config.get("dtype", "float64"))
    except TypeError:  # a torch-only dtype name (bfloat16): float32's resolution is the closer bound
        dtype = np.dtype("float32")
    return float(np.sqrt(np.finfo(dtype).eps))


def fidelity(res: Result) -> dict[str, dict]:
    """``{flow: {metric: value}}``: medians and means of each relative error over the run and the
    EoS window, and each flow's onset (crossing, first overshoot, dip, period) beside GD's."""
    _require_reference(res)
    onsets = {flow: _onset_with_period(res[flow], res.threshold, res.sharpness_field) for flow in res}
    eos_from = onsets[REFERENCE]["cross"]
    for flow, onset in onsets.items():
        # A model that reaches 2/η where GD never does has no onset to compare: it is the model's
        # error. Marked only then, so that onsets stored before this mark compare equal to new ones.
        if flow != REFERENCE and eos_from is None and onset["cross"] is not None:
            onset["gd_never_crosses"] = True
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


def _onset_with_period(rec: FlowRecord, threshold: float, key: str = "sharpness") -> dict:
    steps, s = record_steps(rec), field(rec, key)
    onset = onset_profile(steps, s, threshold)
    onset["period"] = oscillation_period(steps, s, onset["cross"])
    return onset


def run_progress(res: Result) -> dict:
    """``complete`` (False when the run was interrupted), the ``steps`` asked for and the largest
    step any flow recorded (``reached_step``; None when no flow recorded anything)."""
    last = [int(record_steps(res[f])[-1]) for f in res if len(record_steps(res[f]))]
    return {
        "complete": bool(getattr(res, "complete", True)),
        "steps": res.config.get("steps"),
        "reached_step": max(last) if last else None,
    }


def fidelity_unavailable(res: Result) -> str | None:
    """Why the fidelity section cannot be computed for this run, or None when it can."""
    if REFERENCE not in res:
        flows = ",".join([*res, REFERENCE])
        return f"fidelity against GD needs the `{REFERENCE}` flow (GD's center); run it with --flows {flows}"
    if not len(record_steps(res[REFERENCE])):
        return f"fidelity against GD is undefined: the `{REFERENCE}` flow (GD's center) has no records"
    return None


def summarize(res: Result) -> dict:
    """Per-flow summary (last loss and measured sharpness with their steps, distance to GD's
    midpoint, cost per step, why a flow stopped), GD's EoS onset, fidelity against GD, and notes
    for the reader. JSON-ready: plain Python numbers, None where a value is undefined."""
    gd_wall = _wall_per_step(res["gd"].info) if "gd" in res else None
    progress = run_progress(res)
    summary: dict = {"lr": res.lr, "threshold": res.threshold, "run": progress, **_threshold_words(res)}
    summary["optimizer"] = res.optimizer
    summary["flows"] = {name: _flow_summary(res, name, gd_wall, progress) for name in res}
    summary["eos"] = eos_onset(res)
    reason = fidelity_unavailable(res)
    if reason is None:
        summary["fidelity"] = fidelity(res)
    else:
        summary["fidelity_unavailable"] = reason
    summary["notes"] = _notes(summary)
    return _jsonable(summary)


def _flow_summary(res: Result, name: str, gd_wall: float | None, progress: dict) -> dict:
    rec, info = res[name], res[name].info
    steps = record_steps(rec)
    s = field(rec, res.sharpness_field)
    rel = relative_distance(res, name)
    done = _steps_completed(info, steps)
    cost = info.get("cost", {})
    wall = _wall_per_step(info)
    last_loss, last_loss_step = _last_finite(steps, field(rec, "train_loss"))
    last_s, last_s_step = _last_finite(steps, s)
    rel_steps = res.distances.get("step", np.zeros(0))
    last_rel, last_rel_step = _last_finite(rel_steps, rel) if rel is not None else (None, None)
    return {
        "status": _status(info, steps, progress),
        "records": len(steps),
        "last_step": int(steps[-1]) if len(steps) else None,
        "steps_completed": done,
        "diverged_at": info.get("diverged_at"),
        "failed_at": info.get("failed_at"),
        "failure": info.get("failure"),
        "last_loss": last_loss,
        "last_loss_step": last_loss_step,
        "last_sharpness": last_s,
        "last_sharpness_step": last_s_step,
        "max_sharpness": float(s[np.isfinite(s)].max()) if np.isfinite(s).any() else None,
        "median_rel_distance": _nanmedian(rel),
        "last_rel_distance": last_rel,
        "last_rel_distance_step": last_rel_step,
        "grads_per_step": cost["grad"] / done if done and "grad" in cost else None,
        "hvps_per_step": cost["hvp"] / done if done and "hvp" in cost else None,
        "wall_per_step_s": wall,
        "wall_vs_gd": wall / gd_wall if wall is not None and gd_wall else None,
    }


def _status(info: dict, steps: np.ndarray, progress: dict) -> str:
    stop = stop_reason(info)
    if stop is not None:
        kind, k, _ = stop
        what = "integrator failed" if kind == "failed" else "diverged"
        return f"{what} at step {k}" if k is not None else what
    if not progress["complete"]:
        return f"interrupted after step {int(steps[-1])}" if len(steps) else "interrupted before step 0"
    return "completed"


def _notes(summary: dict) -> list[str]:
    """Sentences for the reader: an interrupted run, and each flow whose records end early."""
    notes = []
    run = summary["run"]
    if not run["complete"]:
        of = f" of {run['steps']}" if run["steps"] is not None else ""
        reached = run["reached_step"]
        notes.append(
            f"partial run: reached step {reached}{of} (interrupted)"
            if reached is not None
            else f"partial run: no step{of} was recorded (interrupted)"
        )
    for name, row in summary["flows"].items():
        if row["failed_at"] is not None or row["failure"]:
            at = f" at step {row['failed_at']}" if row["failed_at"] is not None else ""
            notes.append(
                f"{name}: integrator failed{at}: {row['failure'] or 'no message'} "
                f"(a numerical failure of the integrator, not a divergence of the flow); {_records_end(row)}"
            )
        elif row["diverged_at"] is not None:
            notes.append(
                f"{name} diverged at step {row['diverged_at']} (non-finite loss or parameters); "
                f"{_records_end(row)}"
            )
    return notes


def _records_end(row: dict) -> str:
    if row["last_step"] is None:
        return "it has no records."
    return f"its records stop at step {row['last_step']}."


def summary_markdown(summary: dict) -> str:
    """The summary as markdown: the per-flow table, notes, fidelity (or why it is missing) and GD's
    EoS onset."""
    head = f"η = {summary['lr']:g}, stability threshold 2/η = {summary['threshold']:.4g}"
    if summary.get("optimizer", "gd") != "gd":
        head = (
            f"optimizer {summary['optimizer']}, η = {summary['lr']:g}, stability threshold "
            f"{summary['threshold']:.4g} on the effective sharpness λ₁(P⁻¹H)"
        )
    lines = [head, ""]
    notes = summary.get("notes", [])
    partial = [n for n in notes if n.startswith("partial run")]
    lines += [f"**{n}**" for n in partial] + ([""] if partial else [])
    lines += _flow_table(summary["flows"], summary.get("symbol", "S"))
    others = [n for n in notes if n not in partial]
    if others:
        lines += ["", *(f"- {n}" for n in others)]
    if "fidelity" in summary:
        lines += ["", *fidelity_markdown(summary["fidelity"], summary.get("level", "2/η"))]
    elif summary.get("fidelity_unavailable"):
        lines += ["", f"No fidelity section: {summary['fidelity_unavailable']}."]
    lines += ["", _eos_sentence(summary["eos"], summary["flows"])]
    return "\n".join(lines) + "\n"


def _flow_table(flows: dict[str, dict], symbol: str = "S") -> list[str]:
    cols = [
        ("last loss (step)", "last_loss", "last_loss_step"),
        (f"last {symbol} (step)", "last_sharpness", "last_sharpness_step"),
        (f"max {symbol}", "max_sharpness", None),
        ("median rel. dist. to GD midpoint", "median_rel_distance", None),
        ("grads/step", "grads_per_step", None),
        ("HVPs/step", "hvps_per_step", None),
        ("wall/step vs GD", "wall_vs_gd", None),
        ("status", "status", None),
    ]
    lines = [
        "| flow | " + " | ".join(c for c, _, _ in cols) + " |",
        "|" + "|".join("---" for _ in range(len(cols) + 1)) + "|",
    ]
    for name, row in flows.items():
        cells = [name] + [fmt_at(row[key], row[at]) if at else fmt(row[key]) for _, key, at in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _eos_sentence(eos: dict, flows: dict[str, dict]) -> str:
    """One sentence on GD's sharpness against 2/η, for every course it can take: never measured,
    never reaching 2/η, starting above it, rising through it (with overshoot and dip), and each of
    these cut short by a divergence or a failure."""
    ref = eos["measured_at"]
    if ref is None:
        return "GD was not run (neither `gd` nor `midpoint` is among the flows): its EoS onset is unknown."
    subject = f"{eos.get('subject', 'GD')}'s {eos.get('quantity', 'sharpness')}"
    subject += f" (at its {'midpoints' if ref == REFERENCE else 'iterates'})"
    row = flows[ref]
    stopped = row["diverged_at"] is not None or row["failed_at"] is not None or bool(row["failure"])
    until = f" before `{ref}` {row['status']}" if stopped else " in this run"
    if eos["initial_sharpness"] is None:
        why = f": `{ref}` {row['status']}" if stopped else ""
        return f"{subject} was never measured in this run{why}."
    if eos["onset_step"] is None:
        return f"{subject} stayed below {_stayed_below(eos, until)}."
    text = f"{subject} {_through(eos)}"
    if eos["initial_sharpness"] >= eos["threshold"] and eos["below_step"] is None:
        text += f"; it never fell below {eos.get('level', '2/η')}{until}"
    elif stopped:
        text += f"; then `{ref}` {row['status']}"
    return text + "."


def _stayed_below(eos: dict, until: str) -> str:
    threshold = eos["threshold"]
    text = f"{eos.get('level', '2/η')} = {fmt(threshold)}{until}: from {_start(eos)}"
    if eos["max_step"] not in (eos["initial_step"], eos["last_step"]):
        text += f", at most {_apart(eos['max_sharpness'], threshold)} (step {eos['max_step']})"
    return text + _last(eos)


def _through(eos: dict) -> str:
    """The course of a sharpness that reaches 2/η: from its start (below or above), the events in
    the order of their steps, then where it stayed after the dip or where it ended."""
    threshold = eos["threshold"]
    label = eos.get("level", "2/η")
    level = f"{label} = {fmt(threshold)}"
    events: list[tuple[int, str]] = []
    if eos["initial_sharpness"] >= threshold:
        where = "above" if eos["initial_sharpness"] > threshold else "at"
        opening = f"started {where} {level}, at {_start(eos)}"
        if eos["below_step"] is not None:
            events.append((eos["below_step"], f"fell below {label} at step {eos['below_step']}"))
        peak = "peaked at"
    else:
        opening = f"rose from {_start(eos)} to {level} at step {eos['onset_step']}"
        peak = "overshot to"
    if eos["peak_step"] is not None:
        events.append((eos["peak_step"], f"{peak} {fmt(eos['peak_sharpness'])} (step {eos['peak_step']})"))
    if eos["dip_step"] is not None:
        events.append((eos["dip_step"], f"dipped to {fmt(eos['dip_sharpness'])} (step {eos['dip_step']})"))
    text = ", ".join([opening, *(phrase for _, phrase in sorted(events))])
    if eos["after_dip_median"] is None:
        return text + _last(eos)
    low, high, median = (fmt(eos[f"after_dip_{k}"]) for k in ("min", "max", "median"))
    ratio = f"{eos['after_dip_median'] / threshold:.2f} × {label}"
    if low == high:
        return text + f", then stayed at {median} ({ratio})"
    return text + f", then stayed within [{low}, {high}] (median {median} = {ratio})"


def _start(eos: dict) -> str:
    return f"{_apart(eos['initial_sharpness'], eos['threshold'])} (step {eos['initial_step']})"


def _last(eos: dict) -> str:
    """``, last measured X (step k)``, unless the last measurement is one named already."""
    named = {eos["initial_step"], eos["peak_step"], eos["dip_step"]}
    if eos["last_step"] in named:
        return ""
    return f", last measured {fmt(eos['last_sharpness'])} (step {eos['last_step']})"


def _apart(value: float, threshold: float) -> str:
    """``value`` with as many digits as it takes not to print as the threshold it differs from
    (a sharpness of 9.99996 below 2/η = 10 is not "10")."""
    text = fmt(value)
    digits = 4
    while value != threshold and text == fmt(threshold) and digits < 17:
        digits += 2
        text = f"{value:.{digits}g}"
    return text


def fidelity_markdown(fid: dict[str, dict], level: str = "2/η") -> list[str]:
    """Fidelity against GD: medians over the run / over the EoS window, and the onset."""
    error = "sharpness error · η/2" if level == "2/η" else "eff. sharpness error / threshold"
    lines = [
        "Fidelity against GD (median over the run / over the EoS window; GD's center = its midpoint):",
        "",
        f"| flow | rel. distance | mean-loss rel. error | {error} | crosses {level} | "
        "first peak (step) | dip (step) | period |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in fid.items():
        o = row["onset"]

        def pair(metric: str, row: dict = row) -> str:
            return f"{fmt(row.get(metric + '_median'))} / {fmt(row.get(metric + '_eos_median'))}"

        lines.append(
            f"| {name} | {pair('distance')} | {pair('mean_loss')} | {pair('sharpness')} | "
            f"{_crossing(o)} | {fmt(o['peak'])} ({fmt(o['peak_step'])}) | "
            f"{fmt(o['dip'])} ({fmt(o['dip_step'])}) | {fmt(o['period'])} |"
        )
    return lines


def _crossing(onset: dict) -> str:
    if onset.get("gd_never_crosses"):
        return f"{fmt(onset['cross'])}, GD never: model error"
    return fmt(onset["cross"])


def _steps_completed(info: dict, steps: np.ndarray) -> int | None:
    """Steps the flow took; older or hand-made files without the count fall back to its last record."""
    done = info.get("steps_completed")
    if done is None and len(steps):
        done = int(steps[-1])
    return done


def _wall_per_step(info: dict) -> float | None:
    # a flow that took no step has no cost per step (not a cost of zero)
    done = info.get("steps_completed")
    if not done or info.get("wall_time") is None:
        return None
    return info["wall_time"] / done


def _last_finite(steps: np.ndarray, x: np.ndarray | None) -> tuple[float | None, int | None]:
    """The last finite value and its step: a record without a measurement (NaN) is never reported
    as the final value."""
    if x is None:
        return None, None
    ok = np.flatnonzero(np.isfinite(x))
    if not ok.size:
        return None, None
    return float(x[ok[-1]]), int(steps[ok[-1]])


def _finite_first(x: np.ndarray) -> float | None:
    ok = x[np.isfinite(x)]
    return float(ok[0]) if ok.size else None


def _nanmedian(x: np.ndarray | None) -> float | None:
    if x is None or not np.isfinite(x).any():
        return None
    return float(np.median(x[np.isfinite(x)]))


def _jsonable(x: object) -> object:
    """Plain Python containers and numbers; NaN and ±inf become None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [_jsonable(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    return x


def fmt(x: object) -> str:
    """A table cell: 4 significant digits, "–" for a missing or undefined value."""
    if x is None:
        return "–"
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        return f"{x:.4g}"
    return str(x)


def fmt_at(x: object, step: int | None) -> str:
    """A value with the step it was measured at: ``4.998 (95)``."""
    return fmt(x) if x is None or step is None else f"{fmt(x)} ({step})"
