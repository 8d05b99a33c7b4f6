"""The report after a run (summary, markdown, figures) on runs that went wrong: missing flows,
divergence, integrator failures, interrupted runs, sparse sharpness, overflowing values."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import edgeflow as ef
from edgeflow.metrics import error_traces, fidelity, summarize, summary_markdown
from edgeflow.plots import plot_run
from edgeflow.results import FlowRecord, Result

LR = 0.4  # 2/η = 5
N = 100
STEPS = np.arange(0, N + 1, 5)


def sharpness_trace(steps: np.ndarray = STEPS) -> np.ndarray:
    # rises 1 → 5 by step 40, overshoots to 7 (step 55), dips to 4.5 (step 70), then hovers near 5
    return np.interp(steps, [0, 40, 55, 70, 75, 100], [1, 5, 7, 4.5, 5.1, 4.9])


def info(steps: np.ndarray, **extra) -> dict:
    done = int(steps[-1]) if len(steps) else 0
    base = {"diverged_at": None, "steps_completed": done, "cost": {"grad": 2 * done, "hvp": 0}}
    return {**base, "wall_time": 0.01 * done, **extra}


def flow(name: str, steps: np.ndarray = STEPS, loss: np.ndarray | None = None, **extra) -> FlowRecord:
    """A plausible record of ``name`` over ``steps``: a falling loss, the sharpness trace, and the
    fields the runner would give that flow; ``extra`` goes into ``info``."""
    n = len(steps)
    data = {
        "step": steps,
        "train_loss": np.exp(-steps / 50) if loss is None else loss,
        "sharpness": sharpness_trace(steps),
    }
    if name == "midpoint":
        data |= {"mean_loss": 1.05 * data["train_loss"], "oscillation": np.full(n, 0.1)}
    if name == "edge":
        data |= {
            "magnitude": np.full(n, 0.12),
            "predicted_loss": 1.1 * data["train_loss"],
            "predicted_mean_loss": 1.04 * data["train_loss"],
        }
    return FlowRecord(data, info(steps, **extra))


def result(flows: dict[str, FlowRecord], steps: np.ndarray = STEPS, **config) -> Result:
    """A Result with the distances the runner measures: every flow to each reference it ran with."""
    refs = [r for r in ("midpoint", "gd") if r in flows]
    distances = {"step": steps}
    for r in refs:
        distances[f"{r}-w0"] = np.linspace(0.0, 2.0, len(steps))
        for other in flows:
            if other != r and not (other in refs and refs.index(other) < refs.index(r)):
                distances[f"{other}-{r}"] = np.linspace(0.0, 0.2, len(steps))
    return Result(LR, flows, distances, {"problem": "hand", "steps": N, **config})


def report(res: Result, tmp_path) -> tuple[dict, str, list]:
    """summarize + markdown + figures, failing on any warning; the summary is checked to be strict
    JSON (no NaN, no numpy types)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = summarize(res)
        md = summary_markdown(summary)
        paths = plot_run(res, tmp_path / "figures")
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0, p
    return summary, md, [p.name for p in paths]


# --- 1. any flow set --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flows", [["edge"], ["gradient", "central"], ["gd"], ["midpoint"], ["gd", "edge"], ["gd", "midpoint"]]
)
def test_any_flow_set(flows, tmp_path):
    res = result({name: flow(name) for name in flows})
    summary, md, figures = report(res, tmp_path)
    assert set(summary["flows"]) == set(flows)
    if "midpoint" in flows:
        assert "fidelity" in summary and "No fidelity section" not in md
    else:
        assert "fidelity" not in summary
        why = "fidelity against GD needs the `midpoint` flow (GD's center)"
        assert summary["fidelity_unavailable"].startswith(why)
        assert why in md and f"--flows {','.join(flows)},midpoint" in md
    if "gd" not in flows:
        assert all(row["wall_vs_gd"] is None for row in summary["flows"].values())
    eos_at = "midpoints" if "midpoint" in flows else "iterates" if "gd" in flows else None
    if eos_at:
        assert f"GD's sharpness (at its {eos_at}) rose from 1 (step 0) to 2/η = 5 at step 40" in md
    else:
        assert "GD was not run" in md and summary["eos"]["measured_at"] is None
    assert ("edge_loss.png" in figures) == ("gd" in flows and "edge" in flows)
    assert {"loss.png", "sharpness.png", "overview.png"} <= set(figures)


