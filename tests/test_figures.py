"""The figures of a run, against what users reported: an overview too wide to read with one legend
for all panels, GD's oscillation hiding the models, an unlabelled 2/η line, no zoom on the
period-2 oscillation, undefined symbols, curves leaving a log axis unmarked, and empty or warning
figures on diverging runs. Hand-made results (``test_report``) keep these cheap."""

from __future__ import annotations

import struct
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.lines import Line2D

import edgeflow as ef
from edgeflow import plots
from edgeflow.results import FlowRecord
from test_report import LR, diverging_gd_run, flow, result

EVERY_STEP = np.arange(0, 101)


def png_size(path) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG header."""
    with open(path, "rb") as f:
        header = f.read(24)
    return struct.unpack(">II", header[16:24])


def full_run(steps: np.ndarray = EVERY_STEP) -> ef.Result:
    return result({name: flow(name, steps) for name in ("gd", "midpoint", "edge", "gradient")}, steps)


def oscillating_run() -> ef.Result:
    """GD's loss alternates ±30% around its trend from step 40 on (where its sharpness reaches
    2/η), Edge Flow's predicted per-iterate loss likewise: a period-2 oscillation."""
    res = full_run()
    sign = np.where(EVERY_STEP >= 40, (-1.0) ** EVERY_STEP, 0.0)
    res["gd"]["train_loss"] = res["gd"]["train_loss"] * (1 + 0.3 * sign)
    res["edge"]["predicted_loss"] = res["edge"]["train_loss"] * (1 + 0.28 * sign)
    return res


def panels_with_data(fig) -> list:
    return [ax for ax in fig.axes if ax.axison]


def legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def caption_of(fig) -> str:
    """The caption under the panels, as one line."""
    return fig.get_supxlabel().replace("\n", " ")


