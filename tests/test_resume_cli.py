"""`edgeflow run` killed or interrupted in a real subprocess, then `--resume`d: bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgeflow as ef
from edgeflow.storage import ResultsFileError
from test_resume import assert_same_records

pytestmark = pytest.mark.slow

STEPS = 60  # long enough to be stopped mid-run after a few checkpoints (every 7 steps)
RUN = ["run", "--problem", "digits-mlp", "--param", "n=60", "--param", "width=16", "--steps", str(STEPS)]
RUN += ["--flows", "gd,midpoint,edge", "--sharpness-every", "5", "--save-params"]
RUN += ["--checkpoint-every", "7", "--flush-every", "1", "--no-plots"]


def edgeflow(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edgeflow", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # a tiny problem: threads would only contend
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for_records(proc: subprocess.Popen, out: Path, n: int, timeout: float = 120) -> int:
    """Poll the live results file (as a user watching the run would) until GD has ``n`` records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            have = len(ef.load(out, params=False)["gd"]["step"])
        except (ResultsFileError, KeyError):
            have = 0
        if have >= n:
            return have
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach {n} records in {timeout} s")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> ef.Result:
    out = tmp_path_factory.mktemp("full") / "run"
    code, _, err = finish(edgeflow(*RUN, "--out", str(out)))
    assert code == 0, err
    return ef.load(out)


def test_sigkill_then_resume_is_bit_identical(tmp_path, uninterrupted):
    out = tmp_path / "killed"
    proc = edgeflow(*RUN, "--out", str(out))
    wait_for_records(proc, out, 30)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = ef.load(out)  # the file a kill leaves opens and holds every flushed record
    assert not left.complete and len(left["gd"]["step"]) >= 30
    code, _, err = finish(edgeflow("run", "--resume", str(out), "--quiet"))
    assert code == 0, err
    resumed = ef.load(out)
    assert resumed.complete
    assert len(resumed.resumed_from) == 1 and resumed.resumed_from[0] % 7 == 0
    assert_same_records(uninterrupted, resumed)
    code, _, err = finish(edgeflow("run", "--resume", str(out)))
    assert code == 2 and "complete" in err


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_saves_everything_and_resumes(tmp_path, uninterrupted, signum, code):
    out = tmp_path / "stopped"
    proc = edgeflow(*RUN, "--out", str(out))
    wait_for_records(proc, out, 15)
    proc.send_signal(signum)
    got, stdout, err = finish(proc)
    assert got == code, err
    assert "Traceback" not in err
    assert "step/s" not in err and "s/step" not in err  # no progress bar when stderr is not a terminal
    resume_lines = [line for line in err.splitlines() if f"edgeflow run --resume {out}" in line]
    assert len(resume_lines) == 1, err
    partial = ef.load(out)
    assert not partial.complete
    assert "partial run" in (out / "summary.md").read_text()
    assert "partial run" in stdout
    got, _, err = finish(edgeflow("run", "--resume", str(out), "--quiet"))
    assert got == 0, err
    assert_same_records(uninterrupted, ef.load(out))
