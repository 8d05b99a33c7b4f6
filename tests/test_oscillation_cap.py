"""The oscillation cap (edgeflow.remedies) against closed forms on quadratics, its loss guard on a
non-quadratic rise, and the fixed-budget benchmark's scoring."""

from __future__ import annotations

import math

import pytest
import torch

import edgeflow as ef
from conftest import load_benchmark
from edgeflow.errors import ConfigError
from edgeflow.optimizers import make_optimizer
from edgeflow.remedies import CappedRun, OscillationCap

CURVATURES = torch.tensor([10.0, 3.0, 1.0, 0.5], dtype=torch.float64)
W0 = torch.tensor([1.0, -2.0, 1.5, 3.0], dtype=torch.float64)


def quadratic() -> ef.Problem:
    return ef.Problem.from_function(lambda w: 0.5 * (CURVATURES * w * w).sum(), W0)


def test_steps_of_a_run_without_oscillation_are_the_optimizers():
    """Below ηλ = 1 nothing alternates: every step is GD's (to rounding: the cap adds back the step
    it was given as the new iterate minus the old)."""
    lr = 0.09  # ηλ₁ = 0.9
    run = CappedRun(quadratic(), make_optimizer("gd", lr), rise=None)
    w = W0.clone()
    for _ in range(40):
        run.step()
        w = w - lr * CURVATURES * w
        torch.testing.assert_close(run.w, w, rtol=1e-15, atol=1e-15)
    assert not run.cap.capped and run.tries == 40


def test_an_unstable_direction_is_held_to_its_share_of_the_loss_and_the_run_converges():
    """ηλ₁ = 2.5: GD's error along the top direction grows by 1.5 a step. Capped, each step lands
    the offset x₁ at r_max = √(2·max_share·L/κ) (L the loss where the step starts, κ the secant
    curvature across the oscillation), so its share ½λ₁x₁² of the loss stays near max_share (above
    it by the loss's fall over the step and κ's error); as the stable directions converge the bound
    drives x₁ to 0 too."""
    lr, share = 0.25, 0.05
    problem = quadratic()
    gd = W0.clone()
    for _ in range(60):
        gd = gd - lr * CURVATURES * gd
    assert abs(float(gd[0])) > 1e9  # GD diverges along e₁
    run = CappedRun(problem, make_optimizer("gd", lr), rise=None, max_share=share)
    shares, capped, landed = [], [], []
    for _ in range(400):
        start_loss = run.loss
        run.step()
        shares.append(0.5 * float(CURVATURES[0]) * float(run.w[0]) ** 2 / run.loss)
        capped.append(run.cap.capped)
        if run.cap.capped:
            # the secant across the oscillation reads the top curvature (û mixes in a little of the
            # stable directions' drift, which it then averages in) and the offset lands at r_max
            assert run.cap.curvature == pytest.approx(float(CURVATURES[0]), rel=0.1)
            assert run.cap.radius == pytest.approx(math.sqrt(2 * share * start_loss / run.cap.curvature))
            landed.append(abs(float(run.w[0])) / run.cap.radius)
    first = capped.index(True)
    # once û has settled and the first steps' crossed curvatures have left the memory
    assert landed[20:] == pytest.approx([1.0] * len(landed[20:]), rel=0.02)
    assert first < 10  # five iterates to see the alternation
    assert all(capped[first:])
    assert max(shares[first + 2 :]) < 2 * share
    assert run.loss < 1e-8 * float(problem.loss(W0))


def test_the_crossed_curvature_is_the_rayleigh_quotient_of_p_inverse_h_along_the_step():
    """With Adam's diagonal P, the curvature the cap keeps for a step d is dᵀHd / dᵀPd exactly on a
    quadratic (Hd is the gradient's change along the step)."""
    opt = make_optimizer("adam", 0.01)
    cap = OscillationCap(opt)
    problem = quadratic()
    w, state = W0.clone(), opt.init(W0)
    for _ in range(3):
        g = problem.grad(w)
        state = opt.update(state, g)
        step = opt.step(w, g, state) - w
        p_inv = opt.inverse_preconditioner(state)
        taken = cap.adjust(w, g, float(problem.loss(w)), step, state)
        w = w + taken
    d, p_inv_then = cap.last_across
    expected = float(d @ (CURVATURES * d)) / float(d @ (d / p_inv_then))
    cap.adjust(
        w, problem.grad(w), float(problem.loss(w)), torch.zeros_like(w), opt.update(state, problem.grad(w))
    )
    assert cap.crossed[-1] == pytest.approx(expected, rel=1e-10)
    assert isinstance(p_inv, torch.Tensor)


