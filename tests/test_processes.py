"""GD and its reference flows, run through ``edgeflow.compare``, against closed forms and dense math."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm

import edgeflow as ef
from conftest import build_mlp, dense_hessian, make_quadratic

LR = 0.15  # ηλ_max = 1.5 on the default quadratic: stable, but GD oscillates along the top mode


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def gd_closed_form(A: np.ndarray, w0: np.ndarray, lr: float, k: int) -> np.ndarray:
    return np.linalg.matrix_power(np.eye(len(w0)) - lr * A, k) @ w0


# ------------------------------------------------------------------------------- quadratic closed forms
def test_gd_iterates_equal_closed_form(quadratic):
    q = quadratic
    steps = 20
    res = ef.compare(q.problem, LR, steps, flows=["gd"], save_params=True, sharpness_every=5)
    gd = res["gd"]
    assert gd["step"].tolist() == list(range(steps + 1))
    assert gd["params"].shape == (steps + 1, q.problem.dim)
    for i, k in enumerate(gd["step"]):
        wk = gd_closed_form(q.A_np, q.w0_np, LR, int(k))
        assert rel_err(gd["params"][i], wk) < 1e-13
        assert gd["train_loss"][i] == pytest.approx(0.5 * wk @ q.A_np @ wk, rel=1e-12)
        assert gd["grad_norm"][i] == pytest.approx(np.linalg.norm(q.A_np @ wk), rel=1e-12)
    # the sharpness of a quadratic is λ_max(A) = 10 wherever it is measured, NaN elsewhere
    measured = gd["step"] % 5 == 0
    assert np.allclose(gd["sharpness"][measured], 10.0, rtol=1e-9)
    assert np.isnan(gd["sharpness"][~measured]).all()
    # GD costs one gradient per step
    assert gd.info["cost"] == {"loss": 0, "grad": steps, "hvp": 0, "third": 0}
    assert gd.info["diverged_at"] is None
    assert gd.info["steps_completed"] == steps


def _flow_errors(res, flow: str, B: np.ndarray, w0: np.ndarray, lr: float) -> list[float]:
    """Relative error of the recorded params against expm(−η t B) w0 at every record."""
    rec = res[flow]
    return [rel_err(rec["params"][i], expm(-lr * int(k) * B) @ w0) for i, k in enumerate(rec["step"])]


def test_gradient_flow_equals_matrix_exponential(quadratic):
    q = quadratic
    steps = 12
    res = ef.compare(
        q.problem,
        LR,
        steps,
        flows=["gradient"],
        save_params=True,
        sharpness_every=steps,
        options={"gradient": {"substep_rate": 0.05}},
    )
    errors = _flow_errors(res, "gradient", q.A_np, q.w0_np, LR)
    assert len(errors) == steps + 1
    assert max(errors) < 1e-6  # measured 2.9e-9
    # sub-steps bounded by the sharpness: ⌈1.2 · ηλ_max / 0.05⌉ = ⌈1.2 · 1.5 / 0.05⌉ = 36 (37 when the
    # power-iteration estimate of λ_max rounds up by an ulp)
    assert set(res["gradient"]["substeps"][1:].tolist()) <= {36.0, 37.0}
    # and the recorded loss is the loss at the recorded params
    P = res["gradient"]["params"]
    losses = 0.5 * np.einsum("ki,ij,kj->k", P, q.A_np, P)
    assert np.allclose(res["gradient"]["train_loss"], losses, rtol=1e-12)


def test_gradient_flow_default_substeps_track_closed_form(quadratic):
    """The default ``substep_rate`` (rate·Δt ≤ 1, two RK4 sub-steps per GD step here) resolves the
    slow modes; the fast transient of the top mode (ηλ = 1.5) carries RK4's error. Measured: max
    relative error 5.4e-4 over 30 steps; we allow 2e-3. GD is far from gradient flow here (max
    relative difference 0.25, at step 1), so this tolerance still tells the two apart."""
    q = quadratic
    steps = 30
    res = ef.compare(q.problem, LR, steps, flows=["gd", "gradient"], save_params=True, sharpness_every=steps)
    errors = _flow_errors(res, "gradient", q.A_np, q.w0_np, LR)
    assert max(errors) < 2e-3
    assert max(errors) > 0  # it is an approximation, not a copy of the closed form
    assert res["gradient"]["substeps"][1:].tolist() == [2.0] * steps
    assert max(_flow_errors(res, "gd", q.A_np, q.w0_np, LR)) > 50 * 2e-3


def test_modified_flow_equals_matrix_exponential(quadratic):
    q = quadratic
    steps = 8
    res = ef.compare(
        q.problem,
        LR,
        steps,
        flows=["modified"],
        save_params=True,
        sharpness_every=steps,
        options={"modified": {"substep_rate": 0.05}},
    )
    B = q.A_np + 0.5 * LR * q.A_np @ q.A_np  # ∇L + (η/2)∇²L∇L = (A + (η/2)A²) w on a quadratic
    errors = _flow_errors(res, "modified", B, q.w0_np, LR)
    assert max(errors) < 1e-6  # measured 1.6e-9
    # the correction term matters: plain gradient flow's closed form is far away
    assert rel_err(res["modified"]["params"][-1], expm(-LR * steps * q.A_np) @ q.w0_np) > 1e-2


def test_midpoint_is_average_of_gd_iterates(quadratic):
    q = quadratic
    steps = 10
    res = ef.compare(q.problem, LR, steps, flows=["gd", "midpoint"], save_params=True)
    W = [gd_closed_form(q.A_np, q.w0_np, LR, k) for k in range(steps + 2)]
    L = [0.5 * w @ q.A_np @ w for w in W]
    mid = res["midpoint"]
    assert mid["step"].tolist() == list(range(steps + 1))
    assert rel_err(mid["params"][0], q.w0_np) < 1e-15  # w*_0 = w_0
    for k in range(1, steps + 1):
        expected = 0.25 * (W[k - 1] + 2 * W[k] + W[k + 1])
        assert rel_err(mid["params"][k], expected) < 1e-13
        # and the midpoint is not the iterate itself (GD oscillates along the top mode here)
        assert rel_err(mid["params"][k], W[k]) > 1e-3
    for k in range(steps + 1):
        assert mid["mean_loss"][k] == pytest.approx(0.5 * (L[k] + L[k + 1]), rel=1e-12)
        c = mid["params"][k]
        assert mid["train_loss"][k] == pytest.approx(0.5 * c @ q.A_np @ c, rel=1e-12)


def test_midpoint_on_mlp_matches_own_gd_loop(small_mlp_problem):
    p = small_mlp_problem
    lr, steps = 0.5, 4
    res = ef.compare(p, lr, steps, flows=["midpoint"], save_params=True, sharpness_every=steps)
    W = [p.w0.clone()]
    for _ in range(steps + 1):
        W.append(W[-1] - lr * p.grad(W[-1]))
    W = [w.numpy() for w in W]
    mid = res["midpoint"]
    assert rel_err(mid["params"][0], W[0]) < 1e-15
    for k in range(1, steps + 1):
        assert rel_err(mid["params"][k], 0.25 * (W[k - 1] + 2 * W[k] + W[k + 1])) < 1e-12
    for k in range(steps + 1):
        mean = 0.5 * (float(p.loss(torch.from_numpy(W[k]))) + float(p.loss(torch.from_numpy(W[k + 1]))))
        assert mid["mean_loss"][k] == pytest.approx(mean, rel=1e-12)


# --------------------------------------------------------------------------- sharpness and distances
@pytest.fixture(scope="module")
def mlp_run(tiny_data):
    """gd, midpoint, gradient, modified for 4 steps on a small MLP (d = 39), params saved."""
    p = ef.Problem.from_module(build_mlp(width=4, depth=1), tiny_data, loss="mse", dtype="float64")
    res = ef.compare(p, 0.5, 4, flows=["gd", "midpoint", "gradient", "modified"], save_params=True)
    return p, res


def test_sharpness_fields_equal_dense_top_eigenvalue(mlp_run):
    p, res = mlp_run
    for flow in ["gd", "midpoint", "gradient", "modified"]:
        rec = res[flow]
        assert rec["step"].tolist() == [0, 1, 2, 3, 4]
        for i in range(len(rec["step"])):
            w = torch.from_numpy(rec["params"][i])
            evals = torch.linalg.eigvalsh(dense_hessian(p, w))
            # the tracker stops at a relative residual of 1e-4: measured max error 2.2e-8 (relative)
            assert rec["sharpness"][i] == pytest.approx(float(evals[-1]), rel=1e-7), (flow, i)
            assert rec["train_loss"][i] == pytest.approx(float(p.loss(w)), rel=1e-13), (flow, i)
    # the midpoint's oscillation is |uᵀ(w_k − w*_k)| along the dense top eigenvector at w*_k; the
    # tracker's u is only good to ~ residual/gap (tol 1e-4), measured 4e-4 relative in the oscillation
    gd, mid = res["gd"], res["midpoint"]
    for k in range(5):
        w_star = torch.from_numpy(mid["params"][k])
        u = torch.linalg.eigh(dense_hessian(p, w_star)).eigenvectors[:, -1].numpy()
        expected = abs(u @ (gd["params"][k] - mid["params"][k]))
        assert mid["oscillation"][k] == pytest.approx(expected, rel=3e-3, abs=1e-12)


def test_distances_are_norms_of_param_differences(mlp_run):
    p, res = mlp_run
    d = res.distances
    assert d["step"].tolist() == res["gd"]["step"].tolist()
    P = {flow: res[flow]["params"] for flow in res}
    for key, (a, b) in {
        "gradient-midpoint": ("gradient", "midpoint"),
        "gradient-gd": ("gradient", "gd"),
        "modified-midpoint": ("modified", "midpoint"),
        "modified-gd": ("modified", "gd"),
        "gd-midpoint": ("gd", "midpoint"),
    }.items():
        expected = np.linalg.norm(P[a] - P[b], axis=1)
        assert np.allclose(d[key], expected, rtol=1e-12, atol=1e-15), key
        assert (d[key][1:] > 0).all(), key
    for ref in ["gd", "midpoint"]:
        expected = np.linalg.norm(P[ref] - p.w0.numpy(), axis=1)
        assert np.allclose(d[f"{ref}-w0"], expected, rtol=1e-12, atol=1e-15)
    assert d["gd-w0"][0] == 0.0


def test_flow_costs_are_counted(mlp_run):
    _, res = mlp_run
    steps = 4
    assert res["gd"].info["cost"] == {"loss": 0, "grad": steps, "hvp": 0, "third": 0}
    assert res["midpoint"].info["cost"] == {"loss": 0, "grad": steps, "hvp": 0, "third": 0}
    # RK4: 4 gradients per sub-step, plus one power-iteration HVP per step
    sub = res["gradient"]["substeps"][1:]
    assert res["gradient"].info["cost"] == {"loss": 0, "grad": int(4 * sub.sum()), "hvp": steps, "third": 0}
    sub = res["modified"]["substeps"][1:]
    assert res["modified"].info["cost"] == {
        "loss": 0,
        "grad": int(4 * sub.sum()),
        "hvp": int(4 * sub.sum()) + steps,
        "third": 0,
    }


def test_record_and_sharpness_schedule(quadratic):
    res = ef.compare(quadratic.problem, LR, 7, flows=["gd", "midpoint"], record_every=2, sharpness_every=4)
    for flow in ["gd", "midpoint"]:
        assert res[flow]["step"].tolist() == [0, 2, 4, 6, 7]
        s = res[flow]["sharpness"]
        assert np.isfinite(s[[0, 2]]).all()
        assert np.isnan(s[[1, 3, 4]]).all()
    assert res.distances["step"].tolist() == [0, 2, 4, 6, 7]


def test_custom_start_point(quadratic):
    w0 = torch.full((quadratic.problem.dim,), 0.5, dtype=torch.float64)
    res = ef.compare(quadratic.problem, LR, 3, flows=["gd"], save_params=True, w0=w0)
    for k in range(4):
        assert rel_err(res["gd"]["params"][k], gd_closed_form(quadratic.A_np, w0.numpy(), LR, k)) < 1e-13


# -------------------------------------------------------------------------------------- divergence
def test_gd_divergence_stops_cleanly_while_gradient_flow_runs_on():
    # ηλ_max = 0.5 · 10 = 5 > 2: GD's top mode grows by |1 − 5| = 4 per step from ~1e120 and the
    # loss overflows float64 after ~57 steps. Gradient flow decays and must run to the end.
    q = make_quadratic(d=4, scale=1e120)
    lr, steps = 0.5, 80
    res = ef.compare(q.problem, lr, steps, flows=["gd", "midpoint", "gradient"], sharpness_every=10)
    gd = res["gd"]
    k = gd.info["diverged_at"]
    assert isinstance(k, int)
    assert 30 < k < steps
    assert gd.info["steps_completed"] == k
    assert gd["step"].tolist() == list(range(k))  # records stop before the divergent step
    assert np.isfinite(gd["train_loss"]).all()
    assert gd["train_loss"][-1] > 1e250  # it really was blowing up
    for field in gd:
        assert len(gd[field]) == k
    # the midpoint needs w_{k+1}, so it stops no later than GD
    assert isinstance(res["midpoint"].info["diverged_at"], int)
    assert res["midpoint"].info["diverged_at"] <= k
    assert np.isfinite(res["midpoint"]["train_loss"]).all()
    flow = res["gradient"]
    assert flow.info["diverged_at"] is None
    assert flow["step"].tolist() == list(range(steps + 1))
    assert np.isfinite(flow["train_loss"]).all()
    assert flow["train_loss"][-1] < flow["train_loss"][0]
    # distances to a stopped flow are NaN after it stops, finite before
    d = res.distances["gradient-gd"]
    assert len(d) == steps + 1
    assert np.isfinite(d[: k - 1]).all()
    assert np.isnan(d[k:]).all()


# ------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_arrays(make_mlp):
    runs = []
    for _ in range(2):
        p = make_mlp(width=4, depth=1)
        runs.append(ef.compare(p, 0.5, 3, flows=["gd", "midpoint", "gradient"], save_params=True, seed=3))
    a, b = runs
    assert list(a) == list(b)
    for flow in a:
        assert sorted(a[flow]) == sorted(b[flow])
        for field in a[flow]:
            assert np.array_equal(a[flow][field], b[flow][field], equal_nan=True), (flow, field)
        assert np.isfinite(a[flow]["sharpness"]).all()
    for key in a.distances:
        assert np.array_equal(a.distances[key], b.distances[key], equal_nan=True), key


# ------------------------------------------------------------------------------------- bad inputs
def test_unknown_flow_names_the_value_and_choices(quadratic):
    with pytest.raises(ef.ConfigError) as err:
        ef.compare(quadratic.problem, LR, 3, flows=["gd", "edgey"])
    msg = str(err.value)
    assert "edgey" in msg
    for name in ["gd", "midpoint", "gradient", "modified"]:
        assert name in msg


@pytest.mark.parametrize("lr", [0, -0.1, math.nan, math.inf, "fast"])
def test_bad_lr(quadratic, lr):
    with pytest.raises(ef.ConfigError, match=r"lr .*positive") as err:
        ef.compare(quadratic.problem, lr, 3, flows=["gd"])
    assert repr(lr) in str(err.value)


@pytest.mark.parametrize("steps", [0, -5, 2.5])
def test_bad_steps(quadratic, steps):
    with pytest.raises(ef.ConfigError, match=r"steps .*positive integer") as err:
        ef.compare(quadratic.problem, LR, steps, flows=["gd"])
    assert repr(steps) in str(err.value)


def test_unknown_flow_option(quadratic):
    with pytest.raises(ef.ConfigError) as err:
        ef.compare(quadratic.problem, LR, 3, flows=["gradient"], options={"gradient": {"substep": 0.1}})
    msg = str(err.value)
    assert "'substep'" in msg and "gradient" in msg and "substep_rate" in msg
    with pytest.raises(ef.ConfigError, match=r"'rk'.*none"):
        ef.compare(quadratic.problem, LR, 3, flows=["gd"], options={"gd": {"rk": 4}})


def test_options_for_a_flow_not_run(quadratic):
    with pytest.raises(ef.ConfigError, match=r"'modified'.*gd"):
        ef.compare(quadratic.problem, LR, 3, flows=["gd"], options={"modified": {"substep_rate": 0.1}})


@pytest.mark.parametrize("rate", [0, -1.0, math.nan])
def test_bad_substep_rate(quadratic, rate):
    with pytest.raises(ef.ConfigError, match="substep_rate"):
        ef.compare(quadratic.problem, LR, 3, flows=["gradient"], options={"gradient": {"substep_rate": rate}})


def test_sharpness_every_must_be_multiple_of_record_every(quadratic):
    with pytest.raises(ef.ConfigError, match=r"sharpness_every \(3\).*record_every \(2\)"):
        ef.compare(quadratic.problem, LR, 6, flows=["gd"], record_every=2, sharpness_every=3)


def test_duplicate_flows_are_an_error(quadratic):
    with pytest.raises(ef.ConfigError, match="'gd' is named more than once"):
        ef.compare(quadratic.problem, LR, 2, flows=["gd", "midpoint", "gd"])


def test_flows_as_one_string(quadratic):
    res = ef.compare(quadratic.problem, LR, 2, flows="gd")  # not iterated character by character
    assert list(res) == ["gd"]
    assert list(ef.compare(quadratic.problem, LR, 2, flows="gd,midpoint")) == ["gd", "midpoint"]


def test_no_flows(quadratic):
    with pytest.raises(ef.ConfigError, match="no flows"):
        ef.compare(quadratic.problem, LR, 3, flows=[])
