"""benchmarks/fidelity.py: its rows, sub-step levels and report, on a few steps of the quartic."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fidelity.py"


@pytest.fixture(scope="module")
def fid():
    spec = importlib.util.spec_from_file_location("fidelity_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def rows(fid, *keys):
    return [row for row in fid.ROWS if row.key in keys]


def test_rows_of_one_flow_go_to_separate_compare_calls(fid):
    groups = fid.batches(rows(fid, "edge", "edge-gradient", "edge-k1", "gradient"))
    assert [[row.key for row in group] for group in groups] == [
        ["edge", "gradient"],
        ["edge-gradient"],
        ["edge-k1"],
    ]


def test_sub_step_levels_round_trip(fid):
    edge, k1, gradient = rows(fid, "edge", "edge-k1", "gradient")
    assert fid.refined_options(edge, 1) == {"substeps": 4}
    assert fid.refined_options(k1, 0) == {"substeps": 1}
    assert fid.refined_options(gradient, 2) == {"substep_rate": 0.25}
    for row in (edge, k1, gradient):
        assert fid.level_of(row, fid.refined_options(row, 2)) == 2
    # the options that decide whether an earlier row may be reused include the defaults
    assert fid.model_options(edge)["center"] == "modified"
    assert fid.model_options(rows(fid, "edge-gradient")[0])["center"] == "gradient"


def test_case_and_report(fid, tmp_path):
    case = fid.Case("quartic", 12, max_doublings=1, why="test")
    chosen = rows(fid, "edge", "edge-k1", "gradient")
    result = fid.run_case(case, chosen, None, {})
    flows = result["flows"]
    assert set(flows) == {"midpoint", "edge", "edge-k1", "gradient"}
    assert flows["edge-k1"]["options"] == {"substeps": 1} and flows["edge-k1"]["converged"] is None
    assert len(flows["edge"]["doubling_changes"]) == 1
    assert flows["edge-k1"]["per_step"]["grad"] == 3  # one sub-step: g₊, g₋, ∇L(c)
    out = tmp_path / "results.md"
    fid.write_report([result], out, "2026-01-01 00:00", None)
    text = out.read_text()
    assert "| quartic | edge, one sub-step (K = 1) |" in text
    assert "## Goals" in text  # without the central flow (a momentum's cases) its column reads "–"
    assert "| quartic | run | " in text and text.split("| quartic | run | ")[1].split("\n")[0].endswith(
        "| – |"
    )
    assert json.loads(out.with_suffix(".json").read_text())["cases"][0]["name"] == "quartic"


def test_a_row_measured_before_an_option_existed_is_reused_at_that_options_default(fid):
    edge, k1_secant = rows(fid, "edge", "edge-k1-secant")
    before = {key: value for key, value in fid.model_options(edge).items() if key != "implicit"}
    assert fid.same_model(edge, before)  # `implicit` did not exist then: its default, "u", is what ran
    assert not fid.same_model(edge, {**before, "substeps": 4})
    assert not fid.same_model(k1_secant, {**before, "substeps": 1})  # not the secant center
    assert not fid.same_model(edge, None)


def test_reused_rows_are_compared_with_the_gd_of_their_own_run(fid):
    def onset(peak):
        return {"cross": 10, "peak": peak, "peak_step": 20, "dip": 1.0, "dip_step": 30, "period": None}

    case = {
        "name": "toy",
        "problem": "toy",
        "lr": 0.5,
        "threshold": 4.0,
        "gd_onset": onset(5.0),
        "flows": {
            "midpoint": {"onset": onset(5.0)},
            "edge": {"onset": onset(5.2), "gd_onset": onset(5.1), "measured": "old", "label": "edge"},
            "gradient": {"onset": onset(5.0), "gd_onset": onset(5.0), "measured": "new", "label": "gradient"},
        },
    }
    assert fid._onset_errors(case, "edge")[1] == "+0.025 @+0"  # (5.2 − 5.1)·η/2 against its own GD
    assert fid._onset_errors(case, "gradient")[1] == "+0.000 @+0"
    table = "\n".join(fid.onset_table([case]))
    assert "| toy | 4 | GD (midpoint), run of old | 10 | 5.1 (20) |" in table
    assert "| toy | 4 | GD (midpoint), run of new | 10 | 5 (20) |" in table


def test_no_refine_reports_every_row_at_its_own_sub_steps_and_says_so(fid, tmp_path, monkeypatch):
    out = tmp_path / "k2.md"
    argv = [
        "fidelity.py",
        "--problems",
        "quartic",
        "--rows",
        "edge,edge-pair",
        "--no-refine",
        "--out",
        str(out),
    ]
    monkeypatch.setattr(fid, "SUITE", (fid.Case("quartic", 12, why="test"),))
    monkeypatch.setattr(sys, "argv", argv)
    fid.main()
    text = out.read_text()
    assert "**Not refined (`--no-refine`)" in text
    assert "| quartic | edge (K = 2) |" in text and "| quartic | edge, HVP from the pair (K = 2) |" in text
    flows = json.loads(out.with_suffix(".json").read_text())["cases"][0]["flows"]
    assert flows["edge"]["doubling_changes"] == [] and flows["edge"]["converged"] is None
    monkeypatch.setattr(sys, "argv", [*argv, "--reuse", str(out.with_suffix(".json"))])
    with pytest.raises(SystemExit):
        fid.main()  # reusing refined rows would mix them into a report of rows as run


def test_an_rmsprop_case_runs_the_rows_that_model_it_against_its_threshold(fid, tmp_path):
    """A case with another optimizer keeps only the rows whose flows model it (the modified flow is
    GD's alone), runs its discrete iterates as flow ``gd`` after the warm start, and reports against
    the optimizer's threshold on λ₁(P⁻¹H), not 2/η."""
    case = fid.Case("quadratic", 6, lr=0.3, optimizer="rmsprop", warm_start=2, max_doublings=0, why="test")
    chosen = fid.case_rows(case, rows(fid, "edge", "modified", "gradient"))
    assert [row.key for row in chosen] == ["edge", "gradient"]
    result = fid.run_case(case, chosen, None, {})
    assert result["optimizer"] == "rmsprop" and result["warm_start"] == 2
    assert result["threshold"] == 2.0 and result["lr"] == 0.3
    assert set(result["flows"]) == {"midpoint", "edge", "gradient"}
    out = tmp_path / "results.md"
    fid.write_report([result], out, "2026-01-01 00:00", None)
    assert "| quadratic | rmsprop, warm start 2 | 0.3 (2) |" in out.read_text()
    limited = fid.Case("quadratic", 6, optimizer="rmsprop", rows=("gradient",), lr=0.3)
    assert [row.key for row in fid.case_rows(limited, list(fid.ROWS))] == ["gradient"]


def test_edge_flow_with_a_momentum_runs_at_its_own_step(fid):
    """With a momentum Edge Flow's one sub-step is its model, not a coarse level: it is not doubled,
    and the row records the sub-step it ran at."""
    case = fid.Case("quartic", 12, max_doublings=1, lr=0.05, optimizer="momentum", rows=("edge", "gradient"))
    chosen = fid.case_rows(case, rows(fid, "edge", "central", "gradient"))
    assert [row.key for row in chosen] == ["edge", "gradient"]  # the central flow does not model it
    flows = fid.run_case(case, chosen, None, {})["flows"]
    assert flows["edge"]["options"] == {"substeps": 1} and flows["edge"]["model"]["substeps"] == 1
    assert flows["edge"]["converged"] is None and flows["edge"]["doubling_changes"] == []
    assert len(flows["gradient"]["doubling_changes"]) == 1