def drawn_without_warnings(build, *args):
    """``build(*args)`` (a figure), drawn, failing on any warning (overflow, matplotlib's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = build(*args)
        fig.canvas.draw()
    return fig


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# --- size and layout ----------------------------------------------------------------------------


def test_every_figure_fits_a_screen_and_the_overview_is_a_grid(tmp_path):
    paths = plots.plot_run(full_run(), tmp_path)
    assert {p.name for p in paths} == {"loss.png", "sharpness.png", "edge_loss.png", "overview.png"}
    for p in paths:
        width, height = png_size(p)
        assert width <= 2000 and height <= 2000, (p.name, width, height)
        assert width / height <= 2.2, (p.name, width, height)  # the old overview was 5:1
    width, height = png_size(tmp_path / "overview.png")
    assert 0.8 <= width / height <= 1.6  # 2 × 2 panels
    fig = plots.overview_figure(full_run())
    assert len(panels_with_data(fig)) == 4
    assert [ax.get_title(loc="left")[:3] for ax in fig.axes] == ["(a)", "(b)", "(c)", "(d)"]


@pytest.mark.parametrize(("flows", "panels"), [(["gd"], 2), (["gd", "edge"], 3), (["gd", "midpoint"], 4)])
def test_overview_grid_for_any_flow_set(flows, panels):
    fig = plots.overview_figure(result({name: flow(name) for name in flows}))
    assert len(panels_with_data(fig)) == panels
    width, height = fig.get_size_inches()
    assert width / height <= 2.2
    if panels % 2:  # the free cell holds the caption
        assert any("S: top Hessian eigenvalue" in t.get_text() for ax in fig.axes for t in ax.texts)


# --- legends, titles, symbols -------------------------------------------------------------------


def test_each_panel_has_its_own_legend_with_distinct_entries():
    loss, sharpness, magnitude, distance = plots.overview_figure(full_run()).axes
    assert "GD period average" in legend_labels(loss)
    assert not any("threshold" in label for label in legend_labels(loss))
    assert "stability threshold 2/η" in legend_labels(sharpness)
    assert "GD period average" not in legend_labels(sharpness)
    assert legend_labels(magnitude) == ["GD: $|u^\\top(w_k - w^*_k)|$", "Edge Flow: $r$"]
    assert not any("midpoint" in label for label in legend_labels(distance))  # it is the reference
    for ax in (loss, sharpness, magnitude, distance):
        looks = []
        for handle in ax.get_legend().legend_handles:
            if isinstance(handle, Line2D):
                looks.append(("line", handle.get_color(), str(handle.get_linestyle()), handle.get_marker()))
            else:
                looks.append(("patch", str(handle.get_facecolor()), str(handle.get_edgecolor())))
        assert len(set(looks)) == len(looks), (ax.get_title(), legend_labels(ax))


def test_titles_and_captions_say_what_is_shown():
    fig = plots.overview_figure(full_run())
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == [
        "(a) Training loss",
        "(b) Sharpness against the stability threshold",
        "(c) Oscillation along the top eigenvector u",
        "(d) Distance to GD's midpoint",
    ]
    assert fig.get_suptitle() == "hand:  η = 0.4,  2/η = 5,  100 steps"
    caption = caption_of(fig)
    assert "relative to the distance the midpoint has moved from the initialization" in caption
    assert "GD midpoint $w^*_k = \\frac{1}{4}(w_{k-1} + 2w_k + w_{k+1})$" in caption
    edge_loss = plots.edge_loss_figure(oscillating_run())
    caption = caption_of(edge_loss)
    for symbol in ("$s_k = \\pm 1$", "$L_r(c) = ", "c its center", "u the top Hessian eigenvector", "r the"):
        assert symbol in caption


def test_caption_wraps_between_math_spans():
    text = "A $\\frac{1}{2}[L(w_k) + L(w_{k+1})]$ and $c + s_k r u$, with words " * 4
    lines = plots.wrap_math(text, 30).split("\n")
    assert len(lines) > 3
    assert all(line.count("$") % 2 == 0 for line in lines)


# --- GD's oscillation and the 2/η line ----------------------------------------------------------


@pytest.mark.parametrize("draw", [plots.plot_loss, plots.plot_sharpness])
def test_gd_per_iterate_values_are_a_light_band_under_the_models(draw):
    _fig, ax = plt.subplots()
    draw(oscillating_run(), ax)
    bands = [
        c for c in ax.collections if isinstance(c, PolyCollection) and c.get_label() == "GD iterates $w_k$"
    ]
    assert len(bands) == 1
    band = bands[0]
    assert band.get_facecolor()[0][3] < 0.5  # see-through
    models = [line for line in ax.lines if line.get_label() in ("GD midpoint $w^*_k$", "Edge Flow")]
    assert len(models) == 2 and all(line.get_zorder() > band.get_zorder() for line in models)


def test_gd_band_is_a_line_where_gd_does_not_oscillate():
    steps = EVERY_STEP.astype(float)
    lo, hi = plots._oscillation_band(steps, np.exp(-steps / 10), log=True)
    assert np.allclose(lo, hi)
    zigzag = 1.0 + 0.5 * (-1.0) ** steps
    lo, hi = plots._oscillation_band(steps, zigzag, log=False)
    assert np.allclose(lo[1:-1], 0.5) and np.allclose(hi[1:-1], 1.5)


def test_threshold_is_drawn_over_the_curves_and_labelled_with_its_value():
    fig = plots.panel_figure(oscillating_run(), plots.plot_sharpness)
    ax = fig.axes[0]
    assert f"2/η = {2 / LR:.3g}" in plots.panel_texts(ax)
    (threshold,) = [line for line in ax.lines if line.get_label() == "stability threshold 2/η"]
    edge = next(line for line in ax.lines if line.get_label() == "Edge Flow")
    assert threshold.get_zorder() > edge.get_zorder()


# --- the zoom on the period-2 oscillation ---------------------------------------------------------


def test_edge_loss_zooms_on_the_period_2_alternation_at_the_edge_of_stability():
    res = oscillating_run()
    start, stop = plots.zoom_window(res)
    assert stop - start == plots.ZOOM_STEPS and start >= 40  # after GD reached 2/η
    fig = drawn_without_warnings(plots.edge_loss_figure, res)
    whole, zoom = fig.axes
    assert zoom.get_xlim() == pytest.approx((start - 0.5, stop + 0.5))
    per_step = [line for line in zoom.lines if line.get_marker() not in ("None", None, "")]
    assert len(per_step) == 2  # GD's iterates and Edge Flow's prediction, a marker at every step
    assert all(len(line.get_xdata()) == plots.ZOOM_STEPS + 1 for line in per_step)
    assert legend_labels(zoom) == ["GD: $L(w_k)$", "Edge Flow: $L(c + s_k r u)$"]
    assert "Edge Flow: $L_r(c)$" in legend_labels(whole)


def test_no_zoom_without_alternation_or_without_every_step_recorded():
    smooth = full_run()
    assert plots.zoom_window(smooth) is None
    fig = plots.edge_loss_figure(smooth)
    assert len(fig.axes) == 1 and "No zoom" in caption_of(fig)
    sparse = oscillating_run()
    for name in sparse:
        sparse.flows[name] = FlowRecord({k: v[::2] for k, v in sparse[name].items()}, sparse[name].info)
    assert plots.zoom_window(sparse) is None


# --- curves leaving the axis, divergence ----------------------------------------------------------


def edge_markers(ax, marker: str) -> list[Line2D]:
    return [line for line in ax.lines if line.get_marker() == marker and not line.get_clip_on()]


def test_a_loss_that_reaches_zero_is_marked_at_the_bottom_edge():
    res = full_run()
    gradient = np.exp(-EVERY_STEP / 2.0)
    gradient[EVERY_STEP >= 60] = 0.0
    res["gradient"]["train_loss"] = gradient
    _fig, ax = plt.subplots()
    plots.plot_loss(res, ax)
    (marker,) = edge_markers(ax, "v")
    assert marker.get_ydata()[0] == 0.0  # the bottom edge, in axes coordinates
    (label,) = [t for t in ax.get_legend_handles_labels()[1] if t.startswith("gradient flow:")]
    assert label.startswith("gradient flow: below") and label.endswith(", 0 from step 60")
    # the axis keeps GD's curve readable: 3 decades below GD's smallest loss, not the flow's 1e-26
    assert ax.get_ylim()[0] > np.exp(-100 / 50) * 10.0 ** -(plots.DECADES_BELOW_GD + 1)


def test_diverging_flow_leaves_the_top_with_a_mark_and_a_text():
    res = diverging_gd_run()
    fig = drawn_without_warnings(plots.overview_figure, res)
    loss = fig.axes[0]
    assert edge_markers(loss, "^")  # where GD's loss left the axis
    assert any("GD diverged (step 77)" in text for text in plots.panel_texts(loss))


def test_diverging_real_run_keeps_the_finite_part_without_warnings(tmp_path):
    res = ef.compare(ef.make_problem("zhu"), lr=0.5, steps=40, flows=["gd", "midpoint", "edge"])
    assert all(res[name].info["diverged_at"] is not None for name in res)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.plot_run(res, tmp_path)
    fig = drawn_without_warnings(plots.overview_figure, res)
    loss = fig.axes[0]
    bottom, top = loss.get_ylim()
    assert np.isfinite([bottom, top]).all() and 0 < bottom < top
    curves = [line for line in loss.lines if line.get_transform() is loss.transData]
    in_view = [
        line
        for line in curves
        if np.count_nonzero((line.get_ydata() >= bottom) & (line.get_ydata() <= top)) >= 2
    ]
    assert in_view, "the loss panel shows no curve"
    gd_at = res["gd"].info["diverged_at"]
    for ax in panels_with_data(fig):
        assert any(f"GD diverged (step {gd_at})" in text for text in plots.panel_texts(ax)), ax.get_title()
