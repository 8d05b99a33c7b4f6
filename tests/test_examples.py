"""Every script in examples/ runs, at the tiny size EDGEFLOW_EXAMPLES_QUICK=1 selects (a few seconds
each), and prints what its docstring promises."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "EDGEFLOW_EXAMPLES_QUICK": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_example_is_tested():
    tested = {
        "own_model.py",
        "lr_sweep.py",
        "read_results.py",
        "stability_monitor.py",
        "lightning_monitor.py",
        "edge_flow_toy.py",
    }
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_own_model(tmp_path):
    out = run_example("own_model.py", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert "Fidelity against GD" in out and "| edge |" in out and "| gradient |" in out
    assert (tmp_path / "run" / "results.h5").is_file()


def test_own_model_factory_from_the_command_line(tmp_path):
    """The docstring's `edgeflow run --problem own_model:make_problem` from the examples directory."""
    command = [
        "run",
        "--problem",
        "own_model:make_problem",
        "--lr",
        "0.25",
        "--steps",
        "3",
        "--param",
        "width=8",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "edgeflow", *command, "--out", str(tmp_path / "run"), "--quiet", "--no-plots"],
        cwd=EXAMPLES,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "summary.md").is_file()


def test_lr_sweep(tmp_path):
    out = run_example("lr_sweep.py", "--out", str(tmp_path / "sweep"), cwd=tmp_path)
    assert "Learning-rate sweep on digits-mlp" in out and "η = 6.4:" in out
    assert (tmp_path / "sweep" / "sweep.png").is_file()


def test_read_results_makes_a_run_and_reads_it(tmp_path):
    out = run_example("read_results.py", cwd=tmp_path)
    assert "η = 0.15 (2/η = 13.33), problem 'zhu'" in out
    assert "‖edge − midpoint‖ / ‖w* − w₀‖: median" in out
    if importlib.util.find_spec("pandas") is None:
        assert "pandas is not installed" in out
    else:
        assert "magnitude" in out  # the DataFrame's columns
    assert "ef.load: Result(lr=0.15" in out


def test_read_results_of_a_given_run_directory(tmp_path):
    run_example("read_results.py", cwd=tmp_path)  # writes runs/example-read-results
    out = run_example("read_results.py", str(tmp_path / "runs" / "example-read-results"), cwd=tmp_path)
    assert "complete: True" in out


def test_stability_monitor(tmp_path):
    out = run_example("stability_monitor.py", cwd=tmp_path)
    assert "Part 1" in out and "Part 2" in out and "Part 3" in out
    assert "EdgeStableGD: last step size" in out and "largest spike" in out
    assert "OscillationCapped:" in out and "steps capped" in out


@pytest.mark.slow  # importing Lightning takes 4–10 s
def test_lightning_monitor(tmp_path):
    if not os.environ.get("CI"):  # CI installs the test extra, which has Lightning
        pytest.importorskip("pytorch_lightning", reason="pip install 'edgeflow[lightning]'")
    out = run_example("lightning_monitor.py", cwd=tmp_path)
    assert "Part 1" in out and "Part 2" in out
    assert "ηS measured at" in out and "lr_cap: final η = " in out and "largest spike" in out


def test_edge_flow_toy_uses_plain_torch_only(tmp_path):
    imports = [
        line
        for line in (EXAMPLES / "edge_flow_toy.py").read_text().splitlines()
        if line.startswith(("import", "from"))
    ]
    assert imports and not any("edgeflow" in line for line in imports)
    out = run_example("edge_flow_toy.py", "--plot", str(tmp_path / "toy.png"), cwd=tmp_path)
    assert "S at GD center" in out and (tmp_path / "toy.png").is_file()
