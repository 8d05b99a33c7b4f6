"""Figures of a run: loss, sharpness against the 2/η threshold, oscillation, distance to GD's midpoint.

One style serves every figure of the package and of the benchmarks: ``paper_style()`` (matplotlib
settings), ``new_figure`` / ``finish_axes`` / ``add_legend`` / ``add_caption`` / ``save_figure``,
``draw_threshold`` (a labelled horizontal line) and ``mark_event`` (a labelled vertical line)::

    with paper_style():
        fig, axes = new_figure(1, 2)
        for ax in axes[0]:
            ...  # plot
            finish_axes(ax, title="Final loss against η", xlabel="learning rate η", ylabel="loss")
            add_legend(ax)  # after the labels: it goes under them
        fig.suptitle("problem: ...")
        add_caption(fig, "what the symbols mean; $math$ allowed")
        save_figure(fig, path)

Every panel plots finite values only (positive ones on log axes), so a flow that diverged, failed
or recorded nothing never breaks a figure. The y-range is built around the flows that ran on;
values beyond it run off the edge of the axis, and the step where a curve leaves the axis (off
scale above, below the axis or exactly 0 on a log axis) is marked at that edge and named in the
panel's legend. Each flow's divergence or integrator failure is a vertical line with its text.
GD's per-iterate values are drawn as a light band over its step-to-step (period-2) oscillation,
underneath the models, so that the oscillation never hides them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation
from matplotlib.transforms import ScaledTranslation, blended_transform_factory

from edgeflow.metrics import eos_onset, record_steps, relative_distance, run_progress, stop_reason
from edgeflow.metrics import field as flow_field
from edgeflow.results import Result

# ------------------------------------------------------------------------------------- the style
#: matplotlib settings of every figure: sizes for a figure printed about as wide as a page.
PAPER_RC: dict[str, object] = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.titlelocation": "left",
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7.5,
    "figure.titlesize": 10.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "legend.frameon": True,
    "legend.framealpha": 0.85,
    "legend.edgecolor": "none",
    "legend.borderaxespad": 0.4,
    "legend.handlelength": 2.2,
    "lines.linewidth": 1.4,
    "mathtext.fontset": "dejavusans",
    "savefig.dpi": 200,
    "figure.constrained_layout.use": True,
}
#: One panel's size in inches; figures are a whole number of panels.
PANEL = (4.4, 3.2)
STEP_LABEL = "step k (GD iterations; a flow at time t = k)"

FLOW_STYLE: dict[str, dict] = {
    "gd": {"color": "0.45", "lw": 0.6, "label": "GD iterates $w_k$"},
    "midpoint": {"color": "black", "lw": 1.5, "label": "GD midpoint $w^*_k$"},
    "edge": {"color": "tab:red", "lw": 1.6, "label": "Edge Flow"},
    "gradient": {"color": "tab:blue", "lw": 1.4, "ls": (0, (5, 2)), "label": "gradient flow"},
    "modified": {"color": "tab:green", "lw": 1.4, "ls": "-.", "label": "modified flow"},
    "central": {"color": "tab:orange", "lw": 1.5, "ls": (0, (1, 1)), "label": "central flow"},
    "mitigated": {"color": "tab:brown", "lw": 1.3, "ls": (0, (3, 1, 1, 1)), "label": "GD with a remedy"},
}
#: Short names of the flows, for the texts on a figure (legends have the longer labels).
FLOW_NAMES = {
    "gd": "GD",
    "midpoint": "GD midpoint",
    "edge": "Edge Flow",
    "gradient": "gradient flow",
    "modified": "modified flow",
    "central": "central flow",
    "mitigated": "GD with a remedy",
}
#: GD's per-iterate values: a light band over its step-to-step oscillation, under every model.
GD_BAND = {"facecolor": (0.6, 0.6, 0.6, 0.35), "edgecolor": "0.45", "lw": 0.5, "zorder": 1}
#: Edge Flow's per-iterate prediction L(c + s_k r u): the outline of its band, over GD's.
EDGE_BAND = {"facecolor": "none", "edgecolor": "tab:red", "lw": 0.6, "zorder": 1.5}
MODEL_ZORDER = 2.5
THRESHOLD_COLOR = "#7b3294"
#: The period average ½[L(w_k) + L(w_{k+1})]: dashed, so it is not mistaken for the midpoint's loss.
PERIOD_AVERAGE = {"color": "0.2", "lw": 1.0, "ls": (0, (4, 1.5)), "label": "GD period average"}
PERIOD_AVERAGE_MATH = "$\\frac{1}{2}[L(w_k) + L(w_{k+1})]$"

#: Above this nothing is plotted as is: matplotlib's margins and transforms overflow near 1e308,
#: and no loss or sharpness this large says more than "diverged".
HUGE = 1e100
#: How far a log axis reaches above the largest value of the flows that ran on (decades).
DECADES_ABOVE = 3
#: How far below GD's smallest loss a loss axis reaches (decades): flows that converge to
#: rounding-level losses would otherwise squash GD's curve.
DECADES_BELOW_GD = 3
#: Steps shown in the zoom on GD's period-2 oscillation.
ZOOM_STEPS = 20


def style(flow: str) -> dict:
    """The line style of a flow (color, width, dashes, legend label)."""
    return FLOW_STYLE.get(flow, {"lw": 1.2, "label": flow})


@contextmanager
def paper_style() -> Iterator[None]:
    """Every figure of the package is drawn inside this: ``with paper_style(): fig, ax = new_figure()``."""
    with matplotlib.rc_context(PAPER_RC):
        yield


def new_figure(
    nrows: int = 1, ncols: int = 1, *, panel: tuple[float, float] = PANEL, extra_height: float = 0.6, **kw
) -> tuple[Figure, np.ndarray]:
    """A figure of ``nrows × ncols`` panels of ``panel`` inches each, plus ``extra_height`` inches
    for the title and caption; axes always as a 2-D array. Call inside ``paper_style()``."""
    size = (panel[0] * ncols, panel[1] * nrows + extra_height)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, **kw)
    return fig, axes


def finish_axes(
    ax: Axes, *, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None
) -> None:
    """Title, labels and the grid of one panel (spines and sizes come from ``paper_style``)."""
    if title:
        ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, lw=0.5)
    ax.set_axisbelow(True)


def add_legend(ax: Axes, *, ncols: int = 2, **kw) -> None:
    """A legend of this panel's own entries (none when it has none), under the panel's step
    labels, where it never hides a curve or a mark."""
    labels = ax.get_legend_handles_labels()[1]
    if not labels:
        return
    if max(_visible_length(label) for label in labels) > LONG_LEGEND_ENTRY:
        ncols = 1  # side by side, long entries would make the legend wider than its panel
    # inches below the axes: tick labels (when shown) and the axis label (when set)
    tick_labels = ax.xaxis.get_tick_params(which="major").get("labelbottom", True)
    below = 0.08 + (0.18 if tick_labels else 0.0) + (0.17 if ax.get_xlabel() else 0.0)
    under = ax.transAxes + ScaledTranslation(0, -below, ax.figure.dpi_scale_trans)
    ax.legend(
        **{"loc": "upper center", "bbox_to_anchor": (0.5, 0.0), "bbox_transform": under, "ncols": ncols, **kw}
    )


#: Characters of a legend entry that fit in half a panel's width.
LONG_LEGEND_ENTRY = 36


def add_caption(fig: Figure, text: str) -> None:
    """A short caption under the panels that defines the symbols of the figure (one paragraph a
    line of ``text``; ``$…$`` is math)."""
    wrapped = wrap_math(text, int(fig.get_figwidth() * CAPTION_CHARS_PER_INCH))
    fig.supxlabel(wrapped, fontsize=7.5, color="0.25", x=0.01, ha="left", linespacing=1.4)


#: Characters per inch of a 7.5-point caption line.
CAPTION_CHARS_PER_INCH = 16


def wrap_math(text: str, width: int) -> str:
    """``text`` wrapped at ``width`` visible characters a line, paragraph by paragraph, never
    inside a ``$…$`` math span (matplotlib cannot render a span cut in two)."""
    lines = []
    for paragraph in text.split("\n"):
        line, used = [], 0
        for word in re.findall(r"\$[^$]*\$\S*|\S+", paragraph):
            n = _visible_length(word)
            if line and used + 1 + n > width:
                lines.append(" ".join(line))
                line, used = [], 0
            line.append(word)
            used += n + (1 if used else 0)
        lines.append(" ".join(line))
    return "\n".join(lines)


def _visible_length(word: str) -> int:
    """About how many characters ``word`` takes once its math is rendered."""
    if "$" not in word:
        return len(word)
    return len(re.sub(r"\\[a-zA-Z]+|[{}^_$\\]", "", word)) + 1


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` (PNG at the style's resolution) and close it."""
    fig.savefig(path, dpi=PAPER_RC["savefig.dpi"])  # the style's, wherever the figure is saved
    plt.close(fig)
    return Path(path)