def test_wall_time_against_gd(tmp_path):
    res = result({"gd": flow("gd"), "edge": flow("edge")})
    res["edge"].info["wall_time"] *= 3
    summary, _md, _ = report(res, tmp_path)
    assert summary["flows"]["edge"]["wall_vs_gd"] == pytest.approx(3.0)
    assert summary["flows"]["gd"]["wall_vs_gd"] == pytest.approx(1.0)


# --- 2. divergence, integrator failure, interrupted runs ---------------------------------------


def empty_flow(**extra) -> FlowRecord:
    """A flow that diverged at step 0: the runner recorded nothing, not even its fields."""
    return FlowRecord({"step": np.zeros(0, dtype=np.int64)}, info(np.zeros(0), diverged_at=0, **extra))


def test_flow_that_diverged_at_step_0(tmp_path):
    res = result({"gd": flow("gd"), "midpoint": flow("midpoint"), "gradient": empty_flow()})
    res.distances["gradient-midpoint"][:] = np.nan
    res.distances["gradient-gd"][:] = np.nan
    summary, md, _ = report(res, tmp_path)
    row = summary["flows"]["gradient"]
    assert row["diverged_at"] == 0 and row["records"] == 0 and row["status"] == "diverged at step 0"
    assert row["last_loss"] is None and row["last_sharpness"] is None and row["grads_per_step"] is None
    assert row["wall_vs_gd"] is None  # no step taken: no cost per step (not a cost of zero)
    assert "gradient diverged at step 0 (non-finite loss or parameters); it has no records." in md
    assert summary["fidelity"]["gradient"]["distance_median"] is None
    assert summary["fidelity"]["gradient"]["onset"]["cross"] is None


def test_flow_that_diverged_later(tmp_path):
    keep = STEPS <= 35
    res = result({"midpoint": flow("midpoint"), "edge": flow("edge", STEPS[keep], diverged_at=37)})
    summary, md, _ = report(res, tmp_path)
    row = summary["flows"]["edge"]
    assert row["status"] == "diverged at step 37" and row["last_step"] == 35
    assert (row["last_loss_step"], row["last_sharpness_step"]) == (35, 35)
    assert "edge diverged at step 37 (non-finite loss or parameters); its records stop at step 35." in md
    assert "| diverged at step 37 |" in md


def test_integrator_failure_is_not_a_divergence(tmp_path):
    keep = STEPS <= 60
    message = "step size fell below 1e-12 of a GD step"
    central = flow("central", STEPS[keep], failed_at=62, failure=message)
    res = result({"gd": flow("gd"), "midpoint": flow("midpoint"), "central": central})
    summary, md, _ = report(res, tmp_path)
    row = summary["flows"]["central"]
    assert (row["failed_at"], row["failure"], row["diverged_at"]) == (62, message, None)
    assert row["status"] == "integrator failed at step 62"
    assert f"central: integrator failed at step 62: {message}" in md
    assert "not a divergence of the flow" in md
    assert "central diverged" not in md
    assert "| integrator failed at step 62 |" in md


def test_older_info_without_new_keys(tmp_path):
    """Files written before ``failed_at``/``failure``/``steps_completed``/costs existed."""
    res = result({"gd": flow("gd"), "midpoint": flow("midpoint")})
    for name in res:
        res[name].info = {"diverged_at": None}
    summary, _md, _ = report(res, tmp_path)
    assert summary["flows"]["gd"]["failed_at"] is None
    assert summary["flows"]["gd"]["grads_per_step"] is None
    assert summary["flows"]["gd"]["status"] == "completed"


