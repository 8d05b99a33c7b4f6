"""StabilityMonitor for every optimizer: torch.optim read back as edgeflow's optimizers (state included),
the effective sharpness λ₁(P⁻¹H) against dense linear algebra, the period-2 growth factors against the
scalar closed forms, and forecasts against a closed-form spike under heavy-ball momentum."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import edgeflow as ef
from conftest import build_mlp
from edgeflow.optimizers import OPTIMIZERS, make_optimizer
from edgeflow.optimizers.torch_optim import read_torch_optimizer, read_torch_state

# torch.optim constructors, the edgeflow optimizer each maps to, and its options
TORCH = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.3), "gd", {}),
    "momentum": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), "momentum", {"beta": 0.9}),
    "nesterov": (
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
        "nesterov",
        {"beta": 0.8},
    ),
    "rmsprop": (
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-6),
        "rmsprop",
        {"beta2": 0.9, "eps": 1e-6, "bias_correction": False},
    ),
    "adam": (
        lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6),
        "adam",
        {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
    ),
    "adamw": (
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
        "adamw",
        {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1},
    ),
}


def mse(model: torch.nn.Module, data) -> torch.Tensor:
    X, y = data
    return 0.5 * ((model(X) - torch.nn.functional.one_hot(y, 3).double()) ** 2).sum(1).mean()


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def trained(tiny_data, make_torch, steps: int = 7):
    model = build_mlp(width=4, depth=1).double()
    opt = make_torch(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        mse(model, tiny_data).backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("key", sorted(TORCH))
def test_torch_optimizer_and_state_read_back_as_edgeflows(tiny_data, key):
    """After 7 torch steps, the edgeflow optimizer read from torch.optim, fed the state read from it and
    the gradient at the current point, takes the same next step as torch (to rounding)."""
    make_torch, name, options = TORCH[key]
    model, opt = trained(tiny_data, make_torch)
    described = read_torch_optimizer(opt)
    assert described.optimizer == make_optimizer(name, opt.param_groups[0]["lr"], options)
    w = flat(model)
    state = read_torch_state(opt, list(model.parameters()), described.optimizer, w)
    opt.zero_grad()
    mse(model, tiny_data).backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    ours = described.optimizer.step(w, g, described.optimizer.update(state, g))
    opt.step()
    torch.testing.assert_close(ours, flat(model), rtol=1e-12, atol=1e-14)


REFUSED = {
    "dampening": (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1), "dampening=0.1"),
    "maximize": (lambda ps: torch.optim.SGD(ps, lr=0.1, maximize=True), "maximize=True"),
    "amsgrad": (lambda ps: torch.optim.Adam(ps, lr=0.1, amsgrad=True), "amsgrad=True"),
    "adam-l2": (lambda ps: torch.optim.Adam(ps, lr=0.1, weight_decay=0.01), "weight_decay=0.01"),
    "centered": (lambda ps: torch.optim.RMSprop(ps, lr=0.1, centered=True), "centered=True"),
    "rmsprop-momentum": (lambda ps: torch.optim.RMSprop(ps, lr=0.1, momentum=0.9), "momentum=0.9"),
    "adagrad": (lambda ps: torch.optim.Adagrad(ps, lr=0.1), "Adagrad"),
}


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_optimizers_without_a_counterpart_are_refused_by_name(key):
    make_torch, named = REFUSED[key]
    opt = make_torch([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ef.ConfigError, match=named):
        read_torch_optimizer(opt)


def test_parameter_groups_must_share_hyper_parameters(tiny_data):
    model = build_mlp(width=4, depth=1).double()
    first, *rest = model.parameters()
    opt = torch.optim.SGD([{"params": [first]}, {"params": rest, "lr": 0.2}], lr=0.1)
    with pytest.raises(ef.ConfigError, match=r"group 1 has lr=0\.2"):
        ef.StabilityMonitor.for_optimizer(opt, model, tiny_data)
    opt = torch.optim.SGD(rest, lr=0.1)
    with pytest.raises(ef.ConfigError, match="not in it"):
        ef.StabilityMonitor.for_optimizer(opt, model, tiny_data)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_vectorized_period_two_factors_equal_the_scalar_ones(name):
    optimizer = make_optimizer(name, 0.1)
    a = np.linspace(0.0, 1.5 * optimizer.threshold, 301)
    expected = [optimizer.period2_factor(x) for x in a]
    np.testing.assert_allclose(optimizer.period2_factors(a), expected, rtol=1e-12, atol=1e-15)


def test_adam_momentum_gain_ahead_is_its_bias_correction():
    adam = make_optimizer("adam", 0.01)
    ahead = np.arange(5)
    gains = adam.momentum_gains({"t": 3.0}, ahead)
    np.testing.assert_allclose(gains, [adam.momentum_gain({"t": 3.0 + j}) for j in ahead], rtol=1e-15)


@pytest.mark.parametrize("key", ["momentum", "rmsprop", "adam"])
def test_effective_sharpness_against_dense_eigh(tiny_data, key):
    """The monitor's effective sharpness is λ₁(P^{-1/2}HP^{-1/2}) with the P of the optimizer's state
    (dense eigh), its threshold the optimizer's (over Adam's bias-correction gain)."""
    make_torch, *_ = TORCH[key]
    model, opt = trained(tiny_data, make_torch)
    mon = ef.StabilityMonitor.for_optimizer(opt, model, tiny_data)
    rep = mon.update()
    described = mon.optimizer
    w = flat(model)
    state = read_torch_state(opt, list(model.parameters()), described, w)
    p_inv = described.inverse_preconditioner(state)
    scale = torch.as_tensor(p_inv, dtype=torch.float64).sqrt() * torch.ones_like(w)
    H = mon.problem.hessian(w)
    expected = float(torch.linalg.eigvalsh(scale[:, None] * H * scale[None, :])[-1])
    # the monitor's Lanczos stops at a 3e-2 relative residual: eigenvalues within about 1%
    assert rep["effective_sharpness"] == pytest.approx(expected, rel=1e-2)
    assert rep["threshold"] == pytest.approx(described.threshold / described.momentum_gain(state), rel=1e-12)
    if key == "momentum":
        assert rep["sharpness"] == pytest.approx(rep["effective_sharpness"] / 0.05, rel=1e-12)
    else:
        assert math.isnan(rep["sharpness"])


def test_sgd_weight_decay_shifts_the_effective_sharpness(tiny_data):
    """SGD's coupled weight decay λ descends L + λ‖w‖²/2, whose Hessian is H + λI: ηλ more."""
    runs = []
    for decay in (0.0, 0.5):
        model = build_mlp(width=4, depth=1).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5, weight_decay=decay)
        runs.append(ef.StabilityMonitor.for_optimizer(opt, model, tiny_data).update())
    assert runs[1]["effective_sharpness"] - runs[0]["effective_sharpness"] == pytest.approx(0.05, rel=1e-2)
    assert runs[1]["sharpness"] == pytest.approx(runs[0]["sharpness"], rel=1e-2)


