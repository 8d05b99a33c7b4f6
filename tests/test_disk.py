"""A run on a real full file system (a small tmpfs) and in a read-only one: one line naming the path
and the cause, the records so far readable, and ``--resume`` completing bit for bit once there is
space. Needs permission to mount a tmpfs (root in a container usually has it); skipped otherwise."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

import edgeflow as ef
from conftest import run_cli
from test_resume import assert_same_records

# d = 1482: a chunk of stored parameters is 44 rows (0.5 MiB) per flow, so the 1.8 MiB file system
# fills when the second pair of chunks opens (at step 44), after the checkpoint of step 40.
RUN = ["run", "--problem", "digits-mlp", "--param", "n=60", "--param", "width=16", "--steps", "48"]
RUN += ["--flows", "gd,midpoint", "--save-params", "--flush-every", "1", "--checkpoint-every", "5"]
RUN += ["--quiet", "--no-plots"]


def mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def small_fs(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("fs") / uuid.uuid4().hex[:8]
    where.mkdir()
    made = mount("-t", "tmpfs", "-o", "size=1800k", "tmpfs", str(where))
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip() or made.returncode})")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_full_disk_keeps_the_records_and_resumes_bit_for_bit(capsys, tmp_path, small_fs):
    code, _, err = run_cli(capsys, *RUN, "--out", str(tmp_path / "full"))
    assert code == 0, err
    out = small_fs / "run"
    code, _, err = run_cli(capsys, *RUN, "--out", str(out))
    assert code == 1, err
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"cannot write {out / 'results.h5'}: no space left on the device" in lines[0]
    assert "the checkpoint of step 40 are kept" in lines[0] and f"edgeflow run --resume {out}" in lines[0]
    left = ef.load(out)
    assert not left.complete and len(left["gd"]["step"]) >= 41

    # read-only now: resume, plot and a new run say so in one line, and change nothing; reading works
    assert mount("-o", "remount,ro", str(small_fs)).returncode == 0
    for argv, needle in (
        (["run", "--resume", str(out)], f"cannot write {out}: Read-only file system"),
        (["plot", str(out)], f"cannot write {out / 'figures'}: Read-only file system"),
        ([*RUN, "--out", str(small_fs / "new")], f"{small_fs} is not writable"),
    ):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert len(ef.load(out)["gd"]["step"]) == len(left["gd"]["step"])

    assert mount("-o", "remount,rw,size=20m", str(small_fs)).returncode == 0  # space freed
    code, _, err = run_cli(capsys, "run", "--resume", str(out), "--quiet")
    assert code == 0, err
    resumed = ef.load(out)
    assert resumed.complete and resumed.resumed_from == [40]
    assert_same_records(ef.load(tmp_path / "full"), resumed)
