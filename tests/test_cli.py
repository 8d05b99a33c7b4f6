"""The command line: bad input gives one clear line and exit code 2; runs write a full run directory."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

import edgeflow as ef
from conftest import run_cli

BAD_INPUTS = [
    (["run", "--problem", "nope"], ["'nope'", "digits-mlp", "zhu"]),
    (["run", "--flows", "gd,warp"], ["'warp'", "gd", "midpoint", "gradient"]),
    (["run", "--flows", ","], ["names no flow", "gd"]),
    (["run", "--lr", "0"], ["--lr", "'0'"]),
    (["run", "--lr", "-0.1"], ["--lr", "'-0.1'"]),
    (["run", "--lr", "nan"], ["--lr", "'nan'"]),
    (["run", "--lr", "inf"], ["--lr", "'inf'"]),
    (["run", "--lr", "fast"], ["--lr", "'fast'"]),
    (["run", "--steps", "0"], ["--steps", "'0'"]),
    (["run", "--steps", "-5"], ["--steps", "'-5'"]),
    (["run", "--steps", "2.5"], ["--steps", "'2.5'"]),
    (["run", "--steps", "nan"], ["--steps", "'nan'"]),
    (["run", "--dtype", "float16"], ["'float16'", "float32", "float64"]),
    (["run", "--device", "gpu0"], ["'gpu0'", "cpu", "cuda"]),
    (["run", "--record-every", "0"], ["--record-every"]),
    (["run", "--record-every", "2", "--sharpness-every", "3"], ["multiple"]),
    (["run", "--seed", "x"], ["--seed", "'x'"]),
    (["run", "--option", "substeps=4"], ["FLOW.KEY=VALUE"]),
    (["run", "--option", "edge.warp=4"], ["'warp'", "substeps", "magnitude"]),
    (["run", "--option", "edge.magnitude=cubic"], ["'cubic'", "secant", "rayleigh", "linear"]),
    (["run", "--flows", "gd", "--option", "edge.substeps=4"], ["'edge'", "not run"]),
    (["plot", "/nonexistent/run"], ["no results.h5"]),
    (["fly"], ["invalid choice", "'fly'"]),
]


@pytest.mark.parametrize(("argv", "needles"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_line_with_exit_code_2(capsys, tmp_path, argv, needles):
    if argv[0] == "run":
        argv = [*argv, "--out", str(tmp_path / "run"), "--quiet"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("edgeflow: error:")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]
    assert not (tmp_path / "run").exists()


def test_unavailable_cuda_is_a_clear_error(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(capsys, "run", "--device", "cuda", "--out", str(tmp_path / "r"))
    assert code == 2
    assert "'cuda' is not available" in err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edgeflow.cli", "run", "--lr", "-1", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "Traceback" not in proc.stderr


def test_list_names_every_problem_and_flow(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in [*ef.PROBLEMS, *ef.PROCESSES]:
        assert f"  {name}" in out


def list_entries(out: str) -> dict[str, str]:
    """`edgeflow list`'s entries by name, each with its wrapped lines joined into one."""
    entries: dict[str, str] = {}
    name = None
    for line in out.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name = line.split()[0].rstrip(":")
            entries[name] = ""
        if name is not None:
            entries[name] += " " + line.strip()
    return entries


def test_list_shows_each_parameter_and_option_with_its_type_and_default(capsys):
    from edgeflow.processes import option_names
    from edgeflow.zoo import problem_params

    _, out, _ = run_cli(capsys, "list")
    entries = list_entries(out)
    for name in ef.PROBLEMS:
        for key in problem_params(name):
            assert f" {key}=" in entries[name], (name, key)
    for name in ef.PROCESSES:
        for key in option_names(name):
            assert f" {key}=" in entries[name], (name, key)
    # the CPU-sized default of the registry, not the builder's; types from the signatures
    assert "n=128 (int)" in entries["mnist5k-cnn"]
    assert "root=null (str | None)" in entries["cifar10-cnn"]
    assert "download=false (bool)" in entries["cifar10-cnn"]
    assert "x0=3.0 (float)" in entries["zhu"]
    assert "loss=mse" not in entries["teacher-deep-linear"]  # regression: MSE only
    assert "magnitude=secant (str)" in entries["edge"] and "r0=null (float | None)" in entries["edge"]
    assert "options: none" in entries["gd"]
    assert all(len(line) <= 100 for line in out.splitlines() if "=" in line)


def test_run_writes_a_run_directory_and_plot_redraws(capsys, tmp_path):
    out_dir = tmp_path / "zhu"
    code, out, err = run_cli(
        capsys,
        "run",
        "--problem",
        "zhu",
        "--steps",
        "30",
        "--flows",
        "gd,midpoint,gradient",
        "--out",
        str(out_dir),
        "--quiet",
        "--save-params",
    )
    assert code == 0, err
    for name in ["results.h5", "config.json", "config.toml", "summary.json", "summary.md"]:
        assert (out_dir / name).is_file()
    for name in ["loss.png", "sharpness.png", "overview.png"]:
        assert (out_dir / "figures" / name).stat().st_size > 10_000
    res = ef.load(out_dir / "results.h5")
    assert res.lr == pytest.approx(0.15)
    assert set(res) == {"gd", "midpoint", "gradient"}
    assert res["gd"]["step"].tolist() == list(range(31))
    assert res["gd"]["params"].shape == (31, 2)
    config = json.loads((out_dir / "config.json").read_text())
    assert config["problem"] == "zhu" and config["steps"] == 30
    assert "| gd |" in out
    summary = (out_dir / "summary.md").read_text()
    assert "| flow | rel. distance |" in summary and "period |" in summary
    fid = json.loads((out_dir / "summary.json").read_text())["fidelity"]
    assert set(fid["midpoint"]["onset"]) == {"cross", "peak_step", "peak", "dip_step", "dip", "period"}
    assert fid["gradient"]["distance_median"] > 0
    with h5py.File(out_dir / "results.h5") as f:
        assert json.loads(f.attrs["config"])["flows"] == ["gd", "midpoint", "gradient"]

    # refuses to overwrite, then redraws figures from the stored results
    code, _, err = run_cli(capsys, "run", "--problem", "zhu", "--steps", "3", "--out", str(out_dir))
    assert code == 2 and "--force" in err
    (out_dir / "figures" / "loss.png").unlink()
    code, _, _ = run_cli(capsys, "plot", str(out_dir))
    assert code == 0 and (out_dir / "figures" / "loss.png").is_file()


def test_diverging_run_stops_that_flow_keeps_records_and_says_so(capsys, caplog, tmp_path):
    # η·λ_max = 1·10 > 2: GD's error grows 9× per step along the top eigenvector until the loss
    # overflows float64; gradient flow converges.
    out_dir = tmp_path / "div"
    code, out, err = run_cli(
        capsys,
        "run",
        "--problem",
        "quadratic",
        "--lr",
        "1",
        "--steps",
        "400",
        "--sharpness-every",
        "20",
        "--flows",
        "gd,gradient",
        "--out",
        str(out_dir),
        "--quiet",
        "--no-plots",
    )
    assert code == 0, err
    assert "gd diverged at step" in caplog.text
    assert "gd diverged at step" in out
    res = ef.load(out_dir / "results.h5")
    k = res["gd"].info["diverged_at"]
    assert isinstance(k, int) and 0 < k < 400
    assert res["gd"]["step"][-1] < k
    assert np.isfinite(res["gd"]["train_loss"]).all()
    assert res["gradient"].info["diverged_at"] is None
    assert res["gradient"]["step"][-1] == 400
