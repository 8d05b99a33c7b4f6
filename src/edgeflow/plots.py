"""Figures of a run: loss, sharpness against the 2/η threshold, distance to GD's midpoint."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from edgeflow.metrics import relative_distance
from edgeflow.results import Result

STYLE = {
    "gd": {"color": "0.6", "lw": 0.8, "label": "GD"},
    "midpoint": {"color": "black", "lw": 1.4, "label": "GD midpoint"},
    "gradient": {"color": "tab:blue", "lw": 1.4, "ls": "--", "label": "gradient flow"},
    "modified": {"color": "tab:green", "lw": 1.4, "ls": "-.", "label": "modified flow"},
    "edge": {"color": "tab:red", "lw": 1.6, "label": "Edge Flow"},
    "central": {"color": "tab:orange", "lw": 1.4, "ls": ":", "label": "central flow"},
}


def style(flow: str) -> dict:
    return STYLE.get(flow, {"lw": 1.2, "label": flow})


def _axes_style(ax, xlabel: str = "step (GD iterations)") -> None:
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, lw=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _sharpness_points(rec) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(rec["sharpness"])
    return rec["step"][ok], rec["sharpness"][ok]


def plot_loss(res: Result, ax) -> None:
    for name in res:
        ax.plot(res[name]["step"], res[name]["train_loss"], **style(name))
    if "midpoint" in res:
        rec = res["midpoint"]
        ax.plot(rec["step"], rec["mean_loss"], color="black", lw=0.8, ls=":", label="GD period-avg. loss")
    ax.set_yscale("log")
    _clip_below_gd(res, ax)
    ax.set_ylabel("training loss")
    _axes_style(ax)


def _clip_below_gd(res: Result, ax) -> None:
    """Flows that converge to rounding-level losses would squash GD's curve; keep 3 decades below it."""
    ref = [res[f]["train_loss"] for f in ("gd", "midpoint") if f in res]
    vals = np.concatenate(ref) if ref else np.array([])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size:
        ax.set_ylim(bottom=max(ax.get_ylim()[0], vals.min() * 1e-3))


def plot_sharpness(res: Result, ax) -> None:
    for name in res:
        ax.plot(*_sharpness_points(res[name]), **style(name))
    ax.axhline(res.threshold, color="tab:purple", lw=1.0, ls="--", label="2/η")
    ax.set_ylabel("sharpness  λ_max(∇²L)")
    _axes_style(ax)


def plot_magnitude(res: Result, ax) -> bool:
    """Edge Flow's magnitude r against GD's measured oscillation |uᵀ(w_k − w*_k)|."""
    drew = False
    if "midpoint" in res:
        rec = res["midpoint"]
        ok = np.isfinite(rec["oscillation"])
        ax.plot(rec["step"][ok], rec["oscillation"][ok], color="black", lw=1.2, label="GD oscillation")
        drew = True
    if "edge" in res:
        ax.plot(res["edge"]["step"], res["edge"]["magnitude"], **style("edge"))
        drew = True
    ax.set_yscale("log")
    ax.set_ylabel("oscillation magnitude r")
    _axes_style(ax)
    return drew


def plot_edge_loss(res: Result, ax) -> None:
    """GD's per-iterate loss against Edge Flow's per-iterate prediction L(c + s_k r u)."""
    ax.plot(res["gd"]["step"], res["gd"]["train_loss"], color="0.6", lw=0.8, label="GD loss L(w_k)")
    e = res["edge"]
    ax.plot(
        e["step"], e["predicted_loss"], color="tab:red", lw=0.6, alpha=0.8, label="Edge Flow L(c + s_k r u)"
    )
    if "midpoint" in res:
        m = res["midpoint"]
        ax.plot(m["step"], m["mean_loss"], color="black", lw=1.2, label="GD period-avg. loss")
    ax.plot(e["step"], e["predicted_mean_loss"], color="tab:red", lw=1.4, ls="--", label="Edge Flow L_r(c)")
    ax.set_yscale("log")
    ax.set_ylabel("training loss")
    _axes_style(ax)


def plot_distance(res: Result, ax) -> bool:
    drew = False
    for name in res:
        if name == "midpoint":
            continue
        rel = relative_distance(res, name)
        if rel is not None:
            ax.plot(res.distances["step"], rel, **style(name))
            drew = True
    ax.set_yscale("log")
    ax.set_ylabel("‖c − w*‖ / ‖w* − w₀‖")
    _axes_style(ax)
    return drew


def plot_run(res: Result, outdir: str | Path) -> list[Path]:
    """Write ``loss.png``, ``sharpness.png``, ``edge_loss.png`` (when GD and Edge Flow ran) and
    ``overview.png`` into ``outdir``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    title = f"{res.config.get('problem', '')}  η = {res.lr:g}"
    paths = []
    for fname, draw in (("loss.png", plot_loss), ("sharpness.png", plot_sharpness)):
        fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
        draw(res, ax)
        ax.legend(fontsize=8, frameon=False)
        ax.set_title(title, fontsize=10)
        paths.append(_save(fig, outdir / fname))

    if "gd" in res and "edge" in res:
        fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
        plot_edge_loss(res, ax)
        ax.legend(fontsize=8, frameon=False)
        ax.set_title(title, fontsize=10)
        paths.append(_save(fig, outdir / "edge_loss.png"))

    panels = [plot_loss, plot_sharpness, plot_distance]
    if "edge" in res or "midpoint" in res:
        panels.insert(2, plot_magnitude)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 1.6, 3.8), layout="constrained")
    for ax, draw in zip(axes, panels, strict=True):
        if draw(res, ax) is False:
            ax.set_visible(False)
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="outside right center", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    paths.append(_save(fig, outdir / "overview.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=160)
    plt.close(fig)
    return path