def test_partial_run(tmp_path):
    keep = STEPS <= 40
    res = result({"gd": flow("gd", STEPS[keep]), "midpoint": flow("midpoint", STEPS[keep])}, STEPS[keep])
    res.complete = False
    summary, md, _ = report(res, tmp_path)
    assert summary["run"] == {"complete": False, "steps": N, "reached_step": 40}
    assert "partial run: reached step 40 of 100" in md
    assert summary["notes"][0] == "partial run: reached step 40 of 100 (interrupted)"
    assert summary["flows"]["gd"]["status"] == "interrupted after step 40"


def test_complete_run_says_nothing_about_partial(tmp_path):
    summary, md, _ = report(result({"gd": flow("gd"), "midpoint": flow("midpoint")}), tmp_path)
    assert summary["run"]["complete"] is True
    assert "partial" not in md and summary["notes"] == []


# --- 3. sparse sharpness: never a stale "final" value ------------------------------------------


def test_last_sharpness_is_the_last_measured_one_with_its_step(tmp_path):
    steps = np.arange(0, 98)  # last record: step 97; sharpness measured every 5th step
    res = result({"gd": flow("gd", steps), "midpoint": flow("midpoint", steps)}, steps)
    for name in res:
        s = res[name]["sharpness"]
        s[steps % 5 != 0] = np.nan
    summary, md, _ = report(res, tmp_path)
    row = summary["flows"]["midpoint"]
    assert row["last_sharpness_step"] == 95
    assert row["last_sharpness"] == pytest.approx(sharpness_trace(np.array([95]))[0])
    assert "final_sharpness" not in row
    assert f"{row['last_sharpness']:.4g} (95)" in md
    assert "last S (step)" in md


def test_sharpness_never_measured(tmp_path):
    res = result({"gd": flow("gd"), "midpoint": flow("midpoint")})
    for name in res:
        res[name]["sharpness"][:] = np.nan
    summary, md, _ = report(res, tmp_path)
    assert summary["flows"]["gd"]["last_sharpness"] is None
    assert summary["flows"]["gd"]["max_sharpness"] is None
    assert "GD's sharpness (at its midpoints) was never measured in this run." in md


# --- the sentence on GD's sharpness, for every course it takes ----------------------------------


def eos_sentence(trace: np.ndarray, flows: tuple[str, ...] = ("gd", "midpoint"), **gd_info) -> str:
    """The last line of summary.md for a run whose GD sharpness follows ``trace`` over STEPS
    (2/η = 5); ``gd_info`` goes into both GD flows' info (a divergence)."""
    records = {name: flow(name, **gd_info) for name in flows}
    for name in flows:
        records[name]["sharpness"] = np.asarray(trace, dtype=float)
    return summary_markdown(summarize(result(records))).strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("trace", "sentence"),
    [
        (  # rises through 2/η, overshoots, dips, hovers
            sharpness_trace(),
            "GD's sharpness (at its midpoints) rose from 1 (step 0) to 2/η = 5 at step 40, overshot to 7 "
            "(step 55), dipped to 4.5 (step 70), then stayed within [4.9, 5.1] (median 5 = 1.00 × 2/η).",
        ),
        (  # never reaches 2/η
            np.interp(STEPS, [0, 60, 100], [1, 4, 3]),
            "GD's sharpness (at its midpoints) stayed below 2/η = 5 in this run: from 1 (step 0), at most "
            "4 (step 60), last measured 3 (step 100).",
        ),
        (  # starts above 2/η and catapults below it
            np.interp(STEPS, [0, 10, 30, 100], [8, 9, 2, 2.5]),
            "GD's sharpness (at its midpoints) started above 2/η = 5, at 8 (step 0), peaked at 9 "
            "(step 10), fell below 2/η at step 25, dipped to 2 (step 30), then stayed within [2.036, 2.5] "
            "(median 2.268 = 0.45 × 2/η).",
        ),
        (  # starts above 2/η and stays there
            np.interp(STEPS, [0, 100], [6, 9]),
            "GD's sharpness (at its midpoints) started above 2/η = 5, at 6 (step 0), last measured 9 "
            "(step 100); it never fell below 2/η in this run.",
        ),
        (  # just below 2/η = 5: not printed as "5", which would read as starting at the threshold
            np.interp(STEPS, [0, 40, 100], [4.99996, 4.99996, 6]),
            "GD's sharpness (at its midpoints) rose from 4.99996 (step 0) to 2/η = 5 at step 45, last "
            "measured 6 (step 100).",
        ),
    ],
)
def test_eos_sentence_for_every_course_of_the_sharpness(trace, sentence):
    assert eos_sentence(trace) == sentence


