"""The optimizer layer: GD unchanged bit for bit, RMSProp's discrete map against torch.optim and a
plain loop, the preconditioner's frame against the loss it stands for, every process on the
preconditioned optimizers against closed forms, and the settings from the API, the CLI and TOML."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import edgeflow as ef
from conftest import run_cli
from edgeflow.optimizers import OPTIMIZERS, make_optimizer
from edgeflow.optimizers.rmsprop import ScalarRMSProp
from edgeflow.processes import make_process
from edgeflow.processes.frame import PreconditionedFrame

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import make_gd_reference as reference  # noqa: E402


# ---------------------------------------------------------------------- GD, bit for bit
def test_gd_runs_equal_the_stored_reference_from_before_the_optimizer_layer():
    """Every flow's records on two problems as the code before the optimizer layer wrote them
    (tests/data/make_gd_reference.py): bitwise on the machine that wrote them, to rounding on
    another (a different CPU or torch build rounds differently)."""
    stored = np.load(DATA / "gd_reference.npz")
    same_machine = str(stored["fingerprint"]) == reference.fingerprint()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for case in reference.CASES[:1] if not same_machine else reference.CASES:
            now = reference.records(*case)
            keys = [k for k in stored.files if k.startswith(case[0] + "/")]
            assert keys
            for key in keys:
                if same_machine:
                    assert np.array_equal(stored[key], now[key], equal_nan=True), key
                else:
                    np.testing.assert_allclose(now[key], stored[key], rtol=1e-7, atol=1e-12, err_msg=key)
    finally:
        torch.set_num_threads(threads)


def test_gd_records_the_effective_sharpness_as_eta_times_the_sharpness():
    prob = ef.make_problem("quadratic", d=5)
    res = ef.compare(prob, 0.15, 5, ["gd", "midpoint", "gradient", "edge"])
    for flow in res:
        np.testing.assert_array_equal(res[flow]["effective_sharpness"], 0.15 * res[flow]["sharpness"])
    assert res.optimizer == "gd" and res.threshold == pytest.approx(2 / 0.15)


# ---------------------------------------------------------------------- the discrete maps
def _plain_rmsprop(w, grad, lr, beta2, eps, bias_correction, scalar, steps):
    """RMSProp as the central-flows authors' update rule reads, one float operation at a time."""
    nu = 0.0 if scalar else torch.zeros_like(w)
    out = [w]
    for t in range(1, steps + 1):
        g = grad(w)
        s = float((g * g).sum()) if scalar else g * g
        nu = nu + (1 - beta2) * (s - nu)
        nu_hat = nu / (1 - beta2**t) if bias_correction else nu
        root = math.sqrt(nu_hat) if scalar else nu_hat.sqrt()
        w = w - (lr / (root + eps)) * g
        out.append(w)
    return out


@pytest.mark.parametrize("name", ["scalar-rmsprop", "rmsprop"])
@pytest.mark.parametrize("bias_correction", [True, False])
def test_discrete_rmsprop_equals_the_update_rule_written_out(make_mlp, name, bias_correction):
    prob = make_mlp()
    opts = {"beta2": 0.95, "eps": 1e-7, "bias_correction": bias_correction}
    res = ef.compare(
        prob, 0.01, 100, ["gd"], save_params=True, sharpness_every=100, optimizer=name, optimizer_options=opts
    )
    plain = _plain_rmsprop(
        prob.w0, prob.grad, 0.01, 0.95, 1e-7, bias_correction, name == "scalar-rmsprop", 100
    )
    ours = res["gd"]["params"]
    for k in (1, 10, 100):
        expected = plain[k].numpy()
        assert np.abs(ours[k] - expected).max() <= 1e-12 * np.abs(expected).max(), k


