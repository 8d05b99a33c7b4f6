"""Runs that survive: streamed results, checkpoints, resume bit for bit, interrupts."""

from __future__ import annotations

import math
import os
import signal

import h5py
import numpy as np
import pytest
import torch

import edgeflow as ef
from conftest import run_cli
from edgeflow.checkpoint import CHECKPOINT
from edgeflow.runner import Run, RunInterrupted
from edgeflow.storage import ResultsFileError

# Every process (the remedy flow too), the Edge Flow warm start (a nested GD process until step 3)
# and a central flow with an active constraint: the tiny MLP at η = 1 starts above 2/η.
FLOWS = ["gd", "midpoint", "edge", "gradient", "modified", "central", "mitigated", "capped"]
OPTIONS = {"central": {"substeps": 2}, "gradient": {"substep_rate": 2.0}, "modified": {"substep_rate": 2.0}}
LR, STEPS = 1.0, 12
SETTINGS = dict(record_every=1, sharpness_every=2, save_params=True, seed=3, options=OPTIONS)


def assert_same_records(a: ef.Result, b: ef.Result) -> None:
    """Every dataset of every group equal bit for bit (NaNs in the same places), same dtypes."""
    assert list(a) == list(b)
    for flow in a:
        assert sorted(a[flow]) == sorted(b[flow]), flow
        for field, values in a[flow].items():
            other = b[flow][field]
            assert other.dtype == values.dtype and other.shape == values.shape, (flow, field)
            assert np.array_equal(values, other, equal_nan=True), (flow, field)
        for key in ("cost", "init_cost", "measurement_cost", "diverged_at", "steps_completed"):
            assert a[flow].info[key] == b[flow].info[key], (flow, key)
    assert sorted(a.distances) == sorted(b.distances)
    for key, values in a.distances.items():
        assert np.array_equal(values, b.distances[key], equal_nan=True), key


def interrupt_at(monkeypatch, step: int, signum: int = signal.SIGINT) -> None:
    """Deliver a real signal to this process while the runner computes step ``step``."""
    original = Run.step_all

    def step_all(self, k):
        if k == step:
            os.kill(os.getpid(), signum)
        original(self, k)

    monkeypatch.setattr(Run, "step_all", step_all)


@pytest.fixture
def full_run(make_mlp, tmp_path):
    return ef.compare(make_mlp(), LR, STEPS, FLOWS, out=tmp_path / "full", **SETTINGS)


@pytest.mark.parametrize("stop", [2, 7])
def test_interrupt_then_resume_is_bit_identical(make_mlp, tmp_path, monkeypatch, full_run, stop):
    options = {**OPTIONS, "edge": {"warm_start": 3}}
    full = ef.compare(make_mlp(), LR, STEPS, FLOWS, out=tmp_path / "ws", **{**SETTINGS, "options": options})
    out = tmp_path / "split"
    interrupt_at(monkeypatch, stop)
    with pytest.raises(RunInterrupted) as info:
        ef.compare(make_mlp(), LR, STEPS, FLOWS, out=out, **{**SETTINGS, "options": options})
    assert info.value.step == stop + 1 and info.value.exit_code == 130
    assert (out / CHECKPOINT).is_file()
    partial = ef.load(out)
    assert not partial.complete
    assert partial["gd"]["step"].tolist() == list(range(stop + 1))  # every record up to the stop
    monkeypatch.undo()
    resumed = ef.resume(out, problem=make_mlp())  # a fresh problem object, as a new process has
    assert resumed.complete and resumed.resumed_from == [stop + 1]
    assert_same_records(full, resumed)
    assert not (out / CHECKPOINT).exists()  # a complete run has nothing left to resume
    assert full_run.complete and full_run.resumed_from == []


def test_crash_after_a_checkpoint_resumes_from_it(make_mlp, tmp_path, monkeypatch, full_run):
    """A run that dies (here: an exception at step 9) loses only the steps after its last checkpoint;
    the records it flushed after that checkpoint are dropped and computed again."""
    out = tmp_path / "crash"
    original = Run.step_all

    def dying(self, k):
        if k == 9:
            raise MemoryError("simulated crash")
        original(self, k)

    monkeypatch.setattr(Run, "step_all", dying)
    with pytest.raises(MemoryError):
        ef.compare(make_mlp(), LR, STEPS, FLOWS, out=out, checkpoint_every=4, flush_every=1, **SETTINGS)
    left = ef.load(out)
    assert left["gd"]["step"].tolist() == list(range(10))  # flushed at every record
    monkeypatch.undo()
    resumed = ef.resume(out, problem=make_mlp())
    assert resumed.resumed_from == [8]
    assert_same_records(full_run, resumed)


