"""Every named problem runs through `edgeflow run` at a tiny size; configuration files, flags and
user factories compose as documented."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

import edgeflow as ef
from conftest import run_cli
from edgeflow.config import RunConfig, load_toml
from edgeflow.errors import ConfigError
from edgeflow.zoo import PROBLEMS, problem_params
from test_data import write_fake_cifar

# Sizes small enough for 3 steps of GD and Edge Flow in about a second each.
TINY = {
    "digits-mlp": {"n": 20, "width": 4},
    "mnist5k-cnn": {"n": 10, "channels": 2, "width": 4},
    "mnist5k-vit": {"n": 10, "dim": 4, "heads": 1},
    "cifar10-cnn": {"n": 10, "channels": 2, "width": 4},
    "cifar10-vit": {"n": 10, "dim": 4, "heads": 1, "patch_size": 8},
    "mnist5k-resnet": {"n": 10, "channels": 2, "stages": 2},
    "cifar10-resnet": {"n": 10, "channels": 2, "stages": 2},
    "sort-transformer": {"n": 8, "dim": 4, "heads": 1},
    "copy-transformer": {"n": 8, "dim": 4, "heads": 1},
    "teacher-deep-linear": {"n": 10, "d_in": 3, "d_out": 2, "width": 3},
    "quadratic": {"d": 3},
    "zhu": {},
    "scalar": {},
    "quartic": {},
}


def test_every_registered_problem_has_a_tiny_size():
    assert set(TINY) == set(PROBLEMS)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_each_named_problem_runs_gd_and_edge(capsys, tmp_path, name):
    params = dict(TINY[name])
    if "root" in problem_params(name):
        write_fake_cifar(tmp_path / "data")
        params["root"] = str(tmp_path / "data")
    argv = ["run", "--problem", name, "--steps", "3", "--flows", "gd,midpoint,edge"]
    for key, value in params.items():
        argv += ["--param", f"{key}={value}"]
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, *argv, "--out", str(out), "--quiet", "--no-plots")
    assert code == 0, err
    res = ef.load(out / "results.h5")
    assert res["edge"]["step"].tolist() == [0, 1, 2, 3]
    assert res["gd"].info["diverged_at"] is None
    saved = load_toml(out / "config.toml")
    assert saved["problem"] == name
    for key, value in params.items():
        assert saved["params"][key] == value


def test_cifar_problem_without_archive_says_how_to_get_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLOW_DATA", str(tmp_path / "empty"))
    code, _, err = run_cli(capsys, "run", "--problem", "cifar10-vit", "--out", str(tmp_path / "r"), "--quiet")
    assert code == 2
    assert "cifar-10-binary.tar.gz" in err and "--download" in err


def test_download_flag_needs_a_problem_with_a_dataset_to_download(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--problem", "zhu", "--download", "--out", str(tmp_path / "r"))
    assert code == 2
    assert "no dataset to download" in err


# ------------------------------------------------------------------------------------------ config
def write(path, text: str):
    path.write_text(textwrap.dedent(text))
    return path


def test_config_file_round_trips(tmp_path):
    cfg = RunConfig.merged(
        {
            "problem": "zhu",
            "lr": 0.15,
            "steps": 7,
            "flows": ["gd", "midpoint", "edge"],
            "seed": 3,
            "params": {"x0": 2.5},
            "options": {"edge": {"substeps": 4, "magnitude": "rayleigh"}},
        }
    )
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert RunConfig.merged(load_toml(path)) == cfg


def test_flags_override_the_file_key_by_key(capsys, tmp_path):
    config = write(
        tmp_path / "exp.toml",
        """
        problem = "zhu"
        steps = 5
        flows = "gd,midpoint,edge"

        [params]
        x0 = 2.5
        y0 = 0.3

        [options.edge]
        substeps = 4
        magnitude = "rayleigh"
        """,
    )
    out = tmp_path / "run"
    argv = [
        "run",
        "--config",
        str(config),
        "--steps",
        "3",
        "--param",
        "y0=0.25",
        "--option",
        "edge.substeps=1",
    ]
    code, _, err = run_cli(capsys, *argv, "--out", str(out), "--quiet", "--no-plots")
    assert code == 0, err
    saved = load_toml(out / "config.toml")
    assert saved["steps"] == 3  # flag
    assert saved["params"]["x0"] == 2.5 and saved["params"]["y0"] == 0.25  # file, then flag
    assert saved["options"]["edge"] == {"substeps": 1, "magnitude": "rayleigh"}
    assert ef.load(out / "results.h5")["edge"]["step"].tolist() == [0, 1, 2, 3]
    # the saved config runs the same experiment again
    again = tmp_path / "again"
    code, _, err = run_cli(
        capsys, "run", "--config", str(out / "config.toml"), "--out", str(again), "--quiet"
    )
    assert code == 0, err
    a, b = ef.load(out / "results.h5"), ef.load(again / "results.h5")
    assert (a["edge"]["train_loss"] == b["edge"]["train_loss"]).all()


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('problem = "zhu"\nlearning_rate = 0.1\n', ["'learning_rate'", "lr", "steps"]),
        ('problem = "zhu"\n[params]\nwidth = 3\n', ["'width'", "x0", "y0"]),
        ('problem = "zhu"\n[options.edge]\nwarp = 3\n', ["'warp'", "substeps"]),
        ("problem = \n", ["not valid TOML"]),
        ("params = 3\n", ["params", "table"]),
    ],
)
def test_bad_config_file_is_one_clear_line(capsys, tmp_path, text, needles):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    argv = ["run", "--config", str(path), "--steps", "2", "--flows", "gd,edge", "--out", str(tmp_path / "r")]
    code, _, err = run_cli(capsys, *argv, "--quiet", "--no-plots")
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("edgeflow: error:"), err
    for needle in needles:
        assert needle in lines[0]


def test_missing_config_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "does not exist" in err


# ---------------------------------------------------------------------------------------- factories
FACTORY = """
import torch
import edgeflow as ef