LAM1, LAM2 = 10.0, 0.01


def momentum_run(lr: float, beta: float, steps: int, x0: float = 1e-6, **kwargs) -> list[dict]:
    """Heavy-ball on ½(λ₁x² + λ₂y²) with the monitor fed the state; each report gets the oscillation's
    share of the loss."""
    problem = ef.Problem.from_function(lambda w: 0.5 * (LAM1 * w[0] ** 2 + LAM2 * w[1] ** 2), [x0, 1.0])
    optimizer = make_optimizer("momentum", lr, {"beta": beta})
    mon = ef.StabilityMonitor(problem, optimizer=optimizer, **kwargs)
    w, state, reports = problem.w0.clone(), optimizer.init(problem.w0), []
    for _ in range(steps):
        g = problem.grad(w)
        state = optimizer.update(state, g)
        rep = mon.update(w, state=state)
        rep["share"], rep["loss"] = 0.5 * LAM1 * float(w[0]) ** 2, float(problem.loss(w))
        reports.append(rep)
        w = optimizer.step(w, g, state)
    return reports


def test_momentum_forecast_matches_the_closed_form_growth():
    """Heavy-ball β = 0.5 at ηλ₁ = 1.1 × (2 + 2β): the x-oscillation grows by |z₋| per step (the
    smaller root of z² − (1 + β − ηλ₁)z + β); the monitor reports that factor and forecasts the step
    where ½λ₁x² reaches the rest of the loss to within a few steps."""
    beta, lr = 0.5, 1.1 * 3.0 / LAM1
    z = np.roots([1.0, -(1 + beta - lr * LAM1), beta]).real.min()
    reports = momentum_run(lr, beta, 80, sharpness_every=5, horizon=20)
    assert reports[10]["effective_sharpness"] == pytest.approx(lr * LAM1, rel=1e-6)
    assert reports[10]["threshold"] == pytest.approx(3.0)
    assert reports[10]["growth"] == pytest.approx(abs(z), rel=1e-6)
    spike = next(r["step"] for r in reports if r["share"] >= r["loss"] - r["share"])
    for r in reports[10:spike]:
        if math.isfinite(r["spike_in"]):
            assert abs(r["step"] + r["spike_in"] - spike) <= 3, r
    first = next(r["step"] for r in reports if r["warning"])
    assert 0 < spike - first <= 20