def draw_threshold(
    ax: Axes,
    value: float,
    *,
    name: str = "2/η",
    color: str = THRESHOLD_COLOR,
    at: str = "right",
    label: str | None = None,
) -> None:
    """A dashed horizontal line drawn over the curves (dashes keep a curve that follows it visible),
    with ``name = value`` written on it at the ``at`` end ("left" or "right") and a legend entry
    (``label``, default "stability threshold NAME").
    Call it once the y-limits are set: near the top of the axis the text goes under the line."""
    label = f"stability threshold {name}" if label is None else label
    ax.axhline(value, color=color, lw=1.1, ls=(0, (5, 3)), zorder=4, label=label)
    right = at == "right"
    under = _axes_height_of(ax, value) > 0.9
    ax.annotate(
        f"{name} = {value:.3g}",
        (1.0 if right else 0.0, value),
        xycoords=("axes fraction", "data"),
        xytext=(-3 if right else 3, -2 if under else 2),
        textcoords="offset points",
        ha="right" if right else "left",
        va="top" if under else "bottom",
        color=color,
        fontsize=8,
        zorder=5,
        bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
    )


def _axes_height_of(ax: Axes, y: float) -> float:
    """Where ``y`` sits between the bottom (0) and the top (1) of the axis as it is now."""
    return float((ax.transScale + ax.transLimits).transform((0.0, y))[1])


def mark_event(ax: Axes, step: float, text: str, *, color: str = "0.3", ls: object = (0, (4, 2))) -> None:
    """A vertical line at ``step`` with ``text`` written along it, left of the line, from the top."""
    ax.axvline(step, color=color, lw=1.0, ls=ls, alpha=0.9, zorder=3)
    _write_along(ax, step, text, color)