def test_process_state_round_trip_covers_every_process(make_mlp):
    """Each process restored from its state_dict into a fresh instance continues bit for bit."""
    run, clone = _run_and_fresh_clone(make_mlp, 4)
    for name, proc in run.procs.items():
        clone.procs[name].load_state_dict(proc.state_dict())
    for name in FLOWS:
        a, b = run.procs[name], clone.procs[name]
        a.step(), b.step()
        assert torch.equal(a.position, b.position), name
        obs_a, obs_b = a.observe(True), b.observe(True)
        assert obs_a.keys() == obs_b.keys()
        for key, value in obs_a.items():
            assert np.array_equal(value, obs_b[key], equal_nan=True), (name, key)


def _run_and_fresh_clone(make_mlp, steps: int) -> tuple[Run, Run]:
    """A run of every flow stepped ``steps`` times, and a fresh run of the same problem (not started)."""
    problem = make_mlp()
    run = Run(problem, _config(problem), problem.w0)
    run.start()
    for k in range(steps):
        run.record(k)
        run.step_all(k)
    return run, Run(make_mlp(), _config(problem), problem.w0)


def _config(problem) -> dict:
    from edgeflow.runner import _settings

    cfg = _settings(problem, LR, STEPS, FLOWS, 1, 2, False, 1, None, 0)
    return {**cfg, "options": OPTIONS}


def test_records_stream_to_disk_and_memory_does_not_hold_them(make_mlp, tmp_path, monkeypatch):
    """While running, results.h5 grows and opens with ef.load and h5py; the runner's buffer never
    holds more than flush_every records per flow."""
    out = tmp_path / "live"
    seen = []
    original = Run.step_all

    def watching(self, k):
        assert self.sink.buffered <= 3 * (len(FLOWS) + 1) * 2
        if k in (5, 9):
            live = ef.load(out)
            seen.append(len(live["gd"]["step"]))
            with h5py.File(out / "results.h5", "r") as f:  # a plain reader too, between flushes
                assert not f.attrs["complete"]
        original(self, k)

    monkeypatch.setattr(Run, "step_all", watching)
    ef.compare(make_mlp(), LR, STEPS, ["gd", "midpoint"], out=out, flush_every=3, save_params=True)
    assert seen[0] >= 3 and seen[1] > seen[0]
    assert ef.load(out).complete


def test_params_every_and_float32(make_mlp, tmp_path):
    res = ef.compare(
        make_mlp(),
        LR,
        9,
        ["gd"],
        out=tmp_path / "p",
        save_params=True,
        params_every=4,
        params_dtype="float32",
    )
    gd = res["gd"]
    assert gd["params_step"].tolist() == [0, 4, 8, 9]
    assert gd["params"].dtype == np.float32 and gd["params"].shape == (4, make_mlp().dim)
    assert len(gd["step"]) == 10
    assert "params" not in ef.load(tmp_path / "p", params=False)["gd"]