def test_eos_sentence_with_gd_only_speaks_of_its_iterates():
    sentence = eos_sentence(sharpness_trace(), flows=("gd",))
    assert sentence.startswith("GD's sharpness (at its iterates) rose from 1 (step 0) to 2/η = 5 at step 40,")
    assert "gds" not in sentence


def test_eos_sentence_when_gd_diverges():
    rising = np.interp(STEPS, [0, 40, 100], [1, 5, 50])
    assert eos_sentence(rising, diverged_at=100) == (
        "GD's sharpness (at its midpoints) rose from 1 (step 0) to 2/η = 5 at step 40, last measured 50 "
        "(step 100); then `midpoint` diverged at step 100."
    )
    below = np.interp(STEPS, [0, 100], [1, 3])
    assert eos_sentence(below, diverged_at=100) == (
        "GD's sharpness (at its midpoints) stayed below 2/η = 5 before `midpoint` diverged at step 100: "
        "from 1 (step 0), last measured 3 (step 100)."
    )
    above = np.full(len(STEPS), 8.0)
    assert eos_sentence(above, flows=("gd",), diverged_at=100) == (
        "GD's sharpness (at its iterates) started above 2/η = 5, at 8 (step 0), last measured 8 (step 100); "
        "it never fell below 2/η before `gd` diverged at step 100."
    )


# --- 4. overflowing values ----------------------------------------------------------------------