def _write_along(ax: Axes, step: float, text: str, color: str) -> None:
    """``text`` rotated along a vertical line at ``step``, left of it, from the top of the axis."""
    ax.text(
        step,
        0.98,
        text,
        transform=blended_transform_factory(ax.transData, ax.transAxes),
        rotation=90,
        ha="right",
        va="top",
        fontsize=7,
        color=color,
        zorder=5,
        bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.7},
    )


# --------------------------------------------------------------------------- drawing the series
@dataclass
class _Series:
    """One curve of a panel: the flow whose divergence ends it, its steps and values, its style;
    ``band``: per-iterate values, drawn (with this style) as a band over their period-2 oscillation;
    ``name``: what the texts on the figure call it (by default the flow's short name)."""

    flow: str
    steps: np.ndarray
    values: np.ndarray
    kw: dict = field(default_factory=dict)
    band: dict | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or FLOW_NAMES.get(self.flow, self.flow)


def _flow_series(
    res: Result, flow: str, quantity: str, band: dict | None = None, name: str = "", **kw
) -> _Series:
    rec = res[flow]
    return _Series(flow, record_steps(rec), flow_field(rec, quantity), kw or style(flow), band, name)


def _model_series(res: Result, quantity: str) -> list[_Series]:
    """``quantity`` of every flow; GD's per-iterate values as a band. With a preconditioned optimizer
    flow ``gradient`` is its stable flow, and the legend says so."""
    return _named_for(res, [_flow_series(res, f, quantity, band=GD_BAND if f == "gd" else None) for f in res])


def _named_for(res: Result, series: list[_Series]) -> list[_Series]:
    """With a preconditioned optimizer flow ``gradient`` is its stable flow: the legend says so."""
    for item in series:
        if res.preconditioned and item.flow == "gradient":
            item.name = "stable flow"
            from edgeflow.optimizers import optimizer_class  # torch: only for a non-GD run's figures

            rule = "−P⁻¹∇L" if optimizer_class(res.optimizer).momentum_key is None else "−P⁻¹·momentum"
            item.kw = {**item.kw, "label": f"stable flow (dw/dt = {rule}, {res.optimizer})"}
    return series


def _step_range(res: Result) -> tuple[float, float]:
    """The same steps on every panel: up to the last record or stop of any flow (a flow whose
    losses underflow to 0 would otherwise end the loss panel early), with 3% margins."""
    ends = [int(record_steps(res[f])[-1]) for f in res if len(record_steps(res[f]))]
    ends += [stop[1] for f in res if (stop := stop_reason(res[f].info)) and stop[1] is not None]
    last = max(ends, default=0) or res.config.get("steps") or 1
    return -0.03 * last, 1.03 * last


@dataclass
class _Shown:
    """A series' values split by what the axis can show: finite (and, on a log axis, positive)."""

    series: _Series
    steps: np.ndarray  # of the values that can be drawn
    values: np.ndarray
    raw_steps: np.ndarray  # every record, for finding where the curve leaves the axis
    raw_values: np.ndarray


def _split(series: _Series, log: bool) -> _Shown:
    steps = np.asarray(series.steps)
    v = np.asarray(series.values, dtype=np.float64)
    n = min(len(steps), len(v))
    steps, v = steps[:n], v[:n]
    ok = np.isfinite(v) & (v > 0) if log else np.isfinite(v)
    return _Shown(series, steps[ok], v[ok], steps, v)


def _draw(
    ax: Axes,
    res: Result,
    series: list[_Series],
    *,
    log: bool,
    keep_in_view: tuple[float, ...] = (),
    floor: float | None = None,
) -> bool:
    """Plot each series within y-limits that keep the flows that ran on readable (``keep_in_view``
    values, a threshold, count as theirs; on a log axis nothing below ``floor``), and mark where a
    curve leaves the axis. False when nothing could be drawn."""
    shown = [_split(s, log) for s in series]
    limits = _limits(res, shown, log, keep_in_view, floor)
    if limits is None:
        ax.text(0.5, 0.6, "nothing finite to plot", transform=ax.transAxes, ha="center", color="0.4")
        if log:
            ax.set_yscale("log")
        return False
    if log:
        ax.set_yscale("log")
        if PLAIN_NUMBERS[0] <= limits[0] and limits[1] < PLAIN_NUMBERS[1]:
            ax.yaxis.set_major_formatter(_PlainLogFormatter())
            ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False))
    ax.set_ylim(*limits)
    low, high = _clip_range(limits, log)
    for s in shown:
        if not s.steps.size:
            continue  # no legend entry for a flow with nothing to show; its stop marker says why
        y = np.clip(s.values, low, high)
        if s.series.band and s.steps.size > 1:
            lo, hi = _oscillation_band(s.steps, y, log)
            kw = {**s.series.band, "label": s.series.kw.get("label")}
            ax.fill_between(s.steps, lo, hi, **kw)
        else:
            dot = {"marker": "o", "ms": 3} if s.steps.size == 1 else {}
            ax.plot(s.steps, y, **{"zorder": MODEL_ZORDER, **dot, **s.series.kw})
    for s in shown:
        _mark_leaving(ax, s, limits, log, stopped=stop_reason(res[s.series.flow].info) is not None)
    return True


