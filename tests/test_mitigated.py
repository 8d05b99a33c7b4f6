"""The `mitigated` flow: each remedy against closed forms on a quadratic where GD is unstable."""

from __future__ import annotations

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
    with pytest.raises(ef.ConfigError, match=r"'adam'.*damped, lr_cap, edge, warmup, clip"):
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


@pytest.mark.parametrize("remedy", ["lr_cap", "damped"])
def test_optimizer_trains_where_gd_diverges(remedy):
    model, loss = quadratic_module()
    opt = ef.EdgeStableGD(model.parameters(), lr=0.25, remedy=remedy)
    losses = [float(opt.step(loss)) for _ in range(200)]
    assert losses[-1] < 1e-3 * losses[0]
    assert opt.rayleigh == pytest.approx(10.0, rel=1e-6)  # u has converged to the top eigenvector
    expected = 1.9 / 10.0 if remedy == "lr_cap" else 0.25 / (1 + 0.25 * 10.0)
    assert opt.step_size == pytest.approx(expected, rel=1e-6)


def test_optimizer_equals_the_mitigated_flow_once_u_has_converged():
    """After the tracked directions agree, one optimizer step is one `mitigated` step, bit for bit
    up to rounding."""
    model, loss = quadratic_module()
    opt = ef.EdgeStableGD(model.parameters(), lr=0.25, remedy="damped")
    for _ in range(60):
        opt.step(loss)
    proc = ef.PROCESSES["mitigated"](quadratic(), 0.25, remedy="damped")
    proc.init(model.weight.detach()[0].clone(), seed=0)
    proc.step()
    opt.step(loss)
    torch.testing.assert_close(model.weight.detach()[0], proc.position, rtol=1e-9, atol=1e-15)


def test_an_overflow_inside_a_step_is_a_divergence_not_a_crash(monkeypatch):
    """A flow whose iterate overflows inside its step (Lanczos on a non-finite HVP) stops as
    diverged, like one whose state turns non-finite; the others run on."""
    from edgeflow.processes.mitigated import Mitigated

    def overflow(self, w):
        raise FloatingPointError("a Hessian-vector product is not finite")

    monkeypatch.setattr(Mitigated, "_track", overflow)
    res = ef.compare(quadratic(), 0.1, 5, ["gd", "mitigated"])
    assert res["mitigated"].info["diverged_at"] == 1
    assert res["gd"].info["diverged_at"] is None and res["gd"]["step"][-1] == 5
