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
    ax.set_ylabel("training loss")
    _axes_style(ax)


def plot_sharpness(res: Result, ax) -> None:
    for name in res:
        ax.plot(*_sharpness_points(res[name]), **style(name))
    ax.axhline(res.threshold, color="tab:purple", lw=1.0, ls="--", label="2/η")
    ax.set_ylabel("sharpness  λ_max(∇²L)")
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
    """Write ``loss.png``, ``sharpness.png`` and ``overview.png`` into ``outdir``."""
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

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    plot_loss(res, axes[0])
    plot_sharpness(res, axes[1])
    if not plot_distance(res, axes[2]):
        axes[2].set_visible(False)
    handles, labels = axes[1].get_legend_handles_labels()
    h0, l0 = axes[0].get_legend_handles_labels()
    extra = [(h, lab) for h, lab in zip(h0, l0, strict=True) if lab not in labels]
    fig.legend(
        handles + [h for h, _ in extra],
        labels + [lab for _, lab in extra],
        loc="outside right center",
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(title, fontsize=11)
    paths.append(_save(fig, outdir / "overview.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=160)
    plt.close(fig)
    return path
