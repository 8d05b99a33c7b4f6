"""Data-parallel runs (torch.distributed, gloo on the CPU, launched by torchrun) equal one process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import edgeflow as ef
from edgeflow import distributed as parallel
from test_resume import assert_same_records

SCRIPTS = Path(__file__).parent / "scripts"
# lr = 1 puts the digits MLP above 2/η from the start: the central flow holds two eigenvalues at
# 2/η and solves its SDCP (on rank 0, broadcast); 61 examples split 31 + 30.
RUN = ["run", "--problem", "digits-mlp", "--param", "n=61", "--param", "width=16", "--lr", "1"]
RUN += ["--steps", "16", "--flows", "gd,midpoint,edge,central,modified", "--option", "central.substeps=2"]
RUN += ["--save-params", "--no-plots", "--quiet"]
TOL = 1e-10


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "EDGEFLOW_DIST_TIMEOUT": "60"}


def torchrun(*args: str, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env())


def single(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env())


def assert_close(a: ef.Result, b: ef.Result) -> None:
    """Equal to TOL relative, measured on each quantity's own scale: a loss or eigenvalue against
    itself, a position against its norm, and an oscillation or distance (at rounding level before
    the edge of stability) against the size of the parameters."""
    scale = float(np.linalg.norm(a["gd"]["params"][0]))
    for flow in a:
        assert sorted(a[flow]) == sorted(b[flow])
        for field, x in a[flow].items():
            y = b[flow][field]
            assert x.shape == y.shape, (flow, field)
            assert np.array_equal(np.isfinite(x), np.isfinite(y)), (flow, field)
            ok = np.isfinite(x)
            if field == "params":
                err = np.linalg.norm(x - y, axis=1) / np.linalg.norm(x, axis=1)
                assert err.max() <= TOL, (flow, field, err.max())
                continue
            floor = scale if field in ("oscillation", "magnitude") else 0.0
            bound = TOL * np.maximum(np.abs(x[ok]), floor)
            assert (np.abs(x[ok] - y[ok]) <= bound).all(), (flow, field, np.abs(x[ok] - y[ok]).max())
    for key, x in a.distances.items():
        assert np.allclose(x, b.distances[key], rtol=TOL, atol=TOL * scale, equal_nan=True), key


@pytest.mark.slow
def test_cli_under_torchrun_equals_one_process(tmp_path):
    one = single("-m", "edgeflow", *RUN, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = torchrun("-m", "edgeflow", *RUN, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    a, b = ef.load(tmp_path / "one"), ef.load(tmp_path / "two")
    assert a.config["world_size"] == 1 and b.config["world_size"] == 2
    assert np.nanmax(b["central"]["sigma_sq"]) > 0  # the SDCP ran
    assert_close(a, b)
    assert two.stdout.count("results in") == 1  # rank 0 alone prints the summary
    assert "2 processes" in two.stderr


@pytest.mark.slow
def test_user_script_under_torchrun_equals_one_process(tmp_path):
    script = str(SCRIPTS / "user_torchrun.py")
    one = single(script, str(tmp_path / "one.h5"))
    assert one.returncode == 0, one.stderr
    two = torchrun(script, str(tmp_path / "two.h5"), "--distributed")
    assert two.returncode == 0, two.stderr
    a, b = ef.load(tmp_path / "one.h5"), ef.load(tmp_path / "two.h5")
    assert a.config["shard"] == [0, 37] and b.config["shard"] == [0, 19]  # 37 = 19 + 18
    assert_close(a, b)


@pytest.mark.slow
def test_interrupt_and_resume_under_torchrun_are_bit_identical(tmp_path):
    """SIGINT reaching one rank stops every rank at the same step; the resumed 2-process run equals
    an uninterrupted 2-process run bit for bit."""
    script = str(SCRIPTS / "interrupt_torchrun.py")
    full = torchrun(script, "full", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    stop = torchrun(script, "stop", str(tmp_path / "split"))
    assert stop.returncode == 0, stop.stderr
    assert sorted(stop.stdout.split("\n"))[1:] == ["rank 0 stopped at 8", "rank 1 stopped at 8"]
    again = torchrun(script, "resume", str(tmp_path / "split"))
    assert again.returncode == 0, again.stderr
    resumed = ef.load(tmp_path / "split")
    assert resumed.resumed_from == [8] and resumed.complete
    assert_same_records(ef.load(tmp_path / "full"), resumed)


@pytest.mark.slow
def test_a_hanging_rank_stops_the_others_with_a_clear_message(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(
        "import os, time, torch\n"
        "from edgeflow import distributed as parallel\n"
        "parallel.init_from_env(None)\n"
        "if parallel.rank() == 1:\n"
        "    time.sleep(120)\n"
        "try:\n"
        "    parallel.all_reduce(torch.ones(3))\n"
        "except parallel.DistributedError as err:\n"
        "    print(err, flush=True)\n"
        "    raise SystemExit(1)\n"
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True,
        text=True,
        timeout=110,
        env={**env(), "EDGEFLOW_DIST_TIMEOUT": "5"},
    )
    assert proc.returncode != 0
    assert "another rank died or hangs" in proc.stdout + proc.stderr
    assert time.monotonic() - start < 100


@pytest.mark.parametrize(("n", "ranks"), [(8, 3), (61, 2), (5, 5), (100, 7)])
def test_shards_cover_every_example_once(monkeypatch, n, ranks):
    monkeypatch.setattr(parallel, "world_size", lambda: ranks)
    pieces = []
    for r in range(ranks):
        monkeypatch.setattr(parallel, "rank", lambda r=r: r)
        pieces.append(parallel.shard(n))
    covered = [i for piece in pieces for i in range(n)[piece]]
    assert covered == list(range(n))
    sizes = [piece.stop - piece.start for piece in pieces]
    assert max(sizes) - min(sizes) <= 1
    monkeypatch.setattr(parallel, "world_size", lambda: n + 1)
    with pytest.raises(ef.ConfigError, match="cannot be split"):
        parallel.shard(n)


def test_without_a_process_group_everything_is_one_process():
    assert not parallel.active() and parallel.rank() == 0 and parallel.world_size() == 1
    assert parallel.shard(7) == slice(0, 7)
    assert parallel.all_reduce(torch.ones(2))[0].tolist() == [1.0, 1.0]
    assert parallel.on_main(lambda: 3) == 3
    with pytest.raises(ef.ConfigError, match="process group"):
        ef.Problem.from_module(torch.nn.Linear(2, 1), (torch.ones(3, 2), torch.ones(3, 1)), distributed=True)
