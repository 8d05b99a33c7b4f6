"""Learning-rate sweeps against closed forms on the quadratic ½wᵀAw (λ from 10 down to 0.1, w0 = 1):
GD's sharpness is 10 everywhere, so 2/η is never crossed for η < 0.2 and GD diverges for η > 0.2."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgeflow as ef
from conftest import run_cli
from edgeflow.sweep import BLOWUP
from edgeflow.zoo import toys

LAMBDAS = np.diag(toys.quadratic_matrix().numpy())  # the quadratic's eigenvalues; w0 = ones


def gd_loss(lr: float, k: int) -> float:
    """GD's loss after k steps: each coordinate shrinks (or grows) by 1 − ηλ per step."""
    return float(0.5 * np.sum(LAMBDAS * (1 - lr * LAMBDAS) ** (2 * k)))


def first_blowup(lr: float, steps: int) -> int | None:
    return next((k for k in range(steps + 1) if gd_loss(lr, k) > BLOWUP * gd_loss(lr, 0)), None)


def strict_json(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.filterwarnings("error")
def test_sweep_on_the_quadratic_matches_the_closed_form(capsys, tmp_path):
    out = tmp_path / "sweep"
    argv = ["sweep", "--problem", "quadratic", "--lrs", "0.25,0.1,0.15", "--steps", "40", "--quiet"]
    code, stdout, err = run_cli(capsys, *argv, "--out", str(out))
    assert code == 0, err
    assert (out / "sweep.png").stat().st_size > 20_000
    summary = strict_json((out / "sweep.json").read_text())
    rows = summary["rows"]
    assert [r["lr"] for r in rows] == [0.1, 0.15, 0.25]  # sorted ascending
    k_div = first_blowup(0.25, 40)
    assert k_div == 13  # 5·1.5^(2k) passes 10⁴ × the initial loss 12.4 at k = 13
    for row in rows:
        lr = row["lr"]
        assert row["threshold"] == pytest.approx(2 / lr)
        assert row["initial_sharpness"] == pytest.approx(10, rel=1e-6)
        assert row["run_dir"] == f"lr-{lr}" and ef.load(out / row["run_dir"]).complete
        assert row["wall_time_s"] > 0
    for row in rows[:2]:  # ηλ_max < 2: sharpness 10 stays below 2/η, GD converges
        assert row["cross_step"] is None and row["peak_step"] is None and row["diverged_at"] is None
        assert row["last_loss"] == pytest.approx(gd_loss(row["lr"], 40), rel=1e-9)
        assert row["last_loss_step"] == 40 and row["last_sharpness_step"] == 40
        assert row["late_sharpness_ratio"] == pytest.approx(10 * row["lr"] / 2, rel=1e-6)
    blown = rows[2]  # ηλ_max = 2.5: above 2/η from the start, GD's error grows 1.5× per step
    assert blown["cross_step"] == 0 and blown["diverged_at"] == k_div
    assert blown["last_sharpness_step"] == k_div - 1  # nothing measured after the blow-up counts
    assert blown["late_sharpness_ratio"] is None

    table = (out / "sweep.md").read_text()
    assert table in stdout and f"results in {out}/" in stdout
    assert "| 0.25 | 8 | 10 | 0 |" in table and f"| {k_div} |" in table
    assert "η = 0.1: 40 steps, sharpness stayed below 2/η = 20" in err
    assert f"η = 0.25: diverged at step {k_div}" in err

    # an earlier sweep is kept unless --force replaces it (runs of η no longer swept go with it)
    code, _, err = run_cli(capsys, *argv, "--out", str(out))
    assert code == 2 and "--force" in err
    again = ["sweep", "--problem", "quadratic", "--lrs", "0.1", "--steps", "5", "--quiet", "--force"]
    code, _, err = run_cli(capsys, *again, "--out", str(out))
    assert code == 0, err
    names = ["lr-0.1", "sweep-state.json", "sweep.json", "sweep.md", "sweep.png"]
    assert sorted(p.name for p in out.iterdir()) == names


BAD_INPUTS = [
    (["--lrs", "0"], ["--lrs", "'0'"]),
    (["--lrs", "a"], ["--lrs", "'a'"]),
    (["--lrs", ""], ["--lrs", "no learning rate"]),
    (["--lrs", "0.1,,0.2"], ["--lrs", "''"]),
    (["--lrs", "0.1,-0.2"], ["--lrs", "'-0.2'"]),
    (["--lrs", "0.1,inf"], ["--lrs", "'inf'"]),
    (["--lrs", "0.1,0.10"], ["--lrs", "0.1", "more than once"]),
    (["--lrs", "0.1", "--problem", "nope"], ["'nope'", "quadratic"]),
    (["--lrs", "0.1", "--param", "width=8"], ["'width'", "lmax"]),
    (["--lrs", "0.1", "--param", "d=x"], ["'d'", "integer"]),
    (["--lrs", "0.1", "--param", "d"], ["KEY=VALUE"]),
    (["--lrs", "0.1", "--steps", "0"], ["--steps", "'0'"]),
    (["--lrs", "0.1", "--sharpness-every", "0"], ["--sharpness-every", "'0'"]),
    (["--lrs", "0.1", "--seed", "x"], ["--seed", "'x'"]),
    (["--lrs", "0.1", "--dtype", "float16"], ["'float16'", "float64"]),
    ([], ["--lrs"]),
]


@pytest.mark.parametrize(
    ("argv", "needles"), BAD_INPUTS, ids=[" ".join(a) or "no --lrs" for a, _ in BAD_INPUTS]
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, argv, needles):
    problem = [] if "--problem" in argv else ["--problem", "quadratic"]
    code, _, err = run_cli(capsys, "sweep", *problem, *argv, "--out", str(tmp_path / "sweep"), "--quiet")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeflow: error:"), err
    for needle in needles:
        assert needle in lines[0]
    assert not (tmp_path / "sweep").exists()


def test_out_must_be_a_free_directory(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("x")
    for out, needle in (("file", "is a file"), ("theirs", "not part of an edgeflow sweep")):
        argv = ["sweep", "--problem", "quadratic", "--lrs", "0.1", "--out", str(tmp_path / out)]
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.filterwarnings("error")
def test_api_returns_rows_and_results(tmp_path):
    res = ef.sweep("quadratic", [0.15, 0.1], 20)
    assert [row["lr"] for row in res.rows] == [0.1, 0.15] and res.out is None
    assert set(res.results) == {0.1, 0.15}
    gd = res.results[0.1]["gd"]
    assert gd["step"].tolist() == list(range(21))
    assert res.rows[0]["last_loss"] == pytest.approx(gd_loss(0.1, 20), rel=1e-9)
    assert "| 0.15 |" in res.markdown()

    # a Problem built by hand needs its steps; a sweep in which every η diverges still gets a figure
    prob = ef.make_problem("quadratic")
    with pytest.raises(ef.ConfigError, match="steps"):
        ef.sweep(prob, [0.1])
    res = ef.sweep(prob, "0.3,0.5", 30, out=tmp_path / "all-diverge")
    assert [row["diverged_at"] for row in res.rows] == [first_blowup(0.3, 30), first_blowup(0.5, 30)]
    assert (tmp_path / "all-diverge" / "sweep.png").stat().st_size > 20_000
