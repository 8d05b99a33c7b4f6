"""Learning-rate sweeps against closed forms on the quadratic ½wᵀAw (λ from 10 down to 0.1, w0 = 1):
GD's sharpness is 10 everywhere, so 2/η is never crossed for η < 0.2 and GD diverges for η > 0.2."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import tomllib

import edgeflow as ef
from conftest import run_cli
from edgeflow.runner import Run
from edgeflow.sweep import BLOWUP, STATE, read_state
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
    (["--lrs", "0.1", "--optimizer", "nope"], ["unknown optimizer 'nope'", "gd", "momentum", "adam"]),
    (["--lrs", "0.1", "--optimizer", "adam", "--opt", "beta=0.5"], ["'beta'", "beta1", "beta2", "eps"]),
    (["--lrs", "0.1", "--optimizer", "adam", "--opt", "beta1=2"], ["adam option beta1", "(0, 1)"]),
    (["--lrs", "0.1", "--opt", "beta2"], ["--opt", "KEY=VALUE"]),
    (["--lrs", "0.1", "--warm-start", "x"], ["--warm-start", "'x'"]),
    (["--lrs", "0.1", "--warm-start", "-1"], ["warm_start", "-1"]),
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


@pytest.mark.filterwarnings("error")
def test_adam_sweep_holds_the_preconditioned_sharpness_against_38_over_eta(capsys, tmp_path):
    """Cohen et al. 2022's figure: λ₁(P⁻¹H)/η (the run's effective sharpness over η) against 38/η."""
    out = tmp_path / "sweep"
    argv = ["sweep", "--problem", "quadratic", "--lrs", "0.02,0.005", "--steps", "25", "--quiet"]
    argv += ["--optimizer", "adam", "--opt", "beta2=0.99", "--warm-start", "3", "--out", str(out)]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert (out / "sweep.png").stat().st_size > 20_000
    summary = strict_json((out / "sweep.json").read_text())
    assert summary["optimizer"] == "adam" and summary["warm_start"] == 3
    assert summary["optimizer_options"] == {"beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "bias_correction": True}
    assert summary["optimizer_label"] == "Adam (β₁ = 0.9)" and summary["threshold_label"] == "38/η"
    for row in summary["rows"]:
        lr = row["lr"]
        res = ef.load(out / row["run_dir"])
        assert (res.optimizer, res.config["warm_start"], res.threshold) == ("adam", 3, pytest.approx(38))
        config = tomllib.loads((out / row["run_dir"] / "config.toml").read_text())
        assert (config["optimizer"], config["optimizer_options"]["beta2"]) == ("adam", 0.99)
        assert config["warm_start"] == 3
        assert row["threshold"] == pytest.approx(38 / lr)
        s = res["midpoint"]["effective_sharpness"] / lr
        measured = s[np.isfinite(s)]
        assert row["initial_sharpness"] == pytest.approx(measured[0], rel=1e-12)
        assert row["last_sharpness"] == pytest.approx(measured[-1], rel=1e-12)
        late = s[(res["midpoint"]["step"] >= 0.75 * 25) & np.isfinite(s)]
        assert row["late_sharpness_ratio"] == pytest.approx(np.median(late) / (38 / lr), rel=1e-12)
        assert f"η = {lr:g}: 25 steps, " in err and "38/η = " in err
    table = (out / "sweep.md").read_text()
    assert table in stdout
    assert "adam (beta1=0.9, beta2=0.99, eps=1e-08, bias_correction=True)" in table
    assert "| η | 38/η | initial S | crosses 38/η |" in table and "late S / (38/η)" in table
    assert "each η after 3 warm-start steps" in table and "| 1900 |" in table  # 38/0.02


@pytest.mark.filterwarnings("error")
def test_momentum_sweep_on_the_quadratic_matches_the_closed_form(capsys, tmp_path):
    """Heavy-ball's P⁻¹ is η: S is the sharpness, 10 everywhere, against (2 + 2β)/η = 3/η at β = 0.5;
    η = 0.1 stays below it and converges, η = 0.4 (ηλ = 4 > 3) starts above it and diverges."""
    out = tmp_path / "sweep"
    argv = ["sweep", "--problem", "quadratic", "--lrs", "0.1,0.4", "--steps", "30", "--quiet"]
    code, _, err = run_cli(capsys, *argv, "--optimizer", "momentum", "--opt", "beta=0.5", "--out", str(out))
    assert code == 0, err
    summary = strict_json((out / "sweep.json").read_text())
    assert summary["optimizer_label"] == "heavy-ball momentum (β = 0.5)"
    assert summary["threshold_label"] == "3/η"
    below, above = summary["rows"]
    for row in summary["rows"]:
        assert row["threshold"] == pytest.approx(3 / row["lr"])
        assert row["initial_sharpness"] == pytest.approx(10, rel=1e-6)
    assert below["cross_step"] is None and below["diverged_at"] is None
    assert below["late_sharpness_ratio"] == pytest.approx(10 * 0.1 / 3, rel=1e-6)
    assert above["cross_step"] == 0 and above["diverged_at"] is not None
    assert "η = 0.1: 30 steps, sharpness stayed below 3/η = 30" in err
    assert "| η | 3/η |" in (out / "sweep.md").read_text()
    assert (out / "sweep.png").stat().st_size > 20_000


def test_resumed_sweep_keeps_its_optimizer(capsys, tmp_path, monkeypatch):
    argv = ["sweep", "--problem", "quadratic", "--lrs", "0.01,0.02", "--steps", "10", "--quiet"]
    argv += ["--optimizer", "adam", "--opt", "beta1=0.8", "--warm-start", "2"]
    code, _, err = run_cli(capsys, *argv, "--out", str(tmp_path / "full"))
    assert code == 0, err
    out = tmp_path / "split"
    original = Run.step_all

    def step_all(self, k):  # Ctrl-C in the first η: the second starts afresh from the saved settings
        if self.lr == 0.01 and k == 4:
            os.kill(os.getpid(), signal.SIGINT)
        original(self, k)

    monkeypatch.setattr(Run, "step_all", step_all)
    code, _, err = run_cli(capsys, *argv, "--out", str(out))
    assert code == 130 and not (out / "lr-0.02").exists(), err
    monkeypatch.setattr(Run, "step_all", original)
    code, _, err = run_cli(capsys, "sweep", "--resume", str(out), "--optimizer", "gd")
    assert code == 2 and "remove --optimizer" in err
    code, _, err = run_cli(capsys, "sweep", "--resume", str(out), "--quiet")
    assert code == 0, err
    full, split = (strict_json((d / "sweep.json").read_text()) for d in (tmp_path / "full", out))
    assert split["optimizer"] == "adam" and split["optimizer_options"]["beta1"] == 0.8
    assert split["warm_start"] == 2 and split["threshold_label"] == "18/η"  # (2 + 1.6)/0.2
    for a, b in zip(full["rows"], split["rows"], strict=True):
        assert {k: v for k, v in a.items() if k != "wall_time_s"} == {
            k: v for k, v in b.items() if k != "wall_time_s"
        }
    assert [ef.load(out / f"lr-{lr}").optimizer for lr in ("0.01", "0.02")] == ["adam", "adam"]


def test_api_takes_the_optimizer(tmp_path):
    res = ef.sweep("quadratic", [0.1], 5, optimizer="momentum", optimizer_options={"beta": 0.5})
    assert res.optimizer == "momentum" and res.results[0.1].optimizer == "momentum"
    assert res.to_dict()["threshold_label"] == "3/η" and res.rows[0]["threshold"] == pytest.approx(30)
    with pytest.raises(ef.ConfigError, match="valid options: beta"):
        ef.sweep("quadratic", [0.1], 5, optimizer="momentum", optimizer_options={"beta1": 0.5})
    with pytest.raises(ef.ConfigError, match="warm_start"):
        ef.sweep("quadratic", [0.1], 5, warm_start=True)
    # a sweep from before the optimizer option ran GD
    (tmp_path / STATE).write_text(json.dumps({"settings": {"lrs": [0.1]}, "walls": {}}))
    assert read_state(tmp_path)["settings"] | {"lrs": 0} == {
        "lrs": 0,
        "optimizer": "gd",
        "optimizer_options": {},
        "warm_start": 0,
    }