#: A log axis within this range is labelled 0.02, 0.1, 5 rather than 2×10⁻², 10⁻¹, 5×10⁰.
PLAIN_NUMBERS = (1e-4, 1e5)


class _PlainLogFormatter(LogFormatterSciNotation):
    """Labels the ticks matplotlib's log formatter labels, as plain numbers."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _oscillation_band(steps: np.ndarray, y: np.ndarray, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """The band GD's period-2 oscillation sweeps: at each record where the curve turns (up then
    down, or down then up), between its value and the mean of its two neighbours (geometric on a
    log axis), which sit on the oscillation's other branch; elsewhere (a smooth stretch, a
    blow-up, sparse records, the ends) the value alone, and the band is a line."""
    turns = np.zeros(len(y), dtype=bool)
    with np.errstate(invalid="ignore"):
        turns[1:-1] = (
            (np.diff(steps)[:-1] == 1) & (np.diff(steps)[1:] == 1) & (np.diff(y)[:-1] * np.diff(y)[1:] < 0)
        )
    inner = np.sqrt(y[:-2] * y[2:]) if log else 0.5 * (y[:-2] + y[2:])
    neighbours = y.copy()
    neighbours[1:-1] = np.where(turns[1:-1], inner, y[1:-1])
    return np.minimum(y, neighbours), np.maximum(y, neighbours)


def _limits(
    res: Result, shown: list[_Shown], log: bool, keep_in_view: tuple[float, ...], floor: float | None
) -> tuple[float, float] | None:
    """y-limits around the flows that ran on, reaching the others' values only so far
    (``DECADES_ABOVE`` on a log axis, one span of the reference values on a linear one)."""
    every = np.concatenate([s.values for s in shown] + [np.zeros(0)])
    every = every[np.abs(every) <= HUGE]
    if not every.size:
        return None
    ref = _reference_values(res, shown, log, keep_in_view)
    lo, hi = float(ref.min()), float(ref.max())
    if log:
        top = max(min(float(every.max()), hi * 10.0**DECADES_ABOVE), hi)
        bottom = max(min(float(every.min()), lo), floor or 0.0, 1.0 / HUGE)
        if top < bottom * 10:
            # at least a decade, centred on the data: a log axis over less labels every minor tick
            widen = np.sqrt(10 * bottom / top)
            return bottom / widen, top * widen
        pad = (top / bottom) ** 0.04
        return bottom / pad, top * pad
    span = hi - lo or max(abs(hi), 1.0)
    top = max(min(float(every.max()), hi + span), hi)
    bottom = min(max(float(every.min()), lo - span), lo)
    pad = 0.05 * (top - bottom or span)
    return bottom - pad, top + pad


def _reference_values(
    res: Result, shown: list[_Shown], log: bool, keep_in_view: tuple[float, ...]
) -> np.ndarray:
    """The values the axis range is built around: those of the flows that ran on, and the start of
    each flow that stopped (on a linear axis the blow-up of a stopped flow would hide everything
    else; on a log axis, when every flow stopped, the blow-up itself is what there is to see)."""
    ran_on = [s.values for s in shown if stop_reason(res[s.series.flow].info) is None]
    starts = [s.values[:1] for s in shown if stop_reason(res[s.series.flow].info) is not None]
    keep = np.array([v for v in keep_in_view if v > 0 or not log], dtype=np.float64)
    ref = np.concatenate([*ran_on, keep, *([] if log else starts), np.zeros(0)])
    ref = ref[np.abs(ref) <= HUGE]
    if not ref.size:  # every flow stopped: keep whatever is not absurdly large
        every = np.concatenate([s.values for s in shown] + [keep])
        ref = every[np.abs(every) <= HUGE]
    return ref if ref.size else np.array([1.0])


def _clip_range(limits: tuple[float, float], log: bool) -> tuple[float, float]:
    """Just beyond the limits, so clipped curves still run off the edge of the axis."""
    bottom, top = limits
    if log:
        return bottom / 10.0, top * 10.0
    margin = top - bottom
    return bottom - margin, top + margin


def _mark_leaving(ax: Axes, s: _Shown, limits: tuple[float, float], log: bool, stopped: bool) -> None:
    """Mark, at the edge of the axis, the first step where a curve that was in view leaves it:
    off scale above, or below the axis (on a log axis also exactly 0, which has no place on it);
    the legend says which flow, from which step, and how far it went. A flow that ``stopped``
    (diverged) and runs off the top is only marked: the text at its divergence says the rest."""
    bottom, top = limits
    v, steps = s.raw_values, s.raw_steps
    finite = np.isfinite(v)
    name = s.series.name
    color = s.series.kw.get("color", "0.3")
    with np.errstate(invalid="ignore"):
        inside = finite & (v >= bottom) & (v <= top)
        above = finite & (v > top)
        below = finite & ((v < bottom) | ((v <= 0) if log else False))
    if not inside.any():
        return  # never in view: nothing left the axis
    first_in = int(np.argmax(inside))
    if above[first_in:].any():
        i = first_in + int(np.argmax(above[first_in:]))
        peak = float(v[above].max())
        label = None if stopped else f"{name}: off scale from step {steps[i]} (max {peak:.2g})"
        _edge_marker(ax, steps[i], 1.0, "^", color, label)
    if below[first_in:].any():
        i = first_in + int(np.argmax(below[first_in:]))
        zero = log & (v[i:] == 0)
        text = f"{name}: below {bottom:.1g} from step {steps[i]}"
        if zero.any():
            at = int(steps[i:][np.argmax(zero)])
            text = f"{name}: 0 from step {at}" if at == steps[i] else f"{text}, 0 from step {at}"
        _edge_marker(ax, steps[i], 0.0, "v", color, text)


def _edge_marker(ax: Axes, step: float, edge: float, marker: str, color: str, label: str | None) -> None:
    ax.plot(
        [step],
        [edge],
        marker=marker,
        ms=6,
        ls="none",
        color=color,
        mec="white",
        mew=0.5,
        clip_on=False,
        zorder=6,
        transform=blended_transform_factory(ax.transData, ax.transAxes),
        label=label,
    )


def mark_stops(res: Result, ax: Axes) -> None:
    """A vertical line, in the flow's color, at each flow's divergence or integrator failure, with
    its text; flows that stop within a few steps of each other share one text."""
    stops = []
    for flow in res:
        stop = stop_reason(res[flow].info)
        if stop is not None and stop[1] is not None:
            stops.append((stop[1], flow, "integrator failed" if stop[0] == "failed" else "diverged"))
    left, right = _step_range(res)
    near = 0.04 * (right - left)
    groups: list[list[tuple[int, str, str]]] = []
    for stop in sorted(stops):
        if groups and stop[0] - groups[-1][0][0] <= near:
            groups[-1].append(stop)
        else:
            groups.append([stop])
    for group in groups:
        for k, flow, what in group:
            ls = (0, (1, 1.5)) if what == "integrator failed" else (0, (4, 2))
            ax.axvline(k, color=style(flow).get("color", "0.3"), lw=1.0, ls=ls, alpha=0.9, zorder=3)
        text = "\n".join(f"{FLOW_NAMES.get(flow, flow)} {what} (step {k})" for k, flow, what in group)
        color = style(group[0][1]).get("color", "0.3") if len(group) == 1 else "0.2"
        _write_along(ax, group[0][0], text, color)


def panel_texts(ax: Axes) -> list[str]:
    """The texts written on a panel: its divergence and failure marks, the 2/η label."""
    return [t.get_text() for t in ax.texts]


# ---------------------------------------------------------------------------------------- panels
def plot_loss(res: Result, ax: Axes) -> bool:
    """Training loss of every flow at its own point; GD's per-iterate loss as a band, its period
    average dashed."""
    series = _model_series(res, "train_loss")
    if "midpoint" in res:
        series.append(_flow_series(res, "midpoint", "mean_loss", name="GD period average", **PERIOD_AVERAGE))
    drew = _draw(ax, res, series, log=True, floor=_loss_floor(res))
    _finish_panel(res, ax, "Training loss", "training loss  L")
    return drew


def _loss_floor(res: Result) -> float | None:
    """``DECADES_BELOW_GD`` decades below GD's smallest loss (iterates and midpoints)."""
    ref = [flow_field(res[f], "train_loss") for f in ("gd", "midpoint") if f in res]
    vals = np.concatenate(ref) if ref else np.zeros(0)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    return float(vals.min()) * 10.0**-DECADES_BELOW_GD if vals.size else None