def test_the_guard_retries_a_step_that_raises_the_loss_and_no_iterate_rises_above_it():
    """A loss whose curvature grows away from the minimum: GD's first step at this η overshoots
    into the steep part and the loss rises; the guard retries it shorter, and every accepted loss
    stays within (1 + rise)× the lowest."""

    def steep(w):
        return (w * w).sum() + (w**4).sum()

    w0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    problem = ef.Problem.from_function(steep, w0)
    lr, rise = 0.5, 0.1
    plain = w0 - lr * problem.grad(w0)
    assert float(problem.loss(plain)) > float(problem.loss(w0))  # GD's first step rises
    before = problem.counts.grad
    run = CappedRun(problem, make_optimizer("gd", lr), rise=rise)
    losses = [run.loss]
    for _ in range(30):
        run.step()
        losses.append(run.loss)
    lowest = math.inf
    for loss in losses:
        lowest = min(lowest, loss)
        assert loss <= (1 + rise) * lowest
    assert run.tries > 30  # some steps were retried, each try a gradient
    assert problem.counts.grad - before == run.tries + 1
    assert losses[-1] < 1e-3 * losses[0]


@pytest.mark.parametrize(
    ("options", "word"),
    [({"max_share": 0.0}, "max_share"), ({"alternation": 1.5}, "alternation"), ({"margin": -1.0}, "margin")],
)
def test_bad_options_are_named(options, word):
    with pytest.raises(ConfigError, match=word):
        OscillationCap(make_optimizer("gd", 0.1), **options)


def test_the_budget_benchmark_tunes_over_eta_and_holds_a_remedy_to_the_optimizers_best():
    budget = load_benchmark("budget")
    row = {"initial_loss": 1.0, "diverged_at": None, "steps": 600}
    results = {
        "gd": {
            "p": {
                "gd": {
                    "0.1": {**row, "final_loss": 0.3, "largest_spike": 1.0},
                    "0.2": {**row, "final_loss": 0.1, "largest_spike": 3.0},
                },
                "oscillation_cap": {
                    "0.1": {**row, "final_loss": 0.2, "largest_spike": 1.05},
                    "0.2": {**row, "final_loss": 0.05, "largest_spike": 1.5},
                },
                "clip": {"0.1": {**row, "final_loss": None, "largest_spike": math.inf, "diverged_at": 3}},
            }
        }
    }
    assert budget.tuned(results["gd"]["p"]["gd"]) == (0.1, 0.2)
    assert budget.tuned(results["gd"]["p"]["oscillation_cap"], spike_free=True) == (0.2, 0.1)
    assert budget.tuned(results["gd"]["p"]["clip"]) is None
    # the spike-free best (0.2) is above GD's best (0.1, spikes allowed): not a win
    assert budget.verdicts(results) == {"gd": {"oscillation_cap": {"p": False}, "clip": {"p": False}}}
    results["gd"]["p"]["oscillation_cap"]["0.2"]["largest_spike"] = 1.1
    assert budget.verdicts(results)["gd"]["oscillation_cap"] == {"p": True}
    assert "oscillation_cap`: 1 of 1" in budget.markdown(results, 600)


@pytest.mark.parametrize(
    ("make", "lr"),
    [
        (lambda params, lr: torch.optim.SGD(params, lr=lr), 2.0),
        (lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9), 1.0),
        (lambda params, lr: torch.optim.Adam(params, lr=lr), 0.2),
    ],
    ids=["sgd", "momentum", "adam"],
)
def test_the_torch_wrapper_takes_the_capped_runs_steps(make, lr):
    """``OscillationCapped`` around a torch optimizer stepping an ``nn.Module`` follows
    ``CappedRun`` (no guard) on the same full-batch loss to rounding, through steps the cap changed."""
    torch.manual_seed(0)
    X = torch.randn(32, 4, dtype=torch.float64)
    Y = torch.sin(X @ torch.randn(4, 2, dtype=torch.float64))
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    problem = ef.Problem.from_module(model, (X, Y), loss="mse")
    torch_opt = make(model.parameters(), lr)
    wrapped = ef.OscillationCapped(torch_opt)
    from edgeflow.optimizers.torch_optim import read_torch_optimizer

    run = CappedRun(problem, read_torch_optimizer(torch_opt).optimizer, rise=None)
    capped = 0
    for _ in range(80):
        loss = problem.loss(torch.nn.utils.parameters_to_vector(model.parameters()).detach())
        wrapped.zero_grad()
        out = torch.func.functional_call(model, dict(model.named_parameters()), (X,))
        batch_loss = 0.5 * ((out - Y) ** 2).sum(dim=1).mean()
        batch_loss.backward()
        assert float(batch_loss.detach()) == pytest.approx(float(loss), rel=1e-12)
        wrapped.step(batch_loss)
        run.step()
        capped += run.cap.capped or run.cap.scale < 1
        w = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        torch.testing.assert_close(w, run.w, rtol=1e-9, atol=1e-11)
    assert capped > 0  # the cap acted on this run
