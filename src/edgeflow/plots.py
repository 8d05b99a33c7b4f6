"""Figures of a run: loss, sharpness against the 2/η threshold, distance to GD's midpoint.

Every panel plots finite values only (positive ones on log axes), so a flow that diverged, failed
or recorded nothing never breaks a figure; values far above those of the flows that ran on are
clipped at the edge of the axis, and each flow's divergence or integrator failure is marked with a
vertical line in its color.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from edgeflow.metrics import field as flow_field
from edgeflow.metrics import record_steps, relative_distance, run_progress, stop_reason
from edgeflow.results import Result

STYLE = {
    "gd": {"color": "0.6", "lw": 0.8, "label": "GD"},
    "midpoint": {"color": "black", "lw": 1.4, "label": "GD midpoint"},
    "gradient": {"color": "tab:blue", "lw": 1.4, "ls": "--", "label": "gradient flow"},
    "modified": {"color": "tab:green", "lw": 1.4, "ls": "-.", "label": "modified flow"},
    "edge": {"color": "tab:red", "lw": 1.6, "label": "Edge Flow"},
    "central": {"color": "tab:orange", "lw": 1.4, "ls": ":", "label": "central flow"},
}

#: Above this nothing is plotted as is: matplotlib's margins and transforms overflow near 1e308,
#: and no loss or sharpness this large says more than "diverged".
HUGE = 1e100
#: How far a log axis reaches above the largest value of the flows that ran on (decades).
DECADES_ABOVE = 3


def style(flow: str) -> dict:
    return STYLE.get(flow, {"lw": 1.2, "label": flow})


@dataclass
class _Series:
    """One curve of a panel: the flow whose divergence ends it, its steps and values, plot style."""

    flow: str
    steps: np.ndarray
    values: np.ndarray
    kw: dict = field(default_factory=dict)


def _axes_style(ax, res: Result, xlabel: str = "step (GD iterations)") -> None:
    ax.set_xlabel(xlabel)
    ax.set_xlim(*_step_range(res))
    ax.grid(alpha=0.3, lw=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _step_range(res: Result) -> tuple[float, float]:
    """The same steps on every panel: up to the last record or stop of any flow (a flow whose
    losses underflow to 0 would otherwise end the loss panel early), with matplotlib's 5% margins."""
    ends = [int(record_steps(res[f])[-1]) for f in res if len(record_steps(res[f]))]
    ends += [stop[1] for f in res if (stop := stop_reason(res[f].info)) and stop[1] is not None]
    last = max(ends, default=0) or res.config.get("steps") or 1
    return -0.05 * last, 1.05 * last


def _flow_series(res: Result, flow: str, name: str, **kw) -> _Series:
    rec = res[flow]
    return _Series(flow, record_steps(rec), flow_field(rec, name), kw or style(flow))


def _draw(ax, res: Result, series: list[_Series], *, log: bool, keep_in_view: tuple[float, ...] = ()) -> bool:
    """Plot the finite (on a log axis: positive) values of each series, clipped so that huge values
    of a diverging flow leave the top of the axis instead of squashing the others; ``keep_in_view``
    values (a threshold) count as data of a flow that ran on. False when nothing could be drawn."""
    shown = []
    for s in series:
        v = np.asarray(s.values, dtype=np.float64)
        ok = np.isfinite(v) & (v > 0) if log else np.isfinite(v)
        shown.append((s, np.asarray(s.steps)[ok], v[ok]))
    limits = _limits(res, shown, log, keep_in_view)
    for s, x, y in shown:
        if not x.size:
            continue  # no legend entry for a flow with nothing to show; its stop marker says why
        if limits is not None:
            y = np.clip(y, *_clip_range(limits, log))
        ax.plot(x, y, **({"marker": "o", "ms": 3} if x.size == 1 else {}), **s.kw)
    drew = any(x.size for _, x, _ in shown)
    if not drew:
        ax.text(0.5, 0.7, "nothing finite to plot", transform=ax.transAxes, ha="center", color="0.4")
    elif log:
        _widen_flat_log_range(ax, np.concatenate([y for _, _, y in shown]))
        ax.set_yscale("log")
    if drew and limits is not None:
        ax.set_ylim(*limits)
        _include(ax, () if log else keep_in_view)
    return drew


def _include(ax, values: tuple[float, ...]) -> None:
    # set_ylim stops autoscaling, so lines drawn later (2/η) would not widen the axis themselves
    if not values:
        return
    bottom, top = ax.get_ylim()
    pad = 0.05 * (top - bottom)
    ax.set_ylim(min(bottom, min(values) - pad), max(top, max(values) + pad))


