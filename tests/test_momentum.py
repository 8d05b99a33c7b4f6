"""The momentum optimizers (heavy-ball, Nesterov, Adam, AdamW): the discrete iterates against torch.optim,
their one-step maps and thresholds against the closed forms, their stable flows against exact
solutions, the models that refuse them, and a run of them from the CLI and through a resume."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import edgeflow as ef
from conftest import build_mlp, run_cli
from edgeflow.optimizers import make_optimizer
from edgeflow.optimizers.adam import Adam, AdamW
from edgeflow.optimizers.base import map_roots
from edgeflow.processes import make_process

TORCH = {
    "momentum": (0.05, {"beta": 0.9}, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    "nesterov": (0.05, {"beta": 0.8}, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True)),
    "adam": (
        0.005,
        {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
        lambda ps: torch.optim.Adam(ps, lr=0.005, betas=(0.8, 0.99), eps=1e-6),
    ),
    "adamw": (
        0.005,
        {"beta1": 0.8, "weight_decay": 0.5},
        lambda ps: torch.optim.AdamW(ps, lr=0.005, betas=(0.8, 0.999), weight_decay=0.5),
    ),
}


@pytest.mark.parametrize("name", sorted(TORCH))
def test_discrete_iterates_equal_torch_optim(tiny_data, name):
    """A 39-parameter MLP on 20 examples, MSE, float64: flow gd's parameters after every one of 500
    steps equal torch.optim's on the nn.Module to 1e-12 relative (they differ by rounding only: at
    η where the run reaches its threshold, the instability amplifies that rounding instead)."""
    lr, options, make_torch = TORCH[name]
    model = build_mlp(width=4, depth=1)
    prob = ef.Problem.from_module(model, tiny_data, loss="mse", dtype="float64")
    gd = make_process("gd", prob, lr, optimizer=make_optimizer(name, lr, options))
    gd.init(prob.w0, 0)
    ours = [gd.position.numpy()]
    for _ in range(500):
        gd.step()
        ours.append(gd.position.numpy())
    model = model.double()
    opt = make_torch(model.parameters())
    X, y = tiny_data
    onehot = torch.nn.functional.one_hot(y, 3).double()
    theirs = [torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()]
    for _ in range(500):
        opt.zero_grad()
        (0.5 * ((model(X) - onehot) ** 2).sum(1).mean()).backward()
        opt.step()
        theirs.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy())
    ours, theirs = np.array(ours), np.array(theirs)
    assert ours.shape == theirs.shape and np.abs(theirs[-1] - theirs[0]).max() > 0.05  # it moved
    error = np.abs(ours - theirs).max(axis=1) / np.abs(theirs).max(axis=1)
    assert error.max() <= 1e-12, (int(error.argmax()), float(error.max()))


@dataclasses.dataclass(frozen=True)
class FrozenAdam(Adam):
    """Adam whose ν and step counter never change: a fixed diagonal P, m still averaging."""

    def update(self, state, g):
        m = state["m"]
        return {**state, "m": m + (1 - self.beta1) * (g - m)}


@dataclasses.dataclass(frozen=True)
class FrozenAdamW(AdamW):
    update = FrozenAdam.update


def _frozen_adam(name: str, effective_lr: float) -> tuple[FrozenAdam, dict]:
    """Frozen Adam (AdamW with ηλ = 0.1) at η = 1 (ε = 0, no bias correction) with P⁻¹ =
    ``effective_lr``."""
    kw = dict(beta1=0.9, eps=0.0, bias_correction=False)
    opt = FrozenAdam(1.0, **kw) if name == "adam" else FrozenAdamW(1.0, weight_decay=0.1, **kw)
    one = torch.ones(1, dtype=torch.float64)
    return opt, {"t": 1.0, "nu": one / effective_lr**2, "m": 0 * one}


def _setting(name: str, a: float) -> tuple[ef.optimizers.Optimizer, dict, float, str]:
    """The optimizer, its state and the curvature h of ½hw² at which λ₁(P⁻¹H) = ``a``, and the
    name of its momentum entry."""
    if name in ("adam", "adamw"):
        opt, state = _frozen_adam(name, 0.25)
        return opt, state, 4 * a, "m"
    opt = make_optimizer(name, 0.5, {"beta": 0.7})
    return opt, opt.init(torch.zeros(1, dtype=torch.float64)), 2 * a, "b"


def _step_map(name: str, a: float) -> np.ndarray:
    """The one-step map of (w, momentum) along curvature ``a`` of P⁻¹H, read off the optimizer's
    own update and step applied to the unit vectors (it is linear)."""
    columns = []
    for w, m in ((1.0, 0.0), (0.0, 1.0)):
        opt, state, h, key = _setting(name, a)
        state = {**state, key: torch.tensor([m], dtype=torch.float64)}
        w = torch.tensor([w], dtype=torch.float64)
        state = opt.update(state, h * w)
        columns.append([float(opt.step(w, h * w, state)[0]), float(state[key][0])])
    return np.array(columns).T


@pytest.mark.parametrize("name", ["momentum", "nesterov", "adam", "adamw"])
def test_step_map_roots_threshold_and_period2_factor(name):
    """The eigenvalues of the optimizer's own one-step map are the roots of z² − Tz + D; at the
    threshold one of them is −1 and ``period2_factor`` returns it; either side of it, on the
    discrete run with P frozen, the oscillation decays at |period2_factor| per step (below) and
    grows at it (above)."""
    opt = _setting(name, 1.0)[0]
    for a in (0.3, 0.9 * opt.threshold, opt.threshold, 1.3 * opt.threshold):
        eig = np.linalg.eigvals(_step_map(name, a))
        trace, det = eig.sum().real, np.prod(eig).real
        roots = map_roots(trace, det)
        np.testing.assert_allclose(sorted(eig, key=lambda z: (z.real, z.imag)), roots, atol=1e-12)
        nearest = min(abs(z + 1) for z in eig)
        if a == opt.threshold:
            assert nearest < 1e-12 and opt.period2_factor(a) == pytest.approx(-1, abs=1e-12)
        low = roots[0]  # the smaller real part
        expected = low.real if low.imag == 0 else math.copysign(abs(low), low.real)
        assert opt.period2_factor(a) == pytest.approx(expected, rel=1e-12)
    for ratio in (0.98, 1.02):
        a = ratio * opt.threshold
        _, state, h, _ = _setting(name, a)
        prob = ef.Problem.from_function(lambda w, h=h: 0.5 * h * w[0] ** 2, [1.0])
        gd = make_process("gd", prob, opt.lr, optimizer=opt, start_state=state)
        gd.init(prob.w0, 0)
        assert gd.observe(True)["effective_sharpness"] == pytest.approx(a, rel=1e-9)
        path = [float(gd.w[0])]
        for _ in range(300):
            gd.step()
            path.append(float(gd.w[0]))
        # the largest |w| over windows as long as a complex pair's beat (|w| falls within them
        # too, hence the looser rate then), 200 steps apart
        growth = max(map(abs, path[-15:])) / max(map(abs, path[-215:-200]))
        assert (growth > 1) == (ratio > 1)
        real = map_roots(*opt.map_coefficients(a))[0].imag == 0
        assert growth ** (1 / 200) == pytest.approx(abs(opt.period2_factor(a)), rel=1e-3 if real else 2e-2)


@pytest.mark.parametrize("name", ["nesterov", "adamw"])
def test_midpoint_runs_the_optimizer_one_step_ahead(name):
    """The midpoint process's iterates are the discrete run's, bit for bit, momentum and all, and its
    position is ¼(w_{k−1} + 2w_k + w_{k+1})."""
    prob = ef.make_problem("quadratic", d=5)
    opt = make_optimizer(name, 0.05)
    gd = make_process("gd", prob, 0.05, optimizer=opt)
    mid = make_process("midpoint", prob, 0.05, optimizer=opt)
    gd.init(prob.w0, 0)
    mid.init(prob.w0, 0)
    path = [gd.w]
    for _ in range(12):
        gd.step()
        mid.step()
        path.append(gd.w)
        assert torch.equal(mid.w, gd.w)
    gd.step()
    torch.testing.assert_close(mid.position, 0.25 * (path[-2] + 2 * path[-1] + gd.w), rtol=0, atol=1e-15)


def test_thresholds_match_the_closed_forms():
    for beta in (0.5, 0.9, 0.99):
        assert make_optimizer("momentum", 1.0, {"beta": beta}).threshold == pytest.approx(2 + 2 * beta)
        nesterov = make_optimizer("nesterov", 1.0, {"beta": beta})
        assert nesterov.threshold == pytest.approx((2 + 2 * beta) / (1 + 2 * beta))
        adam = make_optimizer("adam", 1.0, {"beta1": beta})
        assert adam.threshold == pytest.approx((2 + 2 * beta) / (1 - beta))
        adamw = make_optimizer("adamw", 0.5, {"beta1": beta, "weight_decay": 0.2})
        assert adamw.threshold == pytest.approx((1 + beta) * (2 - 0.1) / (1 - beta))
        for opt in (make_optimizer("momentum", 1.0, {"beta": beta}), nesterov, adam, adamw):
            assert opt.period2_factor(opt.threshold) == pytest.approx(-1, abs=1e-12)
            assert opt.period2_factor(1.001 * opt.threshold) < -1 < opt.period2_factor(0.999 * opt.threshold)


@pytest.mark.parametrize("name", ["momentum", "nesterov"])
def test_momentum_stable_flow_is_the_linear_ode_on_a_quadratic(name):
    """L = ½hw²: dw/dt = −η·d, db/dt = (hw − (1 − β)b)/β with d = b (heavy-ball) or hw + βb
    (Nesterov), linear: the flow against its matrix exponential from (w0, b0 = hw0)."""
    h, lr, beta, steps = 3.0, 0.2, 0.8, 20
    prob = ef.Problem.from_function(lambda w: 0.5 * h * w[0] ** 2, [1.0])
    res = ef.compare(
        prob,
        lr,
        steps,
        ["gradient"],
        optimizer=name,
        optimizer_options={"beta": beta},
        options={"gradient": {"substep_rate": 0.05}},
        save_params=True,
    )
    direction = [0.0, 1.0] if name == "momentum" else [h, beta]
    A = np.array([[-lr * direction[0], -lr * direction[1]], [h / beta, -(1 - beta) / beta]])
    for k in (5, steps):
        exact = expm(k * A) @ np.array([1.0, h])
        assert res["gradient"]["params"][k][0] == pytest.approx(exact[0], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("decay", [0.0, 0.5])
def test_adam_stable_flow_follows_its_state_odes_on_a_quadratic(decay):
    """L = ½hw², bias correction on: dm/dt = ((1 − β₁)/β₁)(hw − m), dν/dt = ((1 − β₂)/β₂)(h²w² − ν),
    dw/dt = −η m̂/(√ν̂ + ε) − ηλw (AdamW's λ = ``decay``), t advancing 1 per step from 1: against a
    fine integration."""
    h, lr, b1, b2, eps = 2.0, 0.05, 0.8, 0.9, 1e-3
    name, extra = ("adamw", {"weight_decay": decay}) if decay else ("adam", {})
    prob = ef.Problem.from_function(lambda w: 0.5 * h * w[0] ** 2, [1.0])
    res = ef.compare(
        prob,
        lr,
        15,
        ["gradient"],
        optimizer=name,
        optimizer_options={"beta1": b1, "beta2": b2, "eps": eps, **extra},
        options={"gradient": {"substep_rate": 0.05}},
        save_params=True,
    )

    def field(t, y):
        w, m, nu = y
        m_hat, nu_hat = m / (1 - b1 ** (t + 1)), nu / (1 - b2 ** (t + 1))
        g = h * w
        dw = -lr * m_hat / (math.sqrt(nu_hat) + eps) - lr * decay * w
        return [dw, (1 - b1) / b1 * (g - m), (1 - b2) / b2 * (g * g - nu)]

    start = [1.0, (1 - b1) * h, (1 - b2) * h * h]
    exact = solve_ivp(field, (0, 15), start, rtol=1e-12, atol=1e-14).y[0, -1]
    assert res["gradient"]["params"][-1][0] == pytest.approx(exact, rel=1e-6)


def test_adam_run_resumes_bit_for_bit_with_its_momentum_in_the_checkpoint(tmp_path, monkeypatch):
    from test_resume import RunInterrupted, interrupt_at

    prob = ef.make_problem("quadratic", d=5)
    flows = ["gd", "midpoint", "gradient", "edge"]
    kw = dict(optimizer="adam", optimizer_options={"beta1": 0.8}, warm_start=2, checkpoint_every=3)
    full = ef.compare(prob, 0.02, 10, flows, out=tmp_path / "full", **kw)
    interrupt_at(monkeypatch, 6)
    with pytest.raises(RunInterrupted):
        ef.compare(prob, 0.02, 10, flows, out=tmp_path / "split", **kw)
    monkeypatch.undo()
    resumed = ef.resume(tmp_path / "split", problem=prob)
    assert resumed.resumed_from == [7]
    for flow in full:
        for key, values in full[flow].items():
            np.testing.assert_array_equal(resumed[flow][key], values, err_msg=f"{flow}/{key}")


def test_adam_runs_from_the_cli_with_figures_and_its_threshold(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--problem", "quadratic", "--param", "d=4", "--lr", "0.05", "--steps", "8"]
    argv += ["--flows", "gd,midpoint,gradient,edge", "--optimizer", "adam", "--opt", "beta1=0.8", "--quiet"]
    code, _, err = run_cli(capsys, *argv, "--out", str(out))
    assert code == 0, err
    assert "adam (beta1=0.8, beta2=0.999, eps=1e-08, bias_correction=True)" in err and "threshold 18" in err
    config = json.loads((out / "config.json").read_text())
    assert config["optimizer"] == "adam" and config["optimizer_options"]["beta1"] == 0.8
    assert config["threshold"] == pytest.approx(18)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"] == pytest.approx(18)
    assert list((out / "figures").glob("*.png"))
    res = ef.load(out)
    assert np.isfinite(res["gradient"]["effective_sharpness"]).all()
    again = tmp_path / "again"
    code, _, err = run_cli(
        capsys, "run", "--config", str(out / "config.toml"), "--out", str(again), "--quiet"
    )
    assert code == 0, err
    assert np.array_equal(ef.load(again)["gd"]["train_loss"], res["gd"]["train_loss"])


def test_momentum_from_a_toml_file(capsys, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'problem = "quadratic"\nlr = 0.05\nsteps = 4\nflows = ["gd", "gradient"]\noptimizer = "momentum"\n'
        "[optimizer_options]\nbeta = 0.5\n"
    )
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "run", "--config", str(toml), "--out", str(out), "--no-plots", "--quiet")
    assert code == 0, err
    assert "momentum (beta=0.5), η = 0.05, threshold 3 on λ₁(P⁻¹H)" in err
    config = json.loads((out / "config.json").read_text())
    assert config["optimizer_options"] == {"beta": 0.5} and config["threshold"] == 3.0
    res = ef.load(out)
    np.testing.assert_allclose(res["gd"]["effective_sharpness"], 0.05 * res["gd"]["sharpness"], rtol=1e-12)