def plot_sharpness(res: Result, ax: Axes) -> bool:
    """Sharpness of every flow against 2/η (for a preconditioned optimizer, the effective sharpness
    λ₁(P⁻¹H) against its threshold); a log axis when the values span decades (a blow-up)."""
    series = _model_series(res, res.sharpness_field)
    log = _spans_decades(res, series, res.threshold)
    drew = _draw(ax, res, series, log=log, keep_in_view=(res.threshold,))
    at = _quieter_end(res, series, res.threshold)
    if res.preconditioned:
        label = f"stability threshold of {res.optimizer}"
        draw_threshold(ax, res.threshold, name="threshold", at=at, label=label)
        _finish_panel(res, ax, "Effective sharpness against the threshold", "λ₁(P⁻¹∇²L)")
    else:
        draw_threshold(ax, res.threshold, at=at)
        _finish_panel(res, ax, "Sharpness against the stability threshold", "sharpness  S = λ_max(∇²L)")
    return drew


def _quieter_end(res: Result, series: list[_Series], level: float) -> str:
    """The end of the run ("left" or "right", its first or last fifth of the steps) where the
    curves keep farther from ``level``: where the label of a line at ``level`` goes."""
    shown = [_split(s, log=False) for s in series]
    steps = np.concatenate([s.steps for s in shown] + [np.zeros(0)])
    gaps = np.abs(np.concatenate([s.values for s in shown] + [np.zeros(0)]) - level)
    left, right = _step_range(res)
    reach = 0.2 * (right - left)
    left_gap = gaps[steps <= left + reach].min(initial=np.inf)
    right_gap = gaps[steps >= right - reach].min(initial=np.inf)
    return "left" if left_gap > right_gap else "right"


def _spans_decades(res: Result, series: list[_Series], threshold: float, decades: float = 3) -> bool:
    """Whether the values the axis is built around are positive and span more than ``decades``."""
    shown = [_split(s, log=False) for s in series]
    ref = _reference_values(res, shown, False, (threshold,))
    if not (ref > 0).all():
        return False
    every = np.concatenate([ref] + [s.values[np.abs(s.values) <= HUGE] for s in shown])
    every = every[every > 0]
    return bool(every.size) and float(every.max()) > float(every.min()) * 10.0**decades