def test_momentum_below_its_threshold_is_silent_where_gd_would_warn():
    """ηλ₁ = 2.5 is past GD's threshold 2 but below heavy-ball's 2 + 2β = 3.8 at β = 0.9: no warning."""
    reports = momentum_run(2.5 / LAM1, 0.9, 200, x0=0.3)
    assert not any(r["warning"] for r in reports)
    assert all(r["spike_in"] == math.inf for r in reports[5:])


def test_state_is_required_where_the_preconditioner_depends_on_it(mlp_problem):
    mon = ef.StabilityMonitor(mlp_problem, 0.01, optimizer="adam")
    with pytest.raises(ef.ConfigError, match="needs the optimizer's state for adam"):
        mon.update(mlp_problem.w0)
    with pytest.raises(ef.ConfigError, match="differs from the optimizer's lr"):
        ef.StabilityMonitor(mlp_problem, 0.02, optimizer=make_optimizer("adam", 0.01))
    with pytest.raises(ef.ConfigError, match=r"optimizer.*'nope'"):
        ef.StabilityMonitor(mlp_problem, 0.01, optimizer="nope")


@pytest.mark.parametrize("key", sorted(TORCH))
def test_for_optimizer_follows_a_live_training_loop(tiny_data, key):
    """``mon.update()`` after each ``optimizer.step()``: it reads the parameters, the state and a
    learning rate changed by a scheduler, at no more than one loss per measurement."""
    make_torch, *_ = TORCH[key]
    model = build_mlp(width=4, depth=1).double()
    opt = make_torch(model.parameters())
    lr = opt.param_groups[0]["lr"]
    mon = ef.StabilityMonitor.for_optimizer(opt, model, tiny_data, sharpness_every=3)
    measured = []
    for step in range(12):
        if step == 6:
            for group in opt.param_groups:
                group["lr"] *= 0.5
        opt.zero_grad()
        mse(model, tiny_data).backward()
        opt.step()
        rep = mon.update()
        if math.isfinite(rep["effective_sharpness"]):
            measured.append(rep["step"])
    assert mon.optimizer.lr == pytest.approx(0.5 * lr)
    assert measured == [0, 3, 6, 9]
    # the loss is evaluated at the measurements only, without a gradient
    assert (mon.problem.counts.loss, mon.problem.counts.grad) == (len(measured), 0)
    with pytest.raises(ef.ConfigError, match="reads the model and the optimizer"):
        mon.update(model)


def test_a_new_learning_rate_is_measured_at_once_and_the_history_rescaled(tiny_data):
    """P⁻¹ ∝ η: halving η (a schedule, or the Lightning callback's cap) halves the effective sharpness;
    the monitor re-measures at the next update and carries its history over in the new units."""
    model = build_mlp(width=4, depth=1).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.5)
    mon = ef.StabilityMonitor.for_optimizer(opt, model, tiny_data, sharpness_every=50)
    first = mon.update()["effective_sharpness"]
    for group in opt.param_groups:
        group["lr"] = 0.1
    again = mon.update()
    assert again["effective_sharpness"] == pytest.approx(0.5 * first, rel=1e-2)  # the same parameters
    assert mon.sharpness_history[0][1] == pytest.approx(0.5 * first, rel=1e-12)
    assert math.isnan(mon.update()["effective_sharpness"])  # then back to its schedule