@pytest.mark.parametrize("name", ["scalar-rmsprop", "rmsprop"])
def test_discrete_rmsprop_equals_the_central_flows_authors_code(name):
    """Iterates of the central-flows authors' code (its ``DiscreteProcess`` with ``ScalarRMSProp`` /
    ``RMSProp``, β₂ = 0.99, ε = 1e-7, bias correction, run on CPU in float64 on this configuration:
    digits, 256 examples, tanh MLP 64-32-32-10; RMSProp after 10 warm-start steps; how the arrays
    were made is in docs/optimizers.md) at steps 1, 10, 50 and 100, to 1e-12 relative."""
    stored = np.load(DATA / "authors_rmsprop.npz")
    prob = ef.make_problem("digits-mlp", n=256, width=32, depth=2, seed=0)
    steps = stored[f"{name}/steps"]
    opts = {"beta2": float(stored[f"{name}/beta2"]), "eps": float(stored[f"{name}/eps"])}
    res = ef.compare(
        prob,
        float(stored[f"{name}/lr"]),
        int(steps[-1]),
        ["gd"],
        save_params=True,
        sharpness_every=int(steps[-1]),
        optimizer=name,
        optimizer_options=opts,
        warm_start=int(stored[f"{name}/warm_start"]),
    )
    theirs = stored[f"{name}/w"]
    ours = res["gd"]["params"][steps]
    assert (np.abs(ours - theirs).max(axis=1) <= 1e-12 * np.abs(theirs).max(axis=1)).all()


def test_discrete_rmsprop_without_bias_correction_equals_torch_optim(tiny_data):
    from conftest import build_mlp

    model = build_mlp()
    prob = ef.Problem.from_module(model, tiny_data, loss="mse", dtype="float64")
    res = ef.compare(
        prob,
        0.01,
        200,
        ["gd"],
        save_params=True,
        sharpness_every=200,
        optimizer="rmsprop",
        optimizer_options={"beta2": 0.99, "eps": 1e-8, "bias_correction": False},
    )
    model = model.double()
    opt = torch.optim.RMSprop(model.parameters(), lr=0.01, alpha=0.99, eps=1e-8)
    X, y = tiny_data
    onehot = torch.nn.functional.one_hot(y, 3).double()
    for _ in range(200):
        opt.zero_grad()
        loss = 0.5 * ((model(X) - onehot) ** 2).sum(1).mean()
        loss.backward()
        opt.step()
    theirs = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    np.testing.assert_allclose(res["gd"]["params"][-1], theirs, rtol=0, atol=1e-12 * np.abs(theirs).max())


def test_optimizer_options_are_checked_with_the_valid_choices():
    with pytest.raises(ef.ConfigError, match=r"'lion'.*gd.*rmsprop.*momentum.*nesterov.*adam"):
        make_optimizer("lion", 0.1)
    with pytest.raises(ef.ConfigError, match=r"'beta1'.*beta2, eps, bias_correction"):
        make_optimizer("rmsprop", 0.1, {"beta1": 0.9})
    for bad in ({"beta2": 1.0}, {"beta2": -0.1}, {"eps": -1.0}, {"eps": "x"}, {"bias_correction": 1}):
        with pytest.raises(ef.ConfigError, match=next(iter(bad))):
            make_optimizer("rmsprop", 0.1, bad)
    with pytest.raises(ef.ConfigError, match=r"'beta1'.*valid options: beta$"):
        make_optimizer("momentum", 0.1, {"beta1": 0.9})
    for name, bad in (("momentum", {"beta": 0.0}), ("nesterov", {"beta": 1}), ("adam", {"beta1": 1.5})):
        with pytest.raises(ef.ConfigError, match=rf"{name} option {next(iter(bad))} must lie in \(0, 1\)"):
            make_optimizer(name, 0.1, bad)
    assert set(OPTIMIZERS) == {"gd", "scalar-rmsprop", "rmsprop", "momentum", "nesterov", "adam", "adamw"}


def test_rmsprop_with_eps_zero_keeps_dead_coordinates_frozen():
    """Digits has constant pixels: the first-layer weights from them never get a gradient, so ν
    stays 0 there. With ε = 0 their P⁻¹ would be η/0; they are frozen instead (P⁻¹ = 0)."""
    prob = ef.make_problem("digits-mlp", n=40, width=8, depth=1)
    g0 = prob.grad(prob.w0)
    dead = g0 == 0
    assert dead.sum() > 0
    res = ef.compare(
        prob,
        0.002,
        12,
        ["gd", "midpoint", "edge", "gradient"],
        save_params=True,
        optimizer="rmsprop",
        optimizer_options={"eps": 0.0},
    )
    for flow in res:
        assert res[flow].info["diverged_at"] is None, flow
        assert np.isfinite(res[flow]["effective_sharpness"]).all(), flow
        moved = res[flow]["params"][-1] - prob.w0.numpy()
        assert np.abs(moved[dead.numpy()]).max() == 0.0, flow


