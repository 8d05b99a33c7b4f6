"""Central flow: third derivatives against finite differences, the SDCP against its closed form and
its complementarity conditions, and the flow against GD on a toy at EoS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeflow as ef
from edgeflow.errors import ConfigError
from edgeflow.processes.central import (
    RESOLVE,
    TrackingLimitWarning,
    closed_form_x,
    polish_sdcp,
    solve_sdcp,
    third_derivatives,
    warm_sdcp,
)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_third_derivative_contraction_against_finite_differences_of_hvps(make_mlp, activation):
    prob = make_mlp(activation=activation)
    gen = torch.Generator().manual_seed(3)
    w = prob.w0 + 0.1 * torch.randn(prob.dim, dtype=torch.float64, generator=gen)
    u, v, e = (torch.randn(prob.dim, dtype=torch.float64, generator=gen) for _ in range(3))
    third = prob.third(w, u, v)
    eps = 1e-5
    # directional derivative of uᵀH(w)v along e, from central differences of HVPs
    fd = (u @ prob.hvp(w + eps * e, v) - u @ prob.hvp(w - eps * e, v)) / (2 * eps)
    assert float(third @ e) == pytest.approx(float(fd), rel=1e-6)
    # symmetric in (u, v) because the Hessian is
    torch.testing.assert_close(third, prob.third(w, v, u), rtol=1e-10, atol=1e-12)
    assert prob.counts.third == 2


def test_third_derivatives_of_a_block_match_the_pairwise_contractions(make_mlp):
    prob = make_mlp()
    gen = torch.Generator().manual_seed(4)
    w = prob.w0 + 0.1 * torch.randn(prob.dim, dtype=torch.float64, generator=gen)
    U = torch.randn(3, prob.dim, dtype=torch.float64, generator=gen)
    G = third_derivatives(prob, w, U)
    assert G.shape == (3, 3, prob.dim)
    assert (prob.counts.third, prob.counts.hvp) == (9, 0)  # all ordered pairs, nothing else
    for i in range(3):
        for j in range(3):
            torch.testing.assert_close(G[i, j], prob.third(w, U[i], U[j]), rtol=1e-10, atol=1e-12)
    assert torch.equal(G, G.transpose(0, 1))


def test_third_derivative_full_gradient_on_zhu():
    prob = ef.make_problem("zhu")
    w = torch.tensor([1.3, 0.7], dtype=torch.float64)
    u = torch.tensor([0.6, 0.8], dtype=torch.float64)
    eps = 1e-5
    fd = torch.stack(
        [(u @ prob.hvp(w + eps * e, u) - u @ prob.hvp(w - eps * e, u)) / (2 * eps) for e in torch.eye(2)]
    )
    torch.testing.assert_close(prob.third(w, u, u), fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("lam", "grad_dot"), [(13.5, -0.4), (13.4, 0.3), (12.0, -1.0)])
def test_closed_form_equals_sdcp_with_one_eigenvalue(lam, grad_dot):
    lr, dt, norm_sq = 0.15, 0.25, 2.7
    x = closed_form_x(lam, grad_dot, norm_sq, lr, dt)
    X = solve_sdcp(np.array([lam]), np.array([[grad_dot]]), np.array([[norm_sq]]), lr, dt)
    assert X[0, 0] == pytest.approx(x, abs=1e-6)
    if lam < 2 / lr:
        assert x == 0.0  # a stable eigenvalue needs no oscillation
    # at λ = 2/η the closed form is the stationary σ² = 2⟨−∇L, ∇λ⟩/‖∇λ‖²
    assert closed_form_x(2 / lr, grad_dot, norm_sq, lr, dt) == pytest.approx(max(0, -2 * grad_dot / norm_sq))


def test_sdcp_solution_satisfies_complementarity_with_three_eigenvalues():
    rng = np.random.default_rng(0)
    lr, dt, k = 0.15, 0.25, 3
    lams = np.array([13.9, 13.6, 13.2])
    G = rng.normal(size=(k * k, 5))
    G = G.reshape(k, k, 5)
    G = 0.5 * (G + G.transpose(1, 0, 2)).reshape(k * k, 5)  # G_ij = G_ji as for ∇(u_iᵀHu_j)
    g = rng.normal(size=5)
    gram, A = G @ G.T, (G @ g).reshape(k, k)
    X = solve_sdcp(lams, A, gram, lr, dt)
    M = 2 / lr * np.eye(k) - np.diag(lams) + lr * dt * (A + 0.5 * (gram @ X.reshape(-1)).reshape(k, k))
    # exact to rounding, thanks to the Newton polish of the interior-point solution
    assert np.linalg.eigvalsh(X).min() >= -1e-12
    assert np.linalg.eigvalsh(0.5 * (M + M.T)).min() >= -1e-12
    assert np.abs(X @ M).max() <= 1e-12
    assert np.trace(X) > 0  # eigenvalues above 2/η need an oscillation


@pytest.mark.parametrize("seed", range(4))
def test_sdcp_polish_converges_from_a_perturbed_solution_of_any_rank(seed):
    rng = np.random.default_rng(seed)
    k = 4
    G = rng.normal(size=(k, k, 12))  # 12 ≥ k(k+1)/2 features: B is definite on symmetric X, X* unique
    G = 0.5 * (G + G.transpose(1, 0, 2))
    B = np.einsum("ijn,kln->ijkl", G, G).reshape(k * k, k * k)
    # C = −B·vec(X*) + S with S ⪰ 0, S X* = 0: X* of rank r solves the SDCP exactly.
    r = seed % k + 1
    Q, _ = np.linalg.qr(rng.normal(size=(k, k)))
    X_star = (Q[:, :r] * rng.uniform(0.5, 2.0, r)) @ Q[:, :r].T
    S = (Q[:, r:] * rng.uniform(0.5, 2.0, k - r)) @ Q[:, r:].T
    C = S - (B @ X_star.reshape(-1)).reshape(k, k)
    noise = 1e-5 * rng.normal(size=(k, k))
    X0 = X_star + noise @ noise.T + 1e-5 * (X_star @ noise + noise.T @ X_star)
    X = polish_sdcp(C, B, X0)
    np.testing.assert_allclose(X, X_star, atol=1e-12)


def exact_sdcp(rng: np.random.Generator, k: int, weights: list[float]) -> tuple[np.ndarray, ...]:
    """An SDCP ``M(X) = C + B·vec(X)`` whose solution X* (eigenvalues ``weights``) is known, and an
    orthonormal basis whose first columns are X*'s range."""
    r = len(weights)
    G = rng.normal(size=(k, k, 12))
    G = 0.5 * (G + G.transpose(1, 0, 2))
    B = np.einsum("ijn,kln->ijkl", G, G).reshape(k * k, k * k)
    Q, _ = np.linalg.qr(rng.normal(size=(k, k)))
    X_star = (Q[:, :r] * np.array(weights)) @ Q[:, :r].T
    S = (Q[:, r:] * rng.uniform(0.5, 2.0, k - r)) @ Q[:, r:].T
    return S - (B @ X_star.reshape(-1)).reshape(k, k), B, X_star, Q