def plot_magnitude(res: Result, ax: Axes) -> bool:
    """Edge Flow's magnitude r against GD's measured oscillation |uᵀ(w_k − w*_k)|."""
    series = []
    if "midpoint" in res:
        kw = {"color": "black", "lw": 1.3, "label": "GD: $|u^\\top(w_k - w^*_k)|$"}
        series.append(_flow_series(res, "midpoint", "oscillation", name="GD oscillation", **kw))
    if "edge" in res:
        kw = {**style("edge"), "label": "Edge Flow: $r$"}
        series.append(_flow_series(res, "edge", "magnitude", name="Edge Flow r", **kw))
    # r = 0 is kept as the smallest float (a momentum's Edge Flow starts there): a log axis built
    # around it spans hundreds of decades, so the axis stops three decades below GD's smallest
    # measured oscillation and r below it is marked as leaving the axis
    measured = series[0].values if "midpoint" in res else np.array([])
    measured = measured[np.isfinite(measured) & (measured > 0)]
    floor = 1e-3 * float(measured.min()) if measured.size else None
    drew = _draw(ax, res, series, log=True, floor=floor)
    _finish_panel(res, ax, "Oscillation along the top eigenvector u", "oscillation magnitude")
    return drew


def plot_edge_loss(res: Result, ax: Axes) -> bool:
    """GD's per-iterate loss against Edge Flow's per-iterate prediction L(c + s_k r u), and both
    period averages."""
    series = _edge_loss_series(res)
    drew = _draw(ax, res, series, log=True, floor=_loss_floor(res))
    _finish_panel(res, ax, "Per-iterate loss: GD and Edge Flow's prediction", "training loss  L")
    return drew


def _edge_loss_series(res: Result) -> list[_Series]:
    """GD's per-iterate loss and Edge Flow's prediction of it (bands), and both period averages."""
    gd = {**style("gd"), "label": "GD: $L(w_k)$"}
    predicted = {"color": "tab:red", "lw": 0.6, "label": "Edge Flow: $L(c + s_k r u)$"}
    series = [
        _flow_series(res, "gd", "train_loss", band=GD_BAND, **gd),
        _flow_series(res, "edge", "predicted_loss", band=EDGE_BAND, name="Edge Flow prediction", **predicted),
    ]
    if "midpoint" in res:
        average = {**PERIOD_AVERAGE, "color": "black", "lw": 1.3, "label": f"GD: {PERIOD_AVERAGE_MATH}"}
        series.append(_flow_series(res, "midpoint", "mean_loss", name="GD period average", **average))
    kw = {"color": "tab:red", "lw": 1.5, "ls": (0, (4, 1.5)), "label": "Edge Flow: $L_r(c)$"}
    series.append(_flow_series(res, "edge", "predicted_mean_loss", name="Edge Flow L_r(c)", **kw))
    return series


def plot_edge_loss_zoom(res: Result, ax: Axes, window: tuple[int, int]) -> None:
    """Steps ``window`` of GD's per-iterate loss and Edge Flow's prediction, every step a marker:
    the period-2 alternation that the full run shows only as a band."""
    start, stop = window
    for s in _edge_loss_series(res):
        if not s.band:
            s.kw = {**s.kw, "label": None}  # the full run's legend names the period averages
        steps, v = np.asarray(s.steps), np.asarray(s.values, dtype=np.float64)
        n = min(len(steps), len(v))
        keep = (steps[:n] >= start) & (steps[:n] <= stop) & np.isfinite(v[:n]) & (v[:n] > 0)
        kw = {**s.kw, "zorder": MODEL_ZORDER}
        if s.band:  # every step a marker: GD's iterates dots, Edge Flow's predictions crosses
            kw |= {"marker": "o" if s.flow == "gd" else "x", "ms": 3.5, "lw": 0.7}
        ax.plot(steps[:n][keep], v[:n][keep], **kw)
    ax.set_xlim(start - 0.5, stop + 0.5)
    finish_axes(ax, title=f"Zoom: steps {start}–{stop}", xlabel="step k", ylabel="training loss  L")
    add_legend(ax)


#: A window shows GD's period-2 alternation when its loss turns (up after down, or down after up)
#: at least at this share of its steps.
ALTERNATING_SHARE = 0.7