def _widen_flat_log_range(ax, y: np.ndarray) -> None:
    # matplotlib's log autoscale warns ("identical low and high ylims") on values equal up to
    # rounding, e.g. a constant relative distance; give such data a decade around it instead
    lo, hi = float(y.min()), float(y.max())
    if hi <= lo * (1 + 1e-9):
        ax.set_ylim(lo / np.sqrt(10), hi * np.sqrt(10))


def _limits(
    res: Result, shown: list, log: bool, keep_in_view: tuple[float, ...]
) -> tuple[float | None, float | None] | None:
    """y-limits that keep the flows that ran on readable, or None when every value fits anyway."""
    every = np.concatenate([y for _, _, y in shown] + [np.zeros(0)])
    if not every.size:
        return None
    ref = _reference_values(res, shown, log, keep_in_view)
    lo, hi = float(ref.min()), float(ref.max())
    if log:
        top = min(hi * 10.0**DECADES_ABOVE, HUGE)
        return (None, top) if every.max() > top else None
    span = hi - lo or max(abs(hi), 1.0)
    bottom, top = max(lo - span, -HUGE), min(hi + span, HUGE)
    if every.min() >= bottom and every.max() <= top:
        return None
    return (bottom if every.min() < bottom else None, top if every.max() > top else None)


def _reference_values(res: Result, shown: list, log: bool, keep_in_view: tuple[float, ...]) -> np.ndarray:
    """The values the axis range is built around: those of the flows that ran on, and the start of
    each flow that stopped (on a linear axis the blow-up of a stopped flow would hide everything
    else; on a log axis, when every flow stopped, the blow-up itself is what there is to see)."""
    ran_on = [y for s, _, y in shown if stop_reason(res[s.flow].info) is None]
    starts = [y[:1] for s, _, y in shown if stop_reason(res[s.flow].info) is not None]
    ref = np.concatenate([*ran_on, np.array(keep_in_view), *([] if log else starts), np.zeros(0)])
    ref = ref[np.abs(ref) <= HUGE]
    if not ref.size:  # every flow stopped (log axis): keep whatever is not absurdly large
        every = np.concatenate([y for _, _, y in shown])
        ref = every[np.abs(every) <= HUGE]
    return ref if ref.size else np.array([HUGE if log else 1.0])


def _clip_range(limits: tuple[float | None, float | None], log: bool) -> tuple[float, float]:
    """Just beyond the limits, so clipped curves still run off the edge of the axis."""
    bottom, top = limits
    if log:
        return 0.0, np.inf if top is None else top * 10.0
    span = (top if top is not None else 0.0) - (bottom if bottom is not None else 0.0)
    margin = abs(span) or 1.0
    return (
        -np.inf if bottom is None else bottom - margin,
        np.inf if top is None else top + margin,
    )


def mark_stops(res: Result, ax) -> None:
    """A vertical line, in the flow's color, at each flow's divergence or integrator failure."""
    for flow in res:
        stop = stop_reason(res[flow].info)
        if stop is None or stop[1] is None:
            continue
        kind, k, _ = stop
        what = "integrator failed" if kind == "failed" else "diverged"
        ax.axvline(
            k,
            color=style(flow).get("color", "tab:gray"),
            lw=1.0,
            ls=(0, (1, 1.5)) if kind == "failed" else (0, (4, 2)),
            alpha=0.9,
            label=f"{style(flow)['label']} {what} (step {k})",
        )


def plot_loss(res: Result, ax) -> None:
    series = [_flow_series(res, name, "train_loss") for name in res]
    if "midpoint" in res:
        kw = {"color": "black", "lw": 0.8, "ls": ":", "label": "GD period-avg. loss"}
        series.append(_flow_series(res, "midpoint", "mean_loss", **kw))
    if _draw(ax, res, series, log=True):
        _clip_below_gd(res, ax)
    mark_stops(res, ax)
    ax.set_ylabel("training loss")
    _axes_style(ax, res)


def _clip_below_gd(res: Result, ax) -> None:
    """Flows that converge to rounding-level losses would squash GD's curve; keep 3 decades below it."""
    ref = [flow_field(res[f], "train_loss") for f in ("gd", "midpoint") if f in res]
    vals = np.concatenate(ref) if ref else np.array([])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size:
        ax.set_ylim(bottom=max(ax.get_ylim()[0], vals.min() * 1e-3))


