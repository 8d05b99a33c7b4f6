"""The `mitigated` flow: each remedy against closed forms on a quadratic where GD is unstable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import edgeflow as ef
from edgeflow.processes.mitigated import REMEDIES

LAMS = torch.tensor([10.0, 1.0, 0.1], dtype=torch.float64)


def quadratic() -> ef.Problem:
    return ef.Problem.from_function(lambda w: 0.5 * (LAMS * w**2).sum(), [0.5, 1.0, 1.0])


def test_gd_diverges_where_damping_trains():
    """η·λ_max = 2.5: GD multiplies the top coordinate by −1.5 per step; damped by 1/(1 + ηλ) = 2/7."""
    lr = 0.25
    options = {"mitigated": {"remedy": "damped"}}
    res = ef.compare(quadratic(), lr, 400, ["gd", "mitigated"], sharpness_every=50, options=options)
    gd = res["gd"]["train_loss"]
    assert gd[-1] > 1e100 * gd[0]  # 1.5^800 times larger
    m = res["mitigated"]
    assert m.info["diverged_at"] is None
    losses = m["train_loss"]
    assert (np.diff(losses) <= 0).all()  # no spike, not even a bump
    assert losses[-1] < 1e-3 * losses[0]
    assert m["step_size"][1] == pytest.approx(lr / (1 + lr * 10.0), rel=1e-6)


def test_damped_step_along_the_top_eigenvector_is_the_implicit_factor():
    lr = 0.25
    proc = ef.PROCESSES["mitigated"](quadratic(), lr, remedy="damped")
    proc.init(quadratic().w0, seed=0)
    for _ in range(3):  # the tracked direction converges to e₁ (power steps with I + ηH)
        proc.step()
    x0 = float(proc.position[0])
    y0 = float(proc.position[1])
    proc.step()
    assert float(proc.position[0]) == pytest.approx(x0 / (1 + lr * 10.0), rel=1e-6)
    assert float(proc.position[1]) == pytest.approx(y0 * (1 - lr * 1.0), rel=1e-9)  # plain GD elsewhere


def test_edge_capped_step_in_closed_form():
    """On a quadratic the symmetrized gradient is the gradient, so once u = e₁ the step is known:
    x ← x/(1 + ηλ₁) (implicit along u), y ← (1 − 1.9/λ₁·λ₂)y (capped across u); r grows by
    GD's factor |ηλ₁ − 1| = 1.5 per step from the rounding floor until ½λ₁r² reaches a
    quarter of the loss (that of the step's start)."""
    lr, problem = 0.25, quadratic()
    proc = ef.PROCESSES["mitigated"](problem, lr)  # edge_capped is the default
    proc.init(problem.w0, seed=0)
    magnitudes = []
    for _ in range(3):
        proc.step()
        magnitudes.append(proc.observe(False)["magnitude"])
    assert magnitudes[2] == pytest.approx(1.5 * magnitudes[1], rel=1e-6)
    assert magnitudes[0] < 1e-14  # the floor: GD's oscillation starts from rounding
    x, y, z = (float(c) for c in proc.position)
    proc.step()
    cap = 1.9 / 10.0
    assert proc.step_size == pytest.approx(cap, rel=1e-9)
    assert float(proc.position[0]) == pytest.approx(x / (1 + lr * 10.0), rel=1e-6)
    assert float(proc.position[1]) == pytest.approx(y * (1 - cap * 1.0), rel=1e-9)
    assert float(proc.position[2]) == pytest.approx(z * (1 - cap * 0.1), rel=1e-9)
    for _ in range(100):
        proc.step()
    before = proc.observe(False)["train_loss"]
    proc.step()
    share = 0.25  # the default max_share: ½λ₁r² ≤ 0.25·loss
    assert proc.observe(False)["magnitude"] == pytest.approx(math.sqrt(2 * share * before / 10.0), rel=1e-6)


def test_the_cap_takes_the_largest_recent_curvature_and_the_curvature_crossed():
    from edgeflow.processes.mitigated import CAP_MEMORY, crossed_curvature, remember

    A = torch.diag(LAMS)
    d = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    g0 = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    # on a quadratic the gradient changes by A·d along a step d: the crossed curvature is dᵀAd/‖d‖²
    assert crossed_curvature((d, g0), g0 + A @ d) == pytest.approx(float(d @ A @ d / (d @ d)), rel=1e-12)
    assert crossed_curvature(None, g0) == 0.0
    recent: list[float] = []
    for value in [5.0, *[1.0] * (CAP_MEMORY - 1)]:
        recent = remember(recent, value)
    assert max(recent) == 5.0  # still within memory
    assert max(remember(recent, 1.0)) == 1.0  # forgotten after CAP_MEMORY steps


@pytest.mark.parametrize("remedy", REMEDIES)
def test_every_remedy_runs_checkpoints_and_reports(remedy, tmp_path):
    lr = 0.19 if remedy in ("warmup", "clip") else 0.25  # those two only help below 2/λ_max
    res = ef.compare(quadratic(), lr, 30, ["mitigated"], options={"mitigated": {"remedy": remedy}})
    rec = res["mitigated"]
    assert rec.info["diverged_at"] is None
    assert rec["train_loss"][-1] < rec["train_loss"][0]
    assert set(rec) >= {"step", "train_loss", "sharpness", "rayleigh", "step_size"}


def test_lr_cap_and_warmup_step_sizes():
    res = ef.compare(
        quadratic(), 0.25, 5, ["mitigated"], options={"mitigated": {"remedy": "lr_cap", "margin": 0.1}}
    )
    assert res["mitigated"]["step_size"][-1] == pytest.approx(1.9 / 10.0, rel=1e-6)
    res = ef.compare(
        quadratic(), 0.1, 4, ["mitigated"], options={"mitigated": {"remedy": "warmup", "warmup_steps": 4}}
    )
    assert res["mitigated"]["step_size"].tolist()[1:] == pytest.approx([0.025, 0.05, 0.075, 0.1])


def test_bad_remedy_is_a_clear_error():
    with pytest.raises(ef.ConfigError, match=r"'adam'.*edge_capped, lr_cap, damped, edge, warmup, clip"):
        ef.compare(quadratic(), 0.1, 2, ["mitigated"], options={"mitigated": {"remedy": "adam"}})


# ------------------------------------------------------------------ the optimizer for users' models
def quadratic_module() -> tuple[torch.nn.Module, callable]:
    """½Σ λ_i w_i² as a module (its parameter is w), and the closure the optimizer calls."""
    model = torch.nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, 1.0, 1.0]], dtype=torch.float64))

    def loss() -> torch.Tensor:
        return 0.5 * (LAMS * model.weight[0] ** 2).sum()

    return model, loss