def test_run_directory_is_checked_before_any_computation(make_mlp, tmp_path):
    problem = make_mlp()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ef.ConfigError, match="is a file"):
        ef.compare(problem, LR, 2, ["gd"], out=tmp_path / "file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ef.ConfigError, match="holds no edgeflow run"):
        ef.compare(problem, LR, 2, ["gd"], out=tmp_path / "other", force=True)
    assert (tmp_path / "other" / "notes.txt").exists()
    ef.compare(problem, LR, 2, ["gd"], out=tmp_path / "run")
    (tmp_path / "run" / "figures").mkdir()
    (tmp_path / "run" / "figures" / "stale.png").write_bytes(b"")
    with pytest.raises(ef.ConfigError, match="already holds a run"):
        ef.compare(problem, LR, 2, ["gd"], out=tmp_path / "run")
    assert problem.counts.grad == 3  # the refused runs computed nothing
    ef.compare(problem, LR, 2, ["gd"], out=tmp_path / "run", force=True)
    assert not (tmp_path / "run" / "figures").exists()  # --force empties the directory first


def test_resume_needs_the_same_problem(make_mlp, tmp_path, monkeypatch):
    out = tmp_path / "r"
    interrupt_at(monkeypatch, 1)
    with pytest.raises(RunInterrupted):
        ef.compare(make_mlp(), LR, 4, ["gd"], out=out)
    monkeypatch.undo()
    with pytest.raises(ef.ConfigError, match="built by hand"):
        ef.resume(out)
    with pytest.raises(ef.ConfigError, match="differs from the one the run started with"):
        ef.resume(out, problem=make_mlp(width=5))


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"", "not a readable HDF5"), (os.urandom(4096), "not a readable HDF5"), (None, "not an edgeflow")],
)
def test_bad_results_files_are_one_clear_error(tmp_path, content, needle):
    path = tmp_path / "results.h5"
    if content is None:
        with h5py.File(path, "w") as f:
            f["x"] = [1, 2]
    else:
        path.write_bytes(content)
    with pytest.raises(ResultsFileError, match=needle):
        ef.load(path)


def test_truncated_results_file(make_mlp, tmp_path):
    res = ef.compare(make_mlp(), LR, 3, ["gd"], out=tmp_path / "t")
    assert res.complete
    path = tmp_path / "t" / "results.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ResultsFileError):
        ef.load(path)


# ---------------------------------------------------------------- the command line, in process
TINY = ["--problem", "zhu", "--steps", "4", "--quiet", "--no-plots"]


def test_cli_run_directory_checks_and_repeating_a_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(capsys, "run", *TINY, "--out", "afile")
    assert code == 2 and "is a file" in err
    code, _, err = run_cli(capsys, "run", *TINY, "--out", "runs/x")
    assert code == 0, err
    # the saved settings do not pin the directory: repeating the run goes to a fresh one
    assert "out" not in (tmp_path / "runs/x/config.toml").read_text()
    code, _, err = run_cli(capsys, "run", "--config", "runs/x/config.toml", "--out", "runs/y")
    assert code == 0, err
    assert_same_records(ef.load("runs/x"), ef.load("runs/y"))
    code, _, err = run_cli(
        capsys, "plot", "runs/x/results.h5"
    )  # a results file works as well as its directory
    assert code == 0, err
    assert (tmp_path / "runs/x/figures/loss.png").is_file()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--resume", "nowhere"], "nowhere does not exist"),
        (["--resume", "runs/x", "--lr", "0.1"], "remove --lr"),
        (["--resume", "runs/x", "--param", "x0=1"], "remove --param"),
        (["--resume", "runs/x"], "is complete"),
        (["--resume", "runs/x", "--checkpoint-every", "0"], "is complete"),
        (["--steps", "1e12", "--out", "runs/y"], "at most 1_000_000_000"),
    ],
)
def test_cli_run_and_resume_errors(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "run", *TINY, "--out", "runs/x")[0] == 0
    code, _, err = run_cli(capsys, "run", *argv)
    assert code == 2 and needle in err
    assert len(err.strip().splitlines()) == 1


def test_cli_plot_of_a_damaged_results_file(capsys, tmp_path):
    (tmp_path / "results.h5").write_bytes(os.urandom(2048))
    code, _, err = run_cli(capsys, "plot", str(tmp_path))
    assert code == 2 and "not a readable HDF5" in err


def test_edge_flow_checkpoints_from_before_the_rounding_noise_model_resume(make_mlp):
    """A state written by an Edge Flow without the rounding-noise and pair state still steps on."""
    run, clone = _run_and_fresh_clone(make_mlp, 3)
    state = run.procs["edge"].state_dict()
    for key in ("grad_rounding", "probe_generator", "next_probe", "g_prev", "gc_prev", "c_prev"):
        del state[key]
    edge = clone.procs["edge"]
    edge.load_state_dict(state)
    assert edge.grad_rounding == 0.0 and edge.next_probe == edge.time == 3
    edge.step()
    assert torch.isfinite(edge.position).all() and math.isfinite(edge.log_r)