# ---------------------------------------------------------------------- the preconditioner's frame
def test_the_frame_is_the_loss_in_preconditioned_coordinates(make_mlp):
    """L̃(x) = L(b + Dx): gradient D∇L, Hessian-vector products D∇²L D v, against autograd of the
    composed function."""
    prob = make_mlp()
    gen = torch.Generator().manual_seed(3)
    base = prob.w0 + 0.1 * torch.randn(prob.dim, generator=gen, dtype=torch.float64)
    scale = torch.rand(prob.dim, generator=gen, dtype=torch.float64) + 0.5
    frame = PreconditionedFrame(prob, base, scale)
    X = 0.3 * torch.randn(2, prob.dim, generator=gen, dtype=torch.float64)
    v = torch.randn(prob.dim, generator=gen, dtype=torch.float64)

    def composed(x):
        return sum(t(base + scale * x) for t in prob.terms)

    grads = torch.stack([torch.func.grad(composed)(x) for x in X])
    torch.testing.assert_close(frame.grads(X), grads, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(frame.last_grads, prob.grads(base + scale * X), rtol=0, atol=0)
    hv = torch.func.jvp(torch.func.grad(composed), (X[0],), (v,))[1]
    torch.testing.assert_close(frame.hvp(X[0], v), hv, rtol=1e-10, atol=1e-12)
    g, products = frame.grad_and_hvps(X[0], torch.stack([v, 2 * v]))
    torch.testing.assert_close(g, grads[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(products[1], 2 * hv, rtol=1e-10, atol=1e-12)


@dataclasses.dataclass(frozen=True)
class FrozenScalarRMSProp(ScalarRMSProp):
    """Scalar RMSProp whose ν never changes: P is a fixed multiple of the identity."""

    def update(self, state, g):
        return state

    def state_velocity(self, state, g, g_sq):
        return {"t": 0.0, "nu": torch.zeros_like(state["nu"])}

    def variance_velocity(self, state, g_sq_extra):
        return {"nu": torch.zeros_like(state["nu"])}


def _frozen(lr: float, effective_lr: float, dtype=torch.float64) -> tuple[FrozenScalarRMSProp, dict]:
    """The frozen optimizer with P⁻¹ = ``effective_lr`` (no bias correction, ε = 0)."""
    opt = FrozenScalarRMSProp(lr, eps=0.0, bias_correction=False)
    return opt, {"t": 1.0, "nu": torch.tensor((lr / effective_lr) ** 2, dtype=dtype)}


def test_frozen_scalar_preconditioner_makes_every_flow_the_gd_flow_at_that_rate():
    """With P⁻¹ = η' fixed, the optimizer is GD at η', and each model of it must be that model of GD
    at η': Edge Flow in the frame (η = 1, coordinates w/√η') against Edge Flow written for GD, the
    stable flow against gradient flow, the midpoint against GD's, through the onset of EoS."""
    prob = ef.make_problem("zhu")
    opt, state = _frozen(0.5, 0.15)
    for flow in ("gd", "midpoint", "gradient", "edge", "central"):
        # 8 sub-steps: enough that the frame's adaptive count (``EdgeFlow._substeps_now``) keeps them
        options = {"substeps": 8} if flow == "edge" else None
        gd = make_process(flow, prob, 0.15, options)
        pre = make_process(flow, prob, 0.5, options, optimizer=opt, start_state=state)
        gd.init(prob.w0, 0)
        pre.init(prob.w0, 0)
        for _ in range(60):
            gd.step()
            pre.step()
        torch.testing.assert_close(pre.position, gd.position, rtol=1e-9, atol=1e-11, msg=flow)
        a, b = gd.observe(True), pre.observe(True)
        assert b["effective_sharpness"] == pytest.approx(a["effective_sharpness"], rel=1e-8), flow
        if flow == "edge":
            # r is in frame units, r_GD·/√η'; ρ and κ are curvatures of P⁻¹H, η'·ρ_GD
            assert b["magnitude"] == pytest.approx(a["magnitude"] / math.sqrt(0.15), rel=1e-6)
            assert b["rayleigh"] == pytest.approx(0.15 * a["rayleigh"], rel=1e-8)
            assert b["predicted_loss"] == pytest.approx(a["predicted_loss"], rel=1e-9)
        if flow == "central":  # the generalized eigenvalues are η'·λ, and Σ is the same matrix
            assert b["sigma_sq"] > 0 and b["sigma_sq"] == pytest.approx(a["sigma_sq"], rel=1e-8)
            assert b["predicted_loss"] == pytest.approx(a["predicted_loss"], rel=1e-9)
            np.testing.assert_allclose(b["effective_eigs"], 0.15 * a["hessian_eigs"], rtol=1e-8)


def test_discrete_frozen_preconditioner_on_a_quadratic_has_threshold_two():
    """L = ½aw²: the period-2 mode of w ← w − P⁻¹aw multiplies by 1 − P⁻¹a, unstable exactly when
    λ₁(P⁻¹H) = P⁻¹a exceeds the threshold 2."""
    for ratio in (1.9, 2.1):
        prob = ef.Problem.from_function(lambda w: 2.0 * w[0] ** 2, [1.0])  # a = 4
        opt, state = _frozen(1.0, ratio / 4.0)
        gd = make_process("gd", prob, 1.0, optimizer=opt, start_state=state)
        gd.init(prob.w0, 0)
        assert gd.observe(True)["effective_sharpness"] == pytest.approx(ratio)
        assert opt.period2_factor(ratio) == pytest.approx(1 - ratio)
        for _ in range(10):
            before = float(gd.w[0])
            gd.step()
            assert float(gd.w[0]) == pytest.approx((1 - ratio) * before)
        assert (abs(float(gd.w[0])) > 1.0) == (ratio > opt.threshold)


def test_effective_sharpness_of_a_diagonal_quadratic_is_the_largest_scaled_curvature():
    a = torch.tensor([1.0, 4.0, 9.0, 0.5], dtype=torch.float64)
    prob = ef.Problem.from_function(lambda w: 0.5 * (a * w * w).sum(), [1.0, -0.5, 0.2, 2.0])
    res = ef.compare(prob, 0.01, 3, ["gd", "midpoint"], optimizer="rmsprop", save_params=True)
    w = torch.as_tensor(res["gd"]["params"][0])
    opt = make_optimizer("rmsprop", 0.01)
    state = opt.update(opt.init(w), a * w)
    expected = float((opt.inverse_preconditioner(state) * a).max())
    assert res["gd"]["effective_sharpness"][0] == pytest.approx(expected, rel=1e-10)


def test_stable_flow_follows_the_state_ode_on_a_quadratic():
    """Scalar RMSProp on L = ½aw² without bias correction: dν/dt = ((1 − β₂)/β₂)(a²w² − ν),
    dw/dt = −ηaw/√ν (ε = 0): the flow against a fine explicit integration of the same ODE."""
    a, lr, beta2 = 2.0, 0.05, 0.9
    prob = ef.Problem.from_function(lambda w: 0.5 * a * w[0] ** 2, [1.0])
    opts = {"beta2": beta2, "eps": 0.0, "bias_correction": False}
    res = ef.compare(
        prob,
        lr,
        20,
        ["gradient"],
        optimizer="scalar-rmsprop",
        optimizer_options=opts,
        options={"gradient": {"substep_rate": 0.05}},
        save_params=True,
    )

    def field(t, y):
        w, nu = y
        return [-lr * a * w / math.sqrt(nu), (1 - beta2) / beta2 * (a * a * w * w - nu)]

    exact = solve_ivp(field, (0, 20), [1.0, (1 - beta2) * a**2], rtol=1e-12, atol=1e-14).y[0, -1]
    assert res["gradient"]["params"][-1][0] == pytest.approx(exact, rel=2e-5)  # RK4 at substep_rate 0.05


# ---------------------------------------------------------------------- Edge Flow at the edge
@pytest.mark.parametrize(
    ("optimizer", "lr", "warm_start", "steps"), [("scalar-rmsprop", 0.2, 0, 60), ("rmsprop", 0.001, 10, 45)]
)
def test_edge_flow_tracks_rmsprop_through_the_onset(optimizer, lr, warm_start, steps):
    """Digits MLP (64 examples): both optimizers cross their threshold on λ₁(P⁻¹H) within 30 steps;
    Edge Flow crosses within 3 steps of the discrete run and stays closer to its midpoints than the
    stable flow by a factor of 4, over the run and over the EoS window."""
    prob = ef.make_problem("digits-mlp", n=64, width=16, depth=2)
    flows = ["gd", "midpoint", "edge", "gradient"]
    res = ef.compare(prob, lr, steps, flows, sharpness_every=3, optimizer=optimizer, warm_start=warm_start)
    fid = res.metrics()
    cross = fid["midpoint"]["onset"]["cross"]
    assert cross is not None and cross <= 30
    assert abs(fid["edge"]["onset"]["cross"] - cross) <= 3
    for key in ("distance_median", "distance_eos_median"):
        assert fid["edge"][key] <= 0.25 * fid["gradient"][key], key
    assert res.config["warm_start"] == warm_start


def test_rmsprop_central_flow_holds_the_threshold_on_data_with_dead_inputs():
    """Digits' corner pixels are 0 in every image: their first-layer weights never get a gradient,
    ν stays exactly 0 there and dP/dν is infinite (the authors' flow fails on such data). Ours holds
    λ₁(P⁻¹H) at the threshold through the onset, with finite iterates and state, the dead weights
    unmoved, and predicts the discrete run's loss averaged over its oscillation."""
    prob = ef.make_problem("digits-mlp", n=64, width=16, depth=2)
    res = ef.compare(
        prob,
        0.001,
        45,
        ["gd", "central"],
        sharpness_every=3,
        optimizer="rmsprop",
        warm_start=10,
        save_params=True,
    )
    central = res["central"]
    eigs = central["effective_eigs"]
    assert np.isfinite(central["params"]).all() and np.nanmax(eigs) > 1.95  # the SDCP was active
    assert np.nanmax(eigs) <= 2 * (1 + 5e-4)
    assert np.nanmax(central["sigma_sq"]) > 0
    dead = (prob.grad(prob.w0) == 0).numpy()
    assert dead.sum() >= 16  # at least one input pixel's weights
    np.testing.assert_array_equal(central["params"][-1][dead], central["params"][0][dead])
    gd_mean = 0.5 * (res["gd"]["train_loss"][-1] + res["gd"]["train_loss"][-2])
    assert central["predicted_loss"][-1] == pytest.approx(gd_mean, rel=0.03)


def test_interrupted_rmsprop_central_flow_resumes_bit_for_bit(tmp_path, monkeypatch):
    """The central flow's optimizer state, SDCP warm start and cached point go into the checkpoint:
    a run stopped by SIGINT inside EoS and resumed equals the uninterrupted one."""
    from test_resume import RunInterrupted, interrupt_at

    def problem():
        return ef.make_problem("digits-mlp", n=64, width=16, depth=2)

    kw = dict(optimizer="rmsprop", warm_start=10, sharpness_every=3, checkpoint_every=5)
    full = ef.compare(problem(), 0.001, 45, ["gd", "central"], out=tmp_path / "full", **kw)
    interrupt_at(monkeypatch, 37)
    with pytest.raises(RunInterrupted):
        ef.compare(problem(), 0.001, 45, ["gd", "central"], out=tmp_path / "split", **kw)
    monkeypatch.undo()
    resumed = ef.resume(tmp_path / "split", problem=problem())
    assert resumed.resumed_from == [38] and np.nanmax(resumed["central"]["sigma_sq"]) > 0
    for flow in full:
        for key, values in full[flow].items():
            np.testing.assert_array_equal(resumed[flow][key], values, err_msg=f"{flow}/{key}")


def test_edge_flow_refuses_the_options_derived_for_gd_only():
    prob = ef.make_problem("quadratic", d=4)
    for option in ({"hvp": "pair"}, {"implicit": "secant"}, {"warm_start": 3}):
        with pytest.raises(ef.ConfigError, match=f"{next(iter(option))}.*GD only"):
            ef.compare(prob, 0.01, 2, ["edge"], optimizer="rmsprop", options={"edge": option})
    for flow in ("modified", "mitigated"):
        with pytest.raises(ef.ConfigError, match=f"'{flow}'.*optimizer gd only.*'rmsprop'"):
            ef.compare(prob, 0.01, 2, ["gd", flow], optimizer="rmsprop")


# ---------------------------------------------------------------------- settings and files
def test_results_file_and_resume_carry_the_optimizer(tmp_path):
    prob = ef.make_problem("quadratic", d=6)
    kw = dict(optimizer="scalar-rmsprop", optimizer_options={"beta2": 0.9}, sharpness_every=2)
    whole = ef.compare(prob, 0.05, 12, ["gd", "midpoint", "edge", "gradient"], **kw)
    out = tmp_path / "run"
    part = ef.compare(
        prob, 0.05, 12, ["gd", "midpoint", "edge", "gradient"], out=out, checkpoint_every=5, **kw
    )
    with h5py.File(out / "results.h5") as f:
        assert f.attrs["optimizer"] == "scalar-rmsprop"
        assert json.loads(f.attrs["optimizer_options"]) == {
            "beta2": 0.9,
            "eps": 1e-7,
            "bias_correction": True,
        }
        assert f.attrs["threshold"] == 2.0
    for flow in whole:
        np.testing.assert_array_equal(part[flow]["effective_sharpness"], whole[flow]["effective_sharpness"])
    assert part.threshold == 2.0 and part.sharpness_field == "effective_sharpness"


def test_cli_and_toml_take_the_optimizer(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "run",
        "--problem",
        "quadratic",
        "--lr",
        "0.05",
        "--steps",
        "6",
        "--flows",
        "gd,midpoint,edge",
        "--optimizer",
        "rmsprop",
        "--opt",
        "beta2=0.9",
        "--warm-start",
        "2",
        "--out",
        str(out),
        "--no-plots",
        "--quiet",
    )
    assert code == 0, err
    assert "rmsprop (beta2=0.9" in err and "threshold 2 on λ₁(P⁻¹H)" in err
    config = json.loads((out / "config.json").read_text())
    assert config["optimizer"] == "rmsprop" and config["optimizer_options"]["beta2"] == 0.9
    assert config["warm_start"] == 2
    summary = (out / "summary.md").read_text()
    assert "optimizer rmsprop" in summary and "S_eff" in summary
    again = tmp_path / "again"
    code, _, err = run_cli(
        capsys, "run", "--config", str(out / "config.toml"), "--out", str(again), "--no-plots", "--quiet"
    )
    assert code == 0, err
    assert np.array_equal(ef.load(again)["gd"]["train_loss"], ef.load(out)["gd"]["train_loss"])


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--optimizer", "lion"], ["'lion'", "gd", "rmsprop", "momentum", "nesterov", "adam"]),
        (["--optimizer", "momentum", "--opt", "beta=1.2"], ["momentum option beta", "(0, 1)", "1.2"]),
        (["--optimizer", "adam", "--opt", "beta=0.9"], ["'beta'", "beta1", "beta2"]),
        (
            ["--optimizer", "adam", "--flows", "gd,edge", "--option", "edge.center=modified"],
            ["center option ('modified')", "'adam'", "leave it unset"],
        ),
        (["--optimizer", "nesterov", "--flows", "gd,central"], ["'central'", "rmsprop only", "'nesterov'"]),
        (["--optimizer", "rmsprop", "--opt", "beta1=0.9"], ["'beta1'", "beta2"]),
        (["--optimizer", "rmsprop", "--opt", "beta2=2"], ["beta2", "(0, 1)"]),
        (["--optimizer", "rmsprop", "--flows", "gd,modified"], ["'modified'", "gd only"]),
        (["--warm-start", "x"], ["--warm-start", "'x'"]),
        (["--problem", "copy-transformer", "--optimizer", "rmsprop"], ["no measured default", "--lr"]),
    ],
)
def test_bad_optimizer_input_is_one_clear_line(capsys, tmp_path, argv, needles):
    base = ["run", "--steps", "2", "--out", str(tmp_path / "x"), "--quiet"]
    if "--problem" not in argv:
        base += ["--problem", "quadratic", "--lr", "0.05"]
    code, _, err = run_cli(capsys, *base, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "x").exists()


def test_list_shows_the_optimizers_with_their_options(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert "optimizers (edgeflow run --optimizer NAME" in out
    assert "rmsprop: RMSProp" in out and "beta2=0.99 (float)" in out and "bias_correction=true (bool)" in out
    assert "central: " in out and "[optimizer gd only]" in out
    flat = " ".join(out.split())
    assert "[optimizers gd, scalar-rmsprop, rmsprop only]" in flat  # the central flow
    assert "edge: Edge Flow" in flat and "with a momentum optimizer" in flat  # every optimizer
    assert "momentum: heavy-ball" in flat and "beta=0.9 (float)" in flat and "threshold 3.8 on" in flat
    assert "nesterov: Nesterov" in flat and "threshold 1.35714 on" in flat
    assert "adam: Adam" in flat and "threshold 38 on" in flat
    assert "options: beta1=0.9 (float), beta2=0.999 (float), eps=1e-08 (float)" in flat
    assert "adamw: AdamW" in flat and "bias_correction=true (bool), weight_decay=0.01 (float)" in flat