@pytest.mark.parametrize(("r", "change"), [(r, c) for r in range(4) for c in (-1, 0, 1) if r - c >= 0])
def test_warm_sdcp_follows_the_solution_when_its_rank_changes_by_one(r, change, monkeypatch):
    # Along the flow the last sub-step's X is the warm start. An eigenvalue joining the oscillation
    # (it starts from zero weight: the warm start lacks it) or leaving it (its weight falls to zero:
    # the warm start still has a little of it) changes the rank by one.
    rng = np.random.default_rng(10 * r + change + 1)
    k, lr, dt = 4, 0.5, 0.25
    weights = list(rng.uniform(0.5, 2.0, r))
    if change == 1:
        weights[-1] = 0.05
    C, B, X_star, Q = exact_sdcp(rng, k, weights)
    X0 = X_star.copy()
    if change == 1:
        X0 -= 0.05 * np.outer(Q[:, r - 1], Q[:, r - 1])
    elif change == -1:
        X0 += 0.05 * np.outer(Q[:, r], Q[:, r])
    noise = 1e-3 * rng.normal(size=(k, k))
    X0 = X0 + X0 @ noise + noise.T @ X0
    monkeypatch.setattr("cvxpy.Problem.solve", lambda *a, **k: pytest.fail("CVXPY was called"))
    np.testing.assert_allclose(warm_sdcp(C, B, X0), X_star, atol=1e-12)
    lams = 2 / lr - np.diag(C)  # any split of C into 2/η − Λ + ηΔt·A will do
    A = (C - np.diag(np.diag(C))) / (lr * dt)
    np.testing.assert_allclose(solve_sdcp(lams, A, B / (0.5 * lr * dt), lr, dt, warm=X0), X_star, atol=1e-12)


