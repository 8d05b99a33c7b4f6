"""Run directories under contention and misuse: one writer at a time (run, resume, sweep), SIGHUP,
and errors that leave nothing behind and say what the directory is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import edgeflow as ef
from conftest import run_cli
from edgeflow import lock
from edgeflow.runner import Run
from test_resume import assert_same_records
from test_resume_cli import edgeflow

LONG = ["--problem", "quadratic", "--steps", "1000000", "--quiet", "--no-plots"]


def wait_until_held(proc: subprocess.Popen, directory: Path, also: Path | None = None, timeout=120) -> None:
    """Until ``proc`` holds ``directory``'s lock (and ``also`` exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            held = (directory / lock.LOCK_FILE).read_text().startswith(f"pid {proc.pid},")
        except OSError:
            held = False
        if held and (also is None or also.exists()):
            return
        time.sleep(0.05)
    raise AssertionError(f"{proc.args} did not take {directory} within {timeout} s")


def assert_refused(capsys, holder: subprocess.Popen, *argv: str) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    line = err.strip()
    assert "\n" not in line and "in use by another edgeflow process" in line, err
    assert f"pid {holder.pid}," in line


def test_one_writer_per_directory_run_resume_and_sweep(capsys, tmp_path):
    run_dir, sweep_dir = tmp_path / "run", tmp_path / "sweep"
    runner = edgeflow("run", *LONG, "--flows", "gd", "--checkpoint-every", "50", "--out", str(run_dir))
    sweeper = edgeflow("sweep", *LONG[:-1], "--lrs", "0.1,0.15", "--out", str(sweep_dir))
    try:
        wait_until_held(runner, run_dir, also=run_dir / "checkpoint.pt")
        before = sorted(p.name for p in run_dir.iterdir())
        assert_refused(capsys, runner, "run", "--resume", str(run_dir))
        assert_refused(capsys, runner, "run", "--problem", "quadratic", "--out", str(run_dir), "--force")
        sweep = ["sweep", "--problem", "quadratic", "--lrs", "0.1"]
        assert_refused(capsys, runner, *sweep, "--out", str(run_dir))
        assert sorted(p.name for p in run_dir.iterdir()) == before  # the refused writers touched nothing
        assert not ef.load(run_dir).complete  # readers never need the lock

        # SIGHUP (a closed terminal) stops like SIGTERM: checkpoint, records, summary, resume hint
        runner.send_signal(signal.SIGHUP)
        _, err = runner.communicate(timeout=60)
        assert runner.returncode == 128 + signal.SIGHUP, err
        assert f"resume with: edgeflow run --resume {run_dir}" in err and "Traceback" not in err
        assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "summary.md").is_file()
        assert not ef.load(run_dir).complete

        wait_until_held(sweeper, sweep_dir, also=sweep_dir / "lr-0.1" / "checkpoint.pt")
        argv = ["sweep", "--problem", "quadratic", "--lrs", "0.1", "--steps", "5", "--force"]
        assert_refused(capsys, sweeper, *argv, "--out", str(sweep_dir))
        assert_refused(capsys, sweeper, "sweep", "--resume", str(sweep_dir))
        assert_refused(capsys, sweeper, "run", "--resume", str(sweep_dir / "lr-0.1"))
        sweeper.kill()  # kill -9 releases the lock at once, leaving a file nobody holds
        sweeper.wait()
        for held in (sweep_dir, sweep_dir / "lr-0.1"):
            assert (held / lock.LOCK_FILE).exists()
            with lock.holding(held, "a test"):
                assert (held / lock.LOCK_FILE).read_text().startswith(f"pid {os.getpid()},")
            assert not (held / lock.LOCK_FILE).exists()
    finally:
        for proc in (runner, sweeper):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_lock_nests_within_a_process_and_creates_only_what_it_needs(tmp_path):
    fresh = tmp_path / "a" / "b"
    with lock.holding(fresh, "outer", create=True):
        with lock.holding(fresh, "inner"):
            pass
        assert (fresh / lock.LOCK_FILE).exists()  # the outer hold is still on
        lock.check_free(fresh)  # our own hold does not count as another writer
    assert not fresh.exists()  # created for nothing: removed again
    with pytest.raises(ef.ConfigError, match="cannot write"):
        lock.acquire(tmp_path / "missing", "a test")