def zoom_window(res: Result, length: int = ZOOM_STEPS) -> tuple[int, int] | None:
    """``length`` consecutive GD steps, from its first crossing of 2/η on, where GD's loss
    alternates most clearly (up, down, up, …): among the windows where the loss turns at
    ``ALTERNATING_SHARE`` of the steps, the one with the largest median step-to-step change
    relative to the loss. None when GD's loss does not alternate (on a smooth landscape the
    oscillation changes the loss only at third order), or GD was not recorded at every step."""
    if "gd" not in res or "edge" not in res:
        return None
    steps, loss = record_steps(res["gd"]), flow_field(res["gd"], "train_loss")
    edge_steps = record_steps(res["edge"])
    if steps.size < length + 2 or not edge_steps.size:
        return None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.diff(loss)
        change = np.abs(diff) / (np.abs(loss[1:]) + np.abs(loss[:-1]))
        turns = np.sign(diff[1:]) * np.sign(diff[:-1]) < 0
    windows = np.lib.stride_tricks.sliding_window_view
    start = np.arange(steps.size - length)
    onset = eos_onset(res)["onset_step"]
    ok = (
        windows(np.diff(steps) == 1, length).all(axis=1)[start]
        & (steps[start + length] <= edge_steps[-1])
        & (steps[start] >= (onset or 0))
        & (windows(turns, length - 1).mean(axis=1)[start] >= ALTERNATING_SHARE)
        & windows(np.isfinite(change), length).all(axis=1)[start]
    )
    if not ok.any():
        return None
    score = np.where(ok, np.median(windows(np.nan_to_num(change), length), axis=1)[start], -1.0)
    i = int(np.argmax(score))
    return int(steps[i]), int(steps[i + length])


def _distance_flows(res: Result) -> list[str]:
    """Flows with a distance to GD's midpoint (none when the midpoint was not run)."""
    return [n for n in res if n != "midpoint" and relative_distance(res, n) is not None]


def plot_distance(res: Result, ax: Axes) -> bool:
    """Each flow's distance to GD's midpoint, relative to the midpoint's distance from w₀."""
    steps = res.distances.get("step", np.zeros(0))
    series = []
    for n in _distance_flows(res):
        series.append(_Series(n, steps, relative_distance(res, n), style(n)))
    series = _named_for(res, series)
    drew = _draw(ax, res, series, log=True) if series else False
    _finish_panel(res, ax, "Distance to GD's midpoint", "$\\|c - w^*_k\\| \\,/\\, \\|w^*_k - w_0\\|$")
    return drew


def _finish_panel(res: Result, ax: Axes, title: str, ylabel: str) -> None:
    mark_stops(res, ax)
    ax.set_xlim(*_step_range(res))
    finish_axes(ax, title=title, xlabel=STEP_LABEL, ylabel=ylabel)


# --------------------------------------------------------------------------------------- figures
PanelDrawer = Callable[[Result, Axes], bool]
MIDPOINT_MATH = "$w^*_k = \\frac{1}{4}(w_{k-1} + 2w_k + w_{k+1})$"
BAND_TEXT = "GD iterates: a band over GD's step-to-step (period-2) oscillation."


def caption(draw: PanelDrawer, res: Result) -> str:
    """What a panel drawn by ``draw`` shows, with its symbols defined, for the flows of ``res``."""
    gd, midpoint, edge = "gd" in res, "midpoint" in res, "edge" in res
    models = [f for f in res if f not in ("gd", "midpoint")]
    if draw is plot_loss:
        parts = [
            gd and BAND_TEXT,
            midpoint
            and f"GD midpoint {MIDPOINT_MATH}, GD's center; GD period average {PERIOD_AVERAGE_MATH}.",
            models and "Models: the loss at their point at time t = k.",
        ]
    elif draw is plot_sharpness and res.preconditioned:
        parts = [
            f"λ₁(P⁻¹H): top eigenvalue of the Hessian preconditioned by {res.optimizer}'s P at each "
            f"flow's point and state; the discrete run is stable while it is below {res.threshold:g}.",
            gd and BAND_TEXT,
        ]
    elif draw is plot_sharpness:
        parts = [
            "S: top Hessian eigenvalue at each flow's point; GD is stable while S < 2/η.",
            gd and BAND_TEXT,
        ]
    elif draw is plot_magnitude and res.preconditioned:
        parts = [
            midpoint
            and "ũ: top eigenvector of $P^{-1/2}HP^{-1/2}$ at GD's midpoint $w^*_k$; GD's oscillation: "
            "its iterate's distance from the midpoint along $P^{-1/2}ũ$, in the preconditioner's units "
            "($|\\tilde u^\\top P^{1/2}(w_k - w^*_k)|$).",
            edge and "r: the magnitude of the oscillation in Edge Flow, in the same units.",
        ]
    elif draw is plot_magnitude:
        parts = [
            midpoint
            and "u: top Hessian eigenvector at GD's midpoint $w^*_k$; GD's oscillation: its "
            "iterate's distance from the midpoint along u.",
            edge and "r: the magnitude of the oscillation in Edge Flow, its model of GD's.",
        ]
    elif draw is plot_distance:
        parts = [
            "c: a flow's point at time t = k (for GD its iterate $w_k$); distance to GD's midpoint $w^*_k$, "
            "relative to the distance the midpoint has moved from the initialization $w_0$."
        ]
    else:  # plot_edge_loss
        parts = [
            "Edge Flow predicts GD's iterates as $c + s_k r u$: c its center, u the top Hessian eigenvector, "
            "r the oscillation magnitude, $s_k = \\pm 1$ alternating each step. "
            "$L_r(c) = \\frac{1}{2}[L(c + ru) + L(c - ru)]$ predicts GD's period average "
            f"{PERIOD_AVERAGE_MATH}."
        ]
    return "  ".join(p for p in parts if p)