def test_solve_sdcp_falls_back_to_the_interior_point_solver_from_a_poor_warm_start():
    rng = np.random.default_rng(5)
    C, B, X_star, _ = exact_sdcp(rng, 4, [1.0, 1.5, 0.7])
    X0 = np.zeros((4, 4))  # the rank jumps by three: Newton's method from here is not tried
    assert warm_sdcp(C, B, X0) is None
    lr, dt = 0.5, 0.25
    lams = 2 / lr - np.diag(C)
    A = (C - np.diag(np.diag(C))) / (lr * dt)
    X = solve_sdcp(lams, A, B / (0.5 * lr * dt), lr, dt, warm=X0)
    np.testing.assert_allclose(X, X_star, atol=1e-12)


def test_zhu_central_flow_holds_sharpness_at_threshold_and_predicts_gd_loss():
    # ¼(x²y² − 1)², η = 0.15 from (3.0, 0.2). Measured: the central flow's sharpness never exceeds
    # 2/η by more than 0.13% (13.350 vs 13.333, the sub-step linearization error, in the first
    # steps), while gradient flow's reaches 18.4. Its predicted loss L + tr Σ/η is within 11% (median)
    # / 23% (max) of GD's period-averaged loss over steps 50–200, where gradient flow's loss is off by
    # ~100%. Later GD's midpoint sharpness falls below 2/η as the oscillation dies out, while the
    # central flow stays pinned at 2/η: its σ² (and so its loss) is then too large (error up to 86%
    # by step 400) — Edge Flow follows that decay through its magnitude r.
    prob = ef.make_problem("zhu")
    res = ef.compare(prob, 0.15, 200, ["midpoint", "central", "gradient"])
    c, m = res["central"], res["midpoint"]
    thr = res.threshold
    assert np.nanmax(c["sharpness"]) <= thr * (1 + 2e-3)
    assert np.nanmax(res["gradient"]["sharpness"]) > 1.3 * thr
    window = (c["step"] >= 50) & (c["step"] <= 200)
    err = np.abs(c["predicted_loss"] - m["mean_loss"])[window] / m["mean_loss"][window]
    assert np.median(err) < 0.15
    assert err.max() < 0.3
    gf_err = np.abs(res["gradient"]["train_loss"] - m["mean_loss"])[window] / m["mean_loss"][window]
    assert gf_err.min() > 0.9
    assert np.all(c["sigma_sq"][window] > 0)
    assert c["hessian_eigs"].shape == (201, 24)
    np.testing.assert_allclose(c["hessian_eigs"][window, 0], thr, rtol=2e-3)


def three_zhus(w):
    """Three independent copies of ¼(x²y² − 1)²: from equal starts the top Hessian eigenvalue is
    exactly threefold, and the central flow must be three copies of the single one."""
    x, y = w[0::2], w[1::2]
    return (0.25 * (x**2 * y**2 - 1) ** 2).sum()