def test_failed_validation_leaves_no_run_directory(capsys, tmp_path):
    out = tmp_path / "run"
    for bad in (["--checkpoint-every", "0"], ["--flush-every", "-1"], ["--params-every", "0"]):
        argv = ["run", "--problem", "quadratic", "--steps", "5", *bad, "--out", str(out)]
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and bad[0] in err, err
        assert not out.exists()
    prob = ef.make_problem("quadratic")
    for kwargs in ({"options": {"gd": {"nope": 1}}}, {"checkpoint_every": 0}):
        with pytest.raises(ef.ConfigError):
            ef.compare(prob, 0.1, 5, ["gd"], out=out, **kwargs)
        assert not out.exists()


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: d, "holds no"),
        (lambda d: (d / "f.txt").write_text("x") and d / "f.txt", "is a file"),
    ],
    ids=["missing", "empty", "file"],
)
def test_resume_says_what_the_directory_is(capsys, tmp_path, make, needle):
    target = make(tmp_path)
    code, _, err = run_cli(capsys, "run", "--resume", str(target))
    assert code == 2 and needle in err and "--force" not in err, err
    code, _, err = run_cli(capsys, "sweep", "--resume", str(target))
    assert code == 2 and needle in err and "--force" not in err, err


def test_resume_before_the_first_checkpoint_gives_a_command_that_works(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--problem", "quadratic", "--steps", "3", "--out", str(out), "--quiet", "--no-plots"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    (out / "results.h5").unlink()  # as if killed before its first checkpoint: no checkpoint, no records
    code, _, err = run_cli(capsys, "run", "--resume", str(out))
    assert code == 2, err
    command = err.split("to run it again: ")[1].strip()
    code, _, err = run_cli(capsys, *command.split()[1:], "--quiet")
    assert code == 0, err


def test_interrupted_sweep_resumes_each_eta_from_its_own_checkpoint(capsys, tmp_path, monkeypatch):
    argv = ["sweep", "--problem", "quadratic", "--lrs", "0.1,0.15,0.19", "--steps", "12", "--quiet"]
    code, _, err = run_cli(capsys, *argv, "--out", str(tmp_path / "full"))
    assert code == 0, err
    out = tmp_path / "split"
    original = Run.step_all

    def step_all(self, k):  # Ctrl-C in the second of three η, at step 7
        if self.lr == 0.15 and k == 7:
            os.kill(os.getpid(), signal.SIGINT)
        original(self, k)

    monkeypatch.setattr(Run, "step_all", step_all)
    code, _, err = run_cli(capsys, *argv, "--out", str(out))
    assert code == 130 and f"continue the sweep with: edgeflow sweep --resume {out}" in err, err
    assert (out / "lr-0.15" / "checkpoint.pt").is_file() and not (out / "lr-0.19").exists()
    assert not (out / "sweep.json").exists()

    held = []
    monkeypatch.setattr(
        Run, "step_all", lambda self, k: held.append(lock._key(out) in lock._held) or original(self, k)
    )
    code, stdout, err = run_cli(capsys, "sweep", "--resume", str(out), "--quiet")
    assert code == 0, err
    assert [ef.load(out / f"lr-{lr}").resumed_from for lr in ("0.1", "0.15", "0.19")] == [[], [8], []]
    assert held and all(held)  # the sweep directory is held while its runs compute
    assert (out / "sweep.png").is_file() and "| 0.19 |" in stdout
    full, split = (json.loads((d / "sweep.json").read_text())["rows"] for d in (tmp_path / "full", out))
    for a, b in zip(full, split, strict=True):
        assert {k: v for k, v in a.items() if k != "wall_time_s"} == {
            k: v for k, v in b.items() if k != "wall_time_s"
        }
    for lr in ("0.1", "0.15", "0.19"):
        assert_same_records(ef.load(tmp_path / "full" / f"lr-{lr}"), ef.load(out / f"lr-{lr}"))
    code, _, err = run_cli(capsys, "sweep", "--resume", str(out), "--steps", "5")
    assert code == 2 and "remove --steps" in err