def plot_run(res: Result, outdir: str | Path) -> list[Path]:
    """Write ``loss.png``, ``sharpness.png``, ``edge_loss.png`` (when GD and Edge Flow ran) and
    ``overview.png`` into ``outdir``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Callable[[], Figure]] = {
        "loss.png": lambda: panel_figure(res, plot_loss),
        "sharpness.png": lambda: panel_figure(res, plot_sharpness),
    }
    if "gd" in res and "edge" in res:
        figures["edge_loss.png"] = lambda: edge_loss_figure(res)
    figures["overview.png"] = lambda: overview_figure(res)
    return [save_figure(make(), outdir / name) for name, make in figures.items()]


def _styled(build: Callable[..., Figure]) -> Callable[..., Figure]:
    """``build`` drawn in the package's style; a diverged flow's values reach 1e300, and the
    arithmetic on them may overflow before they are clipped to the axis."""

    @functools.wraps(build)
    def styled(*args, **kwargs) -> Figure:
        with paper_style(), np.errstate(all="ignore"):
            return build(*args, **kwargs)

    return styled


@_styled
def panel_figure(res: Result, draw: PanelDrawer, note: str = "") -> Figure:
    """One panel drawn by ``draw`` (``plot_loss``, ``plot_sharpness``, …) with its legend, the
    run's title and a caption defining its symbols (``note`` added to it)."""
    fig, axes = new_figure(panel=(5.6, 3.6), extra_height=0.9)
    draw(res, axes[0, 0])
    add_legend(axes[0, 0])
    fig.suptitle(run_title(res))
    add_caption(fig, caption(draw, res) + note)
    return fig


@_styled
def edge_loss_figure(res: Result) -> Figure:
    """The whole run and, where GD's loss alternates step to step at the edge of stability, a zoom
    on ``ZOOM_STEPS`` of its steps (the whole run shows the alternation only as a band)."""
    window = zoom_window(res)
    if window is None:
        note = "\nNo zoom: GD's loss does not alternate step to step at the recorded steps."
        return panel_figure(res, plot_edge_loss, note)
    fig, axes = new_figure(1, 2, panel=(4.4, 3.6), extra_height=0.9, width_ratios=(1.6, 1))
    whole, zoom = axes[0]
    plot_edge_loss(res, whole)
    plot_edge_loss_zoom(res, zoom, window)
    whole.axvspan(*window, color=ZOOM_COLOR, alpha=0.12, lw=0, zorder=0)
    at_bottom = blended_transform_factory(whole.transData, whole.transAxes)
    whole.text(
        sum(window) / 2, 0.02, "zoom →", transform=at_bottom, ha="center", fontsize=7, color=ZOOM_COLOR
    )
    add_legend(whole)
    fig.suptitle(run_title(res))
    add_caption(fig, caption(plot_edge_loss, res) + "  Right: every step of the shaded window.")
    return fig


ZOOM_COLOR = "tab:purple"


def overview_panels(res: Result) -> list[PanelDrawer]:
    """The overview's panels for the flows of ``res``."""
    panels: list[PanelDrawer] = [plot_loss, plot_sharpness]
    if "edge" in res or "midpoint" in res:
        panels.append(plot_magnitude)
    if _distance_flows(res):
        panels.append(plot_distance)
    return panels


@_styled
def overview_figure(res: Result) -> Figure:
    """The panels on a grid two wide, each with its own legend and a lettered title; the symbols
    are defined in a caption, in the free cell when the panels are odd in number."""
    panels = overview_panels(res)
    nrows = (len(panels) + 1) // 2
    odd = len(panels) % 2 == 1
    fig, axes = new_figure(nrows, 2, extra_height=0.4 if odd else 1.0, sharex=True)
    cells = list(axes.flat)
    for i, (letter, ax, draw) in enumerate(zip("abcd", cells, panels, strict=False)):
        draw(res, ax)
        ax.set_title(f"({letter}) {ax.get_title(loc='left')}", loc="left")
        below = i + 2 < len(panels)  # a panel below shows the same steps, with their labels
        ax.tick_params(labelbottom=not below)
        if below:
            ax.set_xlabel("")
        add_legend(ax)
    definitions = "\n".join(
        f"({letter}) {caption(draw, res)}" for letter, draw in zip("abcd", panels, strict=False)
    )
    if odd:
        free = cells[-1]
        free.axis("off")
        text = wrap_math(definitions, int(PANEL[0] * CAPTION_CHARS_PER_INCH))
        free.text(0, 1, text, va="top", fontsize=7.5, color="0.25", linespacing=1.4)
    else:
        add_caption(fig, definitions)
    fig.suptitle(run_title(res))
    return fig


def run_title(res: Result) -> str:
    """Problem, η, 2/η, steps and the parameters set on the command line; partial or stopped runs
    say so."""
    params = (res.config.get("recipe") or {}).get("params") or {}
    extra = ", ".join(f"{k}={v}" for k, v in params.items())
    problem = res.config.get("problem", "") + (f" ({extra})" if extra else "")
    if res.preconditioned:
        title = f"{problem}:  {res.optimizer}, η = {res.lr:g},  threshold {res.threshold:.3g} on λ₁(P⁻¹H)"
    else:
        title = f"{problem}:  η = {res.lr:g},  2/η = {res.threshold:.3g}"
    progress = run_progress(res)
    if progress["steps"] is not None:
        title += f",  {progress['steps']} steps"
    if not progress["complete"]:
        title += f"  (partial run: reached step {progress['reached_step']})"
    if len(list(res)) and all(stop_reason(res[f].info) for f in res):
        title += "  (every flow stopped early)"
    return title