def plot_sharpness(res: Result, ax) -> None:
    series = [_flow_series(res, name, "sharpness") for name in res]
    _draw(ax, res, series, log=False, keep_in_view=(res.threshold,))
    ax.axhline(res.threshold, color="tab:purple", lw=1.0, ls="--", label="2/η")
    mark_stops(res, ax)
    ax.set_ylabel("sharpness  λ_max(∇²L)")
    _axes_style(ax, res)


def plot_magnitude(res: Result, ax) -> bool:
    """Edge Flow's magnitude r against GD's measured oscillation |uᵀ(w_k − w*_k)|."""
    series = []
    if "midpoint" in res:
        kw = {"color": "black", "lw": 1.2, "label": "GD oscillation"}
        series.append(_flow_series(res, "midpoint", "oscillation", **kw))
    if "edge" in res:
        series.append(_flow_series(res, "edge", "magnitude"))
    drew = _draw(ax, res, series, log=True)
    mark_stops(res, ax)
    ax.set_ylabel("oscillation magnitude r")
    _axes_style(ax, res)
    return drew


def plot_edge_loss(res: Result, ax) -> None:
    """GD's per-iterate loss against Edge Flow's per-iterate prediction L(c + s_k r u)."""
    series = [
        _flow_series(res, "gd", "train_loss", color="0.6", lw=0.8, label="GD loss L(w_k)"),
        _flow_series(
            res,
            "edge",
            "predicted_loss",
            color="tab:red",
            lw=0.6,
            alpha=0.8,
            label="Edge Flow L(c + s_k r u)",
        ),
    ]
    if "midpoint" in res:
        kw = {"color": "black", "lw": 1.2, "label": "GD period-avg. loss"}
        series.append(_flow_series(res, "midpoint", "mean_loss", **kw))
    kw = {"color": "tab:red", "lw": 1.4, "ls": "--", "label": "Edge Flow L_r(c)"}
    series.append(_flow_series(res, "edge", "predicted_mean_loss", **kw))
    _draw(ax, res, series, log=True)
    mark_stops(res, ax)
    ax.set_ylabel("training loss")
    _axes_style(ax, res)


def _distance_flows(res: Result) -> list[str]:
    """Flows with a distance to GD's midpoint (none when the midpoint was not run)."""
    return [n for n in res if n != "midpoint" and relative_distance(res, n) is not None]


def plot_distance(res: Result, ax) -> bool:
    steps = res.distances.get("step", np.zeros(0))
    series = [_Series(n, steps, relative_distance(res, n), style(n)) for n in _distance_flows(res)]
    drew = _draw(ax, res, series, log=True) if series else False
    mark_stops(res, ax)
    ax.set_ylabel("‖c − w*‖ / ‖w* − w₀‖")
    _axes_style(ax, res)
    return drew


def plot_run(res: Result, outdir: str | Path) -> list[Path]:
    """Write ``loss.png``, ``sharpness.png``, ``edge_loss.png`` (when GD and Edge Flow ran) and
    ``overview.png`` into ``outdir``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    title = _title(res)
    paths = []
    single = [("loss.png", plot_loss), ("sharpness.png", plot_sharpness)]
    if "gd" in res and "edge" in res:
        single.append(("edge_loss.png", plot_edge_loss))
    for fname, draw in single:
        fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
        draw(res, ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, frameon=False)
        ax.set_title(title, fontsize=10)
        paths.append(_save(fig, outdir / fname))
    paths.append(_overview(res, outdir / "overview.png", title))
    return paths


def _overview(res: Result, path: Path, title: str) -> Path:
    panels = [plot_loss, plot_sharpness]
    if "edge" in res or "midpoint" in res:
        panels.append(plot_magnitude)
    if _distance_flows(res):
        panels.append(plot_distance)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 1.6, 3.8), layout="constrained")
    for ax, draw in zip(axes, panels, strict=True):
        draw(res, ax)
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside right center", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _title(res: Result) -> str:
    title = f"{res.config.get('problem', '')}  η = {res.lr:g}"
    progress = run_progress(res)
    if not progress["complete"]:
        of = f" of {progress['steps']}" if progress["steps"] is not None else ""
        title += f"  (partial run: reached step {progress['reached_step']}{of})"
    if len(list(res)) and all(stop_reason(res[f].info) for f in res):
        title += "  (every flow stopped early)"
    return title


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=160)
    plt.close(fig)
    return path