@pytest.mark.filterwarnings("error::edgeflow.processes.central.TrackingLimitWarning")
@pytest.mark.parametrize(("resolve", "rtol"), [("step", 1e-5), ("substep", 1e-6)])
def test_threefold_eigenvalue_is_tracked_whole_and_flows_like_three_copies(resolve, rtol):
    # Between full solves (resolve="step") the sub-steps' eigenpairs are Rayleigh–Ritz updates to
    # a residual of 3e-3: exact for the single Zhu (d = 2), not for the triple (measured: the
    # positions differ by 1.6e-6 of their size, against 1e-9 when every sub-step solves in full).
    single = ef.make_problem("zhu")
    triple = ef.Problem.from_function(three_zhus, single.w0.repeat(3), name="three-zhus")
    steps, options = 25, {"central": {"resolve": resolve}}
    one = ef.compare(single, 0.15, steps, ["central"], save_params=True, options=options)["central"]
    three = ef.compare(triple, 0.15, steps, ["central"], save_params=True, options=options)["central"]
    assert np.all(one["sigma_sq"][5:] > 0)  # the constraint is active
    # all three members of the cluster are held at 2/η, each with the single flow's oscillation
    # (at step 0 all lie below 1.5/η, and only one is tracked)
    np.testing.assert_allclose(three["hessian_eigs"][1:, :3], one["hessian_eigs"][1:, [0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(three["sigma_sq"], 3 * one["sigma_sq"], rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(
        three["params"].reshape(-1, 3, 2), one["params"][:, None, :].repeat(3, 1), rtol=rtol
    )
    assert np.nanmax(three["sharpness"]) <= 2 / 0.15 * (1 + 2e-3)


def test_before_the_onset_the_flow_is_gradient_flow_by_rk4(make_mlp):
    # η = 0.3 keeps the tiny MLP's sharpness (2.5 at w0) below 1.95/η: no SDCP, so each sub-step is
    # an RK4 step of gradient flow. Halving the sub-step divides the error by ~16 (measured 17–21
    # against 8 sub-steps; Euler's would be ~2).
    prob = make_mlp()
    params = {}
    for substeps in (2, 4, 8):
        c = ef.compare(
            prob, 0.3, 8, ["central"], save_params=True, options={"central": {"substeps": substeps}}
        )
        assert np.all(c["central"]["sigma_sq"] == 0)
        params[substeps] = c["central"]["params"]
    error = {n: np.linalg.norm(params[n] - params[8], axis=1).max() for n in (2, 4)}
    assert error[2] / error[4] > 10


def test_rayleigh_ritz_updates_between_full_solves_follow_the_same_flow_for_fewer_hvps(make_mlp):
    # η = 1 puts the tiny MLP above 2/η from the start. Measured: the positions of the two modes
    # differ by 1.2e-4 of the distance travelled, while either is 2.3e-2 from a run with 16
    # sub-steps; 402 HVPs instead of 662.
    prob = make_mlp()
    runs = {
        resolve: ef.compare(
            prob, 1.0, 12, ["central"], save_params=True, options={"central": {"resolve": resolve}}
        )
        for resolve in RESOLVE
    }
    step, substep = (runs[r]["central"] for r in ("step", "substep"))
    travelled = np.linalg.norm(substep["params"] - substep["params"][0], axis=1).max()
    assert np.linalg.norm(step["params"] - substep["params"], axis=1).max() < 1e-3 * travelled
    assert step.info["cost"]["hvp"] < 0.7 * substep.info["cost"]["hvp"]
    assert step.info["cost"]["third"] == substep.info["cost"]["third"]
    assert np.all(step["sigma_sq"][1:] > 0)


def test_reaching_max_eigs_warns_with_the_count():
    triple = ef.Problem.from_function(three_zhus, ef.make_problem("zhu").w0.repeat(3))
    flow = ef.PROCESSES["central"](triple, 0.15, max_eigs=2)
    flow.init(triple.w0, seed=0)
    with pytest.warns(
        TrackingLimitWarning, match=r"at least 3 .*max_eigs = 2 are tracked.*central\.max_eigs"
    ):
        flow.step()
    assert np.isfinite(flow.observe(False)["hessian_eigs"]).sum() == 2


def test_an_unknown_resolve_option_is_refused():
    with pytest.raises(ConfigError, match=r"central\.resolve 'never'"):
        ef.PROCESSES["central"](ef.make_problem("zhu"), 0.15, resolve="never")


def test_records_are_at_integer_times():
    # Each record k must describe the flow's point at time k (its saved parameters), not the last
    # sub-step: the eigenvalues against a dense Hessian there, σ² against the closed form there.
    prob, lr = ef.make_problem("zhu"), 0.15
    c = ef.compare(prob, lr, 12, ["central"], save_params=True)["central"]
    for k in (0, 5, 12):
        w = torch.from_numpy(c["params"][k])
        evals, evecs = torch.linalg.eigh(prob.hessian(w))
        assert c["hessian_eigs"][k, 0] == pytest.approx(float(evals[-1]), rel=1e-9)
        u, g = evecs[:, -1], prob.grad(w)
        G = prob.third(w, u, u)
        x = closed_form_x(float(evals[-1]), float(G @ g), float(G @ G), lr, 1 / 4)
        assert c["sigma_sq"][k] == pytest.approx(x, rel=1e-6, abs=1e-12)
        assert c["predicted_loss"][k] == float(prob.loss(w)) + c["sigma_sq"][k] / lr
    assert c["sigma_sq"][12] > 0