@pytest.mark.parametrize("remedy", ["edge_capped", "lr_cap", "damped"])
def test_optimizer_trains_where_gd_diverges(remedy):
    model, loss = quadratic_module()
    opt = ef.EdgeStableGD(model.parameters(), lr=0.25, remedy=remedy)
    losses = [float(opt.step(loss)) for _ in range(200)]
    assert losses[-1] < 1e-3 * losses[0]
    assert opt.rayleigh == pytest.approx(10.0, rel=1e-6)  # u has converged to the top eigenvector
    expected = 0.25 / (1 + 0.25 * 10.0) if remedy == "damped" else 1.9 / 10.0
    assert opt.step_size == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("remedy", ["edge_capped", "damped"])
def test_optimizer_equals_the_mitigated_flow_once_u_has_converged(remedy):
    """After the tracked directions (and, for edge_capped, the magnitudes) agree, one optimizer
    step is one `mitigated` step, up to rounding."""
    model, loss = quadratic_module()
    opt = ef.EdgeStableGD(model.parameters(), lr=0.25, remedy=remedy)
    for _ in range(60):
        opt.step(loss)
    proc = ef.PROCESSES["mitigated"](quadratic(), 0.25, remedy=remedy)
    proc.init(model.weight.detach()[0].clone(), seed=0)
    if remedy == "edge_capped":
        proc.log_r = opt.log_r
    proc.step()
    opt.step(loss)
    torch.testing.assert_close(model.weight.detach()[0], proc.position, rtol=1e-9, atol=1e-15)
    if remedy == "edge_capped":
        assert opt.log_r == pytest.approx(proc.log_r, rel=1e-9)


def test_optimizer_symmetrized_gradient_on_a_cubic():
    """Where the loss has a third derivative the edge_capped optimizer evaluates the closure at
    w ± r u: on L = ½λx² + ⅓ax³ + ½y², ½[∇L(w + r e₁) + ∇L(w − r e₁)] = ∇L(w) + a r² e₁."""
    lam, a = 10.0, 3.0
    model = torch.nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.2, 1.0]], dtype=torch.float64))

    def loss() -> torch.Tensor:
        x, y = model.weight[0]
        return 0.5 * lam * x**2 + a * x**3 / 3 + 0.5 * y**2

    opt = ef.EdgeStableGD(model.parameters(), lr=0.1, margin=0.0)
    opt.log_r = math.log(0.05)
    opt.state[model.weight]["u"] = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    x = 0.2
    rho = lam + 2 * a * x  # uᵀHu at w
    opt.step(loss)
    along = lam * x + a * x**2 + a * 0.05**2
    step = min(0.1, 2.0 / rho)
    expected_x = x - 0.1 * along / (1 + 0.1 * rho)
    assert float(model.weight.detach()[0, 0]) == pytest.approx(expected_x, rel=1e-12)
    assert float(model.weight.detach()[0, 1]) == pytest.approx(1.0 - step * 1.0, rel=1e-12)


def test_an_overflow_inside_a_step_is_a_divergence_not_a_crash(monkeypatch):
    """A flow whose iterate overflows inside its step (Lanczos on a non-finite HVP) stops as
    diverged, like one whose state turns non-finite; the others run on."""
    from edgeflow.processes.mitigated import Mitigated

    def overflow(self, w, refresh=False):
        raise FloatingPointError("a Hessian-vector product is not finite")

    monkeypatch.setattr(Mitigated, "_track", overflow)
    res = ef.compare(quadratic(), 0.1, 5, ["gd", "mitigated"])
    assert res["mitigated"].info["diverged_at"] == 1
    assert res["gd"].info["diverged_at"] is None and res["gd"]["step"][-1] == 5