def make_problem(*, dtype, device, seed, scale=1.0):
    return ef.Problem.from_function(
        lambda w: 0.5 * scale * (w**2).sum(), [1.0, 2.0], dtype=dtype, device=device, name="mine"
    )

def not_a_problem(*, dtype, device, seed):
    return 42
"""


@pytest.fixture
def user_module(importable_module):
    return importable_module("my_problems", FACTORY)


def test_user_factory_runs(capsys, tmp_path, user_module):
    out = tmp_path / "run"
    argv = ["run", "--problem", f"{user_module}:make_problem", "--lr", "0.5", "--steps", "4"]
    code, _, err = run_cli(capsys, *argv, "--param", "scale=3", "--out", str(out), "--quiet", "--no-plots")
    assert code == 0, err
    res = ef.load(out / "results.h5")
    # GD on ½·3‖w‖² with η = 0.5 multiplies w by (1 − 1.5) each step
    assert res["gd"]["train_loss"][-1] == pytest.approx(0.5 * 3 * 5.0 * 0.5**8)
    assert json.loads((out / "config.json").read_text())["problem"] == "mine"


def test_factory_in_the_current_directory_needs_no_pythonpath(capsys, tmp_path, monkeypatch):
    """`edgeflow run --problem mymod:make_problem` next to mymod.py, as the console script runs it:
    without the current directory on sys.path (python -m would put it there)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "cwd_problems.py").write_text(FACTORY)
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(work))])
    monkeypatch.delitem(sys.modules, "cwd_problems", raising=False)
    argv = ["run", "--problem", "cwd_problems:make_problem", "--lr", "0.5", "--steps", "2"]
    code, _, err = run_cli(capsys, *argv, "--out", str(tmp_path / "run"), "--quiet", "--no-plots")
    sys.modules.pop("cwd_problems", None)
    assert code == 0, err
    assert str(work) not in sys.path  # the import path is left as it was


