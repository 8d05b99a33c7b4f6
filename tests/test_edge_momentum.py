"""Edge Flow with a momentum (heavy-ball, Nesterov, Adam) against closed forms: its state's IMEX step
is the optimizer's update at Δt = 1, its center is the optimizer itself while the top curvature is
below the center curvature, and past it the magnitude grows by the step map's period-2 root."""

from __future__ import annotations

import math

import pytest
import torch

import edgeflow as ef
from edgeflow.errors import ConfigError
from edgeflow.optimizers import OPTIMIZERS, make_optimizer
from edgeflow.processes import make_process

MOMENTUM = ("momentum", "nesterov", "adam", "adamw")


def quadratic(eigenvalues: list[float]) -> ef.Problem:
    """½ Σ λᵢ wᵢ² in float64 from w = (1, …, 1), rotated so that no coordinate is an eigenvector."""
    d = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    A = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
    return ef.Problem.from_function(lambda w: 0.5 * w @ (A @ w), torch.ones(d, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(n for n in OPTIMIZERS if n != "gd"))
def test_relax_state_at_a_unit_step_is_the_update(name):
    """s ← (s + Δt·rate·target)/(1 + Δt·rate) at Δt = 1 is β·s + (1 − β)·feed: the optimizer's update,
    for every entry of every stateful optimizer, over several steps."""
    opt = make_optimizer(name, 0.01)
    gen = torch.Generator().manual_seed(1)
    state = opt.init(torch.zeros(6, dtype=torch.float64))
    for _ in range(4):
        g = torch.randn(6, generator=gen, dtype=torch.float64)
        update, relaxed = opt.update(state, g), opt.relax_state(state, g, g * g, 1.0)
        assert update.keys() == relaxed.keys()
        for key in update:
            torch.testing.assert_close(
                torch.as_tensor(relaxed[key]), torch.as_tensor(update[key]), rtol=1e-12, atol=1e-15
            )
        state = update


@pytest.mark.parametrize(
    "name, expected",
    [("momentum", 1.9), ("nesterov", 1.0), ("adam", 19.0), ("rmsprop", math.inf), ("gd", math.inf)],
)
def test_center_curvature_is_where_the_map_turns_a_quarter(name, expected):
    """T(a_c) = 0: the roots ±i√D turn by 90° per step (β = β₁ = 0.9): 1 + β, 1 and (1 + β₁)/(1 − β₁)."""
    opt = make_optimizer(name, 0.01)
    a_c = opt.center_curvature()
    assert a_c == pytest.approx(expected, rel=1e-12)
    if math.isfinite(a_c):
        assert opt.map_coefficients(a_c)[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", MOMENTUM)
def test_center_is_the_optimizer_below_the_center_curvature(name):
    """With every curvature of P⁻¹H below the center curvature and no rounding noise, the symmetrized
    loss of a quadratic is the loss plus a constant: Edge Flow's center at its default Δt = 1 is the
    discrete optimizer's iterate, step for step."""
    lr = {"momentum": 0.15, "nesterov": 0.08, "adam": 0.01, "adamw": 0.01}[name]
    prob = quadratic([0.5, 1.0, 2.0, 4.0, 8.0])
    opt = make_optimizer(name, lr)
    gd = make_process("gd", prob, lr, optimizer=opt)
    edge = make_process("edge", prob, lr, {"noise": 0.0}, optimizer=opt)
    for p in (gd, edge):
        p.init(prob.w0, 0)
    for k in range(40):
        assert edge.rho * opt.momentum_gain(edge.opt_state) < opt.center_curvature() or k == 0
        torch.testing.assert_close(edge.position, gd.position, rtol=1e-12, atol=1e-14)
        gd.step()
        edge.step()


@pytest.mark.parametrize("beta, over", [(0.9, 1.1), (0.5, 1.3), (0.9, 0.99)])
def test_magnitude_grows_by_the_period2_root_on_a_quadratic(beta, over):
    """Heavy-ball with the top curvature ``over`` × the threshold 2 + 2β: r changes by exactly
    |z₋(ηλ₁)| per step — above the threshold the real root below −1, below it (β = 0.9, inside the
    complex range) √β. (The run starts above the center curvature: no hand-over, below.)"""
    lr = 0.1
    a = over * (2 + 2 * beta)
    prob = quadratic([1.0, 2.0, a / lr])
    opt = make_optimizer("momentum", lr, {"beta": beta})
    edge = make_process("edge", prob, lr, {"noise": 0.0, "r0": 1e-3}, optimizer=opt)
    edge.init(prob.w0, 0)
    for _ in range(3):
        edge.step()
    start = edge.log_r
    for _ in range(20):
        edge.step()
    factor = abs(opt.period2_factor(a))
    assert (edge.log_r - start) / 20 == pytest.approx(math.log(factor), rel=1e-6)
    if over < 1:
        assert factor == pytest.approx(math.sqrt(beta), rel=1e-12)
    assert abs(float(edge.u @ torch.linalg.eigh(prob.hessian(edge.c))[1][:, -1])) == pytest.approx(
        1.0, abs=1e-9
    )


def test_the_center_hands_its_motion_along_u_over_once_the_curvature_passes_the_center_curvature():
    """L = ½λ(1 + y²)x² + ½(y − 3)²: heavy-ball's curvature along x, ηλ(1 + y²), rises from 0.25 to 2.5
    as y moves to 3, past the center curvature 1.9 (below the threshold 3.8). Before, Edge Flow's
    center is the optimizer's iterate (noise 0, r = 0: L_r = L); after, the center sits at its
    equilibrium along u (x = 0, to the local quadratic model's accuracy) and r carries the handed-over
    motion, decaying by √β per step. A run that starts past the center curvature hands nothing over
    (its first momentum is the first gradient, not an oscillation): the center stays the optimizer."""
    lr, lam = 0.1, 2.5

    def loss(w):
        return 0.5 * lam * (1 + w[1] ** 2) * w[0] ** 2 + 0.5 * (w[1] - 3) ** 2

    prob = ef.Problem.from_function(loss, torch.tensor([1.0, 0.0], dtype=torch.float64))
    opt = make_optimizer("momentum", lr)
    gd = make_process("gd", prob, lr, optimizer=opt)
    edge = make_process("edge", prob, lr, {"noise": 0.0}, optimizer=opt)
    for p in (gd, edge):
        p.init(prob.w0, 0)
    handed = None
    for k in range(120):
        if edge.r == 0.0 or edge.r < 1e-300:
            torch.testing.assert_close(edge.position, gd.position, rtol=1e-12, atol=1e-14)
        elif handed is None:
            handed = k
        gd.step()
        edge.step()
    assert handed is not None and lr * lam * (1 + float(edge.c[1]) ** 2) > 1.9
    assert abs(float(edge.c[0])) < 1e-3 * abs(float(gd.position[0])) + 1e-12
    assert edge.r > 1e-300

    started_above = ef.Problem.from_function(loss, torch.tensor([0.1, 2.9], dtype=torch.float64))
    gd = make_process("gd", started_above, lr, optimizer=opt)
    edge = make_process("edge", started_above, lr, {"noise": 0.0}, optimizer=opt)
    for p in (gd, edge):
        p.init(started_above.w0, 0)
    for _ in range(30):
        gd.step()
        edge.step()
    torch.testing.assert_close(edge.position, gd.position, rtol=1e-12, atol=1e-14)


def test_adam_bias_correction_transient_runs_the_optimizer():
    """While Adam's bias correction k = 1/(1 − β₁ᵗ) exceeds 1.5 the frozen-P map does not hold (P moves
    within a step): Edge Flow's magnitude does not grow and its center is Adam itself, even with the
    top curvature far above the threshold (here ~k·λ₁(P⁻¹H) ≫ 38 at the first steps)."""
    lr = 0.05
    prob = quadratic([1.0, 10.0, 400.0])
    opt = make_optimizer("adam", lr)
    gd = make_process("gd", prob, lr, optimizer=opt)
    edge = make_process("edge", prob, lr, {"noise": 0.0}, optimizer=opt)
    for p in (gd, edge):
        p.init(prob.w0, 0)
    steps = 0
    while opt.momentum_gain(edge.opt_state) > 1.5:
        torch.testing.assert_close(edge.position, gd.position, rtol=1e-12, atol=1e-14)
        assert edge.r < 1e-300  # r = 0 at the start stays at the floor (frame rescalings aside)
        gd.step()
        edge.step()
        steps += 1
    assert steps == 11  # k = 1/(1 − 0.9ᵗ) ≤ 1.5 from t = 11 (after step k the state has seen k gradients)


@pytest.mark.parametrize("option", [{"center": "modified"}, {"magnitude": "linear"}, {"hvp": "pair"}])
def test_gd_only_options_are_refused_with_a_momentum(option):
    prob = quadratic([1.0, 2.0])
    with pytest.raises(ConfigError, match="momentum"):
        make_process("edge", prob, 0.1, option, optimizer=make_optimizer("momentum", 0.1))


def rotating_valley(turn: float) -> ef.Problem:
    """½ (x, y) R(θ) diag(10, 2) R(θ)ᵀ (x, y)ᵀ + z with θ = turn·z: the optimizer drifts down z at a
    steady pace, so the top eigenvector of the (x, y) block turns with the center (``turn = 0``: a
    fixed quadratic)."""

    def loss(w):
        c, s = torch.cos(turn * w[2]), torch.sin(turn * w[2])
        a, b = c * w[0] + s * w[1], -s * w[0] + c * w[1]
        return 0.5 * (10.0 * a**2 + 2.0 * b**2) + w[2]

    return ef.Problem.from_function(loss, torch.tensor([0.01, 0.005, 0.0], dtype=torch.float64))


@pytest.mark.parametrize(("name", "turn", "tol"), [("momentum", 0.5, None), ("gd", 5.0, 0.2)])
def test_refresh_fires_where_the_top_eigenvector_turns_and_only_there(name, turn, tol):
    """Where the top eigenvector turns by ~0.5 rad a step, one power step per step falls behind it
    (its residual ‖H̃u − ρu‖/|ρ| passes the tolerance) and the Lanczos refresh re-aligns u: by default
    with a momentum, with ``refresh_tol`` for GD. The test sees the lag at the start of a step and
    re-aligns u at its end, so with one sub-step a refresh fires every other step and u stays within
    ~0.5 rad of the top. On a fixed quadratic u starts on the eigenvector and no refresh fires
    (nothing is spent); ``refresh_tol=inf`` turns it off and leaves u behind."""
    lr = 0.1
    options = {"noise": 0.0} if tol is None else {"noise": 0.0, "refresh_tol": tol}

    def run(prob: ef.Problem, extra: dict) -> tuple[int, float]:
        """Refreshes over 40 steps, and u's worst alignment with the top eigenvector after step 10."""
        edge = make_process("edge", prob, lr, {**options, **extra}, optimizer=make_optimizer(name, lr))
        edge.init(prob.w0, 0)
        worst = 1.0
        for k in range(40):
            edge.step()
            if k >= 10:
                top = torch.linalg.eigh(prob.hessian(edge.c)).eigenvectors[:, -1]
                worst = min(worst, abs(float(top @ edge.u)))
        return edge.refreshes, worst

    fired, aligned = run(rotating_valley(turn), {})
    assert fired >= 15 and aligned > 0.85
    fixed, still = run(rotating_valley(0.0), {})
    assert fixed == 0 and still > 0.999
    off, lagging = run(rotating_valley(turn), {"refresh_tol": math.inf})
    assert off == 0 and lagging < 0.6


@pytest.mark.parametrize(
    "option",
    [{"refresh_tol": 0.0}, {"refresh_tol": -1.0}, {"refresh_tol": True}, {"refresh_tol": 0.2, "hvp": "pair"}],
)
def test_refresh_tol_is_checked(option):
    with pytest.raises(ConfigError, match="refresh_tol"):
        make_process("edge", quadratic([1.0, 2.0]), 0.1, option)