def diverging_gd_run() -> Result:
    """GD's loss grows 100× per record to 1e300, then overflows to inf (its sharpness too); its
    midpoint, Edge Flow and the gradient flow run on."""
    keep = STEPS <= 75
    loss = np.exp(-STEPS / 50)
    gd_loss = np.where(STEPS < 10, loss, 10.0 ** np.clip(5 * (STEPS - 10), -1, 300))[keep]
    gd_loss[-1] = np.inf
    gd = flow("gd", STEPS[keep], gd_loss, diverged_at=77)
    gd["sharpness"] = np.where(STEPS[keep] < 20, gd["sharpness"], 10.0 ** (STEPS[keep] // 2))
    gd["sharpness"][-2:] = [1e308, np.inf]
    flows = {"gd": gd, "midpoint": flow("midpoint"), "edge": flow("edge"), "gradient": flow("gradient")}
    res = result(flows)
    res.distances["gd-midpoint"] = np.where(STEPS <= 75, 10.0 ** np.minimum(STEPS * 4, 300), np.nan)
    return res


def test_diverging_gd_figures_are_finite_and_marked(tmp_path):
    res = diverging_gd_run()
    summary, md, figures = report(res, tmp_path)
    assert summary["flows"]["gd"]["last_loss"] == 1e300  # the last finite loss, not inf
    assert summary["flows"]["gd"]["last_loss_step"] == 70
    assert "gd diverged at step 77" in md
    assert set(figures) == {"loss.png", "sharpness.png", "edge_loss.png", "overview.png"}


def test_every_panel_marks_the_divergence_and_keeps_a_readable_range():
    import matplotlib.pyplot as plt

    from edgeflow import plots

    res = diverging_gd_run()
    for draw in (plots.plot_loss, plots.plot_sharpness, plots.plot_magnitude, plots.plot_edge_loss):
        fig, ax = plt.subplots()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            draw(res, ax)
            fig.canvas.draw()
        texts = "\n".join(plots.panel_texts(ax))
        assert "GD diverged (step 77)" in texts, (draw.__name__, texts)
        bottom, top = ax.get_ylim()
        assert np.isfinite([bottom, top]).all()
        if ax.get_yscale() == "log":
            assert bottom > 0 and top <= 10.0 ** (plots.DECADES_ABOVE + 1)
        else:  # sharpness: the flows that ran on stay in [1, 7], 2/η = 5
            assert top < 20
        plt.close(fig)


def test_every_flow_diverged(tmp_path):
    res = result({"gd": empty_flow(), "midpoint": empty_flow(), "edge": empty_flow()})
    res.distances = {k: np.full(len(STEPS), np.nan) if k != "step" else STEPS for k in res.distances}
    summary, md, figures = report(res, tmp_path)
    assert all(row["status"] == "diverged at step 0" for row in summary["flows"].values())
    assert "fidelity against GD is undefined" in md
    assert (
        "GD's sharpness (at its midpoints) was never measured in this run: `midpoint` diverged at step 0"
        in md
    )
    assert "overview.png" in figures


def test_every_flow_diverged_late_with_huge_values(tmp_path):
    keep = STEPS <= 50
    huge = 10.0 ** (6 * STEPS[keep])
    flows = {
        name: flow(name, STEPS[keep], huge, diverged_at=52 + i)
        for i, name in enumerate(["gd", "midpoint", "edge"])
    }
    for rec in flows.values():
        rec["sharpness"] = huge.copy()
    summary, _md, _ = report(result(flows), tmp_path)
    assert summary["flows"]["edge"]["last_loss"] == 1e300


# --- 5. metrics on degenerate inputs ------------------------------------------------------------


def test_fidelity_with_empty_flows_nan_distances_and_no_sharpness():
    res = result({"gd": flow("gd"), "midpoint": flow("midpoint"), "edge": empty_flow()})
    res["midpoint"]["sharpness"][:] = np.nan
    res.distances["gd-midpoint"][::3] = np.nan
    res.distances["midpoint-w0"][5] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fid = fidelity(res)
        traces = error_traces(res, "edge")
    assert traces["step"].size == 0 and traces["distance"].size == 0
    assert fid["edge"]["distance_median"] is None
    assert fid["gd"]["distance_median"] == pytest.approx(0.1)
    assert fid["gd"]["sharpness_median"] is None  # the midpoint's sharpness was never measured
    assert fid["midpoint"]["onset"]["cross"] is None


def test_fidelity_when_the_midpoint_recorded_nothing():
    res = result({"gd": flow("gd"), "midpoint": empty_flow()})
    fid = fidelity(res)
    assert fid["gd"]["distance_median"] is None and fid["midpoint"]["onset"]["cross"] is None


# --- end to end ---------------------------------------------------------------------------------


def test_end_to_end_diverging_quadratic(tmp_path):
    problem = ef.Problem.from_function(lambda w: 0.5 * (w**2).sum() * 10, [1.0, 2.0], name="steep")
    res = ef.compare(problem, 0.5, 400, flows=["gd", "midpoint", "gradient"])
    assert res["gd"].info["diverged_at"] is not None
    _summary, md, figures = report(res, tmp_path)
    assert f"gd diverged at step {res['gd'].info['diverged_at']}" in md
    assert "overview.png" in figures


def test_end_to_end_gd_only(tmp_path):
    res = ef.compare(ef.make_problem("zhu"), lr=50.0, steps=10, flows=["gd"])
    _summary, md, figures = report(res, tmp_path)
    assert "needs the `midpoint` flow" in md
    assert "edge_loss.png" not in figures