@pytest.mark.parametrize("name", ["gd", "momentum", "nesterov", "adam"])
def test_velocity_filter_steady_state_is_the_optimizers_drift(name):
    """A constant gradient g: the optimizer's steps settle to −gain/(1 − decay)·P⁻¹g per step, the
    steady state of ``velocity_filter`` (heavy-ball 1/(1 − β), Adam 1)."""
    optimizer = make_optimizer(name, 0.01)
    g = torch.tensor([0.3, -1.2], dtype=torch.float64)
    w, state = torch.zeros(2, dtype=torch.float64), optimizer.init(torch.zeros(2, dtype=torch.float64))
    for _ in range(3000):
        state = optimizer.update(state, g)
        step = optimizer.step(w, g, state) - w
        w = w + step
    decay, gain = optimizer.velocity_filter()
    expected = -gain / (1 - decay) * optimizer.inverse_preconditioner(state) * g
    torch.testing.assert_close(step, expected, rtol=1e-6, atol=0.0)


def test_self_stabilization_pull_is_half_the_curvature_drop_along_the_preconditioned_gradient(mlp_problem):
    """pull = ½∇aᵀP⁻¹∇a with a = vᵀH(w)v along the mode v: moving w by −δP⁻¹∇a lowers a by
    δ·∇aᵀP⁻¹∇a = 2δ·pull (central finite difference of a through HVPs)."""
    optimizer = make_optimizer("momentum", 0.05, {"beta": 0.9})
    mon = ef.StabilityMonitor(mlp_problem, optimizer=optimizer, sharpness_every=1)
    w = mlp_problem.w0
    mon.update(w)
    p_inv = optimizer.inverse_preconditioner({})
    v = math.sqrt(p_inv) * mon.tracker.vector
    mon._stabilization(w, v, p_inv, mon.sharpness_history[-1][1], optimizer.init(w))
    assert mon.preconditioner_pull == 0.0  # P = I/η does not move
    pull = mon.stabilization[0]
    gradient = mlp_problem.third(w, v, v)
    delta = 1e-4 / float(gradient.norm())

    def a(x: torch.Tensor) -> float:
        return float(v @ mlp_problem.hvp(x, v))

    drop = (a(w + delta * p_inv * gradient) - a(w - delta * p_inv * gradient)) / 2
    assert drop == pytest.approx(2 * delta * pull, rel=1e-5)


def test_preconditioner_pull_is_the_generalized_eigenvalue_drop_as_nu_feeds_on_the_oscillation(tiny_data):
    """RMSProp: an oscillation ±r·v swings the gradient by ±r·Hv, ν's velocity gains (1 − β₂)/β₂·(rHv)²
    and P grows; the top eigenvalue of P^{-1/2}HP^{-1/2} then falls at r²·a·Σv_i²Ṗ_i. Against dense
    eigh at P and at P + δṖ."""
    model, opt = trained(tiny_data, TORCH["rmsprop"][0])
    mon = ef.StabilityMonitor.for_optimizer(opt, model, tiny_data)
    mon.update()
    w = flat(model)
    optimizer = mon.optimizer
    state = read_torch_state(opt, list(model.parameters()), optimizer, w)
    p_inv = optimizer.inverse_preconditioner(state)
    H = mon.problem.hessian(w)

    def top(p: torch.Tensor) -> tuple[float, torch.Tensor]:
        d = p.rsqrt()
        values, vectors = torch.linalg.eigh(d[:, None] * H * d[None, :])
        return float(values[-1]), d * vectors[:, -1]  # v = P^{-1/2}ũ

    p = 1 / p_inv
    a, v = top(p)
    mon._stabilization(w, v, p_inv, a, state)
    fed = optimizer.variance_velocity(state, (H @ v) ** 2)  # r = 1
    p_dot = optimizer.preconditioner_velocity(state, fed)
    delta = 1e-6 / float((p_dot / p).abs().max())
    drop = (top(p - delta * p_dot)[0] - top(p + delta * p_dot)[0]) / (2 * delta)
    assert mon.preconditioner_pull == pytest.approx(drop, rel=1e-5)