@pytest.mark.parametrize(
    ("problem", "extra", "needle"),
    [
        ("my_problems:make_problem", [], "--lr is required"),
        ("my_problems:nope", ["--lr", "0.1", "--steps", "2"], "no function 'nope'"),
        ("my_problems:not_a_problem", ["--lr", "0.1", "--steps", "2"], "not an edgeflow Problem"),
        ("no_such_module_xyz:f", ["--lr", "0.1", "--steps", "2"], "cannot import 'no_such_module_xyz'"),
    ],
)
def test_bad_user_factory_is_one_clear_line(capsys, tmp_path, user_module, problem, extra, needle):
    code, _, err = run_cli(
        capsys, "run", "--problem", problem, *extra, "--out", str(tmp_path / "r"), "--quiet"
    )
    assert code == 2
    assert needle in err


def test_merged_rejects_unknown_keys():
    with pytest.raises(ConfigError, match=r"'colour'.*valid keys"):
        RunConfig.merged({"colour": "blue"})


@pytest.mark.slow
def test_gpu_check_script_runs_its_path_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh end to end with DEVICE=cpu at a tiny size, one process (the GPU run is
    the same path). Its data-parallel branch is `edgeflow run` under torchrun, which
    tests/test_distributed.py runs, and benchmarks/scaling.py, whose three launches took half of
    this test's minute: docs/scaling.md holds its measurements."""
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "NPROC": "1",
        "OMP_NUM_THREADS": "1",
        "STEPS": "2",
        "N": "10",
        "WARMUP": "1",
        "MLP_WARMUP": "1",
        "MLP_STEPS": "2",
        "REPEATS": "1",
        "OUT": str(tmp_path / "run"),
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        ["bash", str(script)], cwd=script.parents[1], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Fidelity against GD" in done.stdout
    assert "| central |" in done.stdout and "wall vs GD" in done.stdout
    assert "digits-mlp (d = 8970, float64, cpu)" in done.stdout  # the default MLP's cost table
    assert "| edge K = 2, hvp = pair+center |" in done.stdout
    assert (tmp_path / "run" / "results.h5").is_file()


@pytest.mark.parametrize("venv", [True, False])
def test_gpu_check_script_takes_the_readme_venv_by_default(tmp_path, venv):
    """With PYTHON unset the script runs the repository's .venv/bin/python (what the README's
    install creates), else python3; an interpreter without edgeflow stops it with one clear line."""
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "benchmarks" / "gpu_check.sh").write_text(script.read_text())
    # stand-ins for the interpreters, neither of which can import edgeflow
    venv_python, path_python = repo / ".venv" / "bin" / "python", tmp_path / "bin" / "python3"
    for python in (venv_python, path_python) if venv else (path_python,):
        python.parent.mkdir(parents=True)
        python.write_text("#!/bin/sh\nexit 1\n")
        python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env["PATH"] = f"{path_python.parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        ["bash", str(repo / "benchmarks" / "gpu_check.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    expected = str(venv_python) if venv else "python3"
    assert done.stderr.strip() == (
        f"gpu_check: {expected} cannot import edgeflow; install it as in the README or set PYTHON=..."
    )


def test_default_learning_rates_per_optimizer_are_the_measured_ones():
    """Every problem's ``optimizer_lrs`` are the η that benchmarks/optimizer_lrs.py chose
    (docs/optimizer_lrs.json): each written into the registry from that measurement, none guessed."""
    from pathlib import Path

    measured = json.loads((Path(__file__).resolve().parents[1] / "docs" / "optimizer_lrs.json").read_text())
    chosen = {(m["problem"], m["optimizer"]): m["chosen"]["lr"] for m in measured if m["chosen"]}
    registered = {(name, o): lr for name, spec in PROBLEMS.items() for o, lr in spec.optimizer_lrs.items()}
    assert registered == chosen
    assert all(PROBLEMS[name].lr_for(opt) == lr for (name, opt), lr in chosen.items())
