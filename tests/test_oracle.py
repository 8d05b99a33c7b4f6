"""The loss oracle against independent math: finite differences, dense Hessians, hand-written losses."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import vector_to_parameters

import edgeflow as ef
from conftest import build_mlp, dense_hessian, full_loss, make_quadratic, top_eigenvalue
from edgeflow.zoo.data import balanced_subset, digits


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def random_point(problem: ef.Problem, seed: int = 0, spread: float = 0.3) -> torch.Tensor:
    """A point near w0 that is not w0, so no test relies on the initialization."""
    gen = torch.Generator().manual_seed(seed)
    return problem.w0 + spread * torch.randn(problem.dim, generator=gen, dtype=problem.dtype) / math.sqrt(
        problem.dim
    )


# ---------------------------------------------------------------------------------------------- HVP
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_hvp_matches_central_differences_of_grad(make_mlp, activation, loss):
    problem = make_mlp(activation=activation, loss=loss)
    assert problem.dtype == torch.float64
    w = random_point(problem)
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        v = torch.randn(problem.dim, generator=gen, dtype=torch.float64)
        h = 1e-5  # truncation O(h²) ≈ 1e-10, rounding O(ε/h) ≈ 1e-11 (relative)
        fd = (problem.grad(w + h * v) - problem.grad(w - h * v)) / (2 * h)
        hv = problem.hvp(w, v)
        assert rel(hv, fd) < 1e-6
        # and a wrong answer would be far off: the HVP is not proportional to v
        assert rel(hv, (hv @ v / (v @ v)) * v) > 1e-2


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_grad_matches_central_differences_of_loss(make_mlp, loss):
    problem = make_mlp(loss=loss)
    w = random_point(problem, seed=3)
    g = problem.grad(w)
    gen = torch.Generator().manual_seed(8)
    for _ in range(3):
        v = torch.randn(problem.dim, generator=gen, dtype=torch.float64)
        h = 1e-5
        fd = (problem.loss(w + h * v) - problem.loss(w - h * v)) / (2 * h)
        assert abs(float(g @ v) - float(fd)) <= 1e-7 * float(g.norm() * v.norm())


def test_hessian_is_symmetric_and_matches_jacobian_of_gradient(mlp_problem):
    w = random_point(mlp_problem)
    H = mlp_problem.hessian(w)  # rows are HVPs with basis vectors (reverse-over-reverse)
    assert H.shape == (mlp_problem.dim, mlp_problem.dim)
    assert float((H - H.T).abs().max()) <= 1e-12 * float(H.abs().max())
    assert rel(H, dense_hessian(mlp_problem, w)) < 1e-12


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_vmapped_grads_equal_stacked_grads(make_mlp, loss):
    problem = make_mlp(loss=loss)
    W = torch.stack([random_point(problem, seed=s) for s in range(4)])
    G = problem.grads(W)
    assert G.shape == W.shape
    expected = torch.stack([problem.grad(w) for w in W])
    assert rel(G, expected) < 1e-13

    values, G2 = problem.values_and_grads(W)
    assert values.shape == (4,)
    assert rel(G2, expected) < 1e-13
    expected_values = torch.stack([problem.loss(w) for w in W])
    assert torch.allclose(values, expected_values, rtol=1e-13, atol=0)
    # the rows really differ (a broadcasting bug returning one row four times would pass otherwise)
    assert rel(G[0], G[1]) > 1e-3


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_value_and_grad_equals_loss_and_grad(make_mlp, loss):
    problem = make_mlp(loss=loss)
    w = random_point(problem, seed=5)
    value, g = problem.value_and_grad(w)
    assert float(value) == pytest.approx(float(problem.loss(w)), rel=1e-14)
    assert rel(g, problem.grad(w)) < 1e-14


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_grad_and_hvps_is_the_gradient_and_the_hvps_at_one_point(make_mlp, loss):
    problem = make_mlp(loss=loss)
    w = random_point(problem, seed=3)
    gen = torch.Generator().manual_seed(4)
    V = torch.randn(3, problem.dim, generator=gen, dtype=torch.float64)
    before = problem.counts.copy()
    g, HV = problem.grad_and_hvps(w, V)
    assert (problem.counts - before).as_dict() == {"loss": 0, "grad": 1, "hvp": 3, "third": 0}
    assert g.shape == w.shape and HV.shape == V.shape
    assert rel(g, problem.grad(w)) < 1e-14
    assert rel(HV, torch.stack([problem.hvp(w, v) for v in V])) < 1e-13
    assert rel(HV[0], HV[1]) > 1e-3  # the rows are the products with distinct vectors


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_grad_and_hvp_of_grad_is_the_gradient_and_its_own_product(make_mlp, loss):
    problem = make_mlp(loss=loss)
    w = random_point(problem, seed=6)
    before = problem.counts.copy()
    g, Hg = problem.grad_and_hvp_of_grad(w)
    assert (problem.counts - before).as_dict() == {"loss": 0, "grad": 1, "hvp": 1, "third": 0}
    expected = problem.grad(w)
    assert rel(g, expected) < 1e-14
    assert rel(Hg, problem.hvp(w, expected)) < 1e-13
    # ∇²L∇L is ∇(½‖∇L‖²): a central difference of ½‖∇L‖² along a random direction
    v = torch.randn(problem.dim, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    h = 1e-4
    half_sq = [0.5 * float(problem.grad(w + s * h * v).square().sum()) for s in (1, -1)]
    assert float(Hg @ v) == pytest.approx((half_sq[0] - half_sq[1]) / (2 * h), rel=1e-6)


def test_function_problem_derivatives_match_closed_form():
    q = make_quadratic(d=5)
    w = torch.linspace(-1, 1, 5, dtype=torch.float64)
    v = torch.cos(torch.arange(5, dtype=torch.float64))
    assert float(q.problem.loss(w)) == pytest.approx(float(0.5 * w @ q.A @ w), rel=1e-14)
    assert rel(q.problem.grad(w), q.A @ w) < 1e-14
    assert rel(q.problem.hvp(w, v), q.A @ v) < 1e-14
    assert rel(q.problem.hessian(w), q.A) < 1e-14


# ------------------------------------------------------------------------------ chunking and losses
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("chunk_size", [1, 5, 7, 19, 20, 64])  # 7 and 19 do not divide n = 20
def test_chunked_equals_unchunked(make_mlp, tiny_data, loss, chunk_size):
    full = make_mlp(loss=loss)
    chunked = make_mlp(loss=loss, chunk_size=chunk_size)
    n = len(tiny_data[0])
    assert len(chunked.terms) == math.ceil(n / min(chunk_size, n))
    assert chunked.info["n"] == n
    w = random_point(full, seed=11)
    v = torch.randn(full.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    W = torch.stack([w, w + 0.1 * v, w - 0.2 * v])
    tol = 1e-12
    assert float(chunked.loss(w)) == pytest.approx(float(full.loss(w)), rel=tol)
    assert rel(chunked.grad(w), full.grad(w)) < tol
    assert rel(chunked.hvp(w, v), full.hvp(w, v)) < tol
    assert rel(chunked.grads(W), full.grads(W)) < tol
    vals_c, grads_c = chunked.values_and_grads(W)
    vals_f, grads_f = full.values_and_grads(W)
    assert torch.allclose(vals_c, vals_f, rtol=tol, atol=0)
    assert rel(grads_c, grads_f) < tol
    for a, b in zip(chunked.grad_and_hvps(w, W), full.grad_and_hvps(w, W), strict=True):
        assert rel(a, b) < tol
    for a, b in zip(chunked.grad_and_hvp_of_grad(w), full.grad_and_hvp_of_grad(w), strict=True):
        assert rel(a, b) < tol


def _model_at(w: torch.Tensor) -> torch.nn.Module:
    """The tiny MLP with its parameters set to ``w`` (independent of the oracle's unflatten map)."""
    model = build_mlp().to(torch.float64)
    with torch.no_grad():
        vector_to_parameters(w, model.parameters())
    return model


def test_mse_is_half_mean_squared_error_with_one_hot_targets(make_mlp, tiny_data):
    X, y = tiny_data
    problem = make_mlp(loss="mse", chunk_size=7)
    w = random_point(problem, seed=4)
    with torch.no_grad():
        out = _model_at(w)(X)
    Y = torch.zeros(len(y), out.shape[1], dtype=torch.float64)
    Y[torch.arange(len(y)), y] = 1.0
    by_hand = 0.5 * ((out - Y) ** 2).sum(dim=1).mean()
    assert float(problem.loss(w)) == pytest.approx(float(by_hand), rel=1e-13)
    # float one-hot targets give the same problem as integer labels
    same = ef.Problem.from_module(build_mlp(), (X, Y), loss="mse", dtype="float64")
    assert float(same.loss(w)) == pytest.approx(float(by_hand), rel=1e-13)


def test_ce_is_mean_cross_entropy(make_mlp, tiny_data):
    X, y = tiny_data
    problem = make_mlp(loss="ce", chunk_size=7)
    w = random_point(problem, seed=4)
    with torch.no_grad():
        expected = F.cross_entropy(_model_at(w)(X), y)  # reduction="mean"
    assert float(problem.loss(w)) == pytest.approx(float(expected), rel=1e-13)


def test_ce_with_probability_targets_equals_ce_with_labels(make_mlp, tiny_data):
    X, y = tiny_data
    labels = make_mlp(loss="ce")
    probs = ef.Problem.from_module(
        build_mlp(), (X, F.one_hot(y, 3).to(torch.float64)), loss="ce", dtype="float64", chunk_size=6
    )
    w = random_point(labels, seed=9)
    assert float(probs.loss(w)) == pytest.approx(float(labels.loss(w)), rel=1e-13)
    assert rel(probs.grad(w), labels.grad(w)) < 1e-12


class _PerPosition(torch.nn.Module):
    """A toy sequence model: a linear map applied at every position, output (n, positions, classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_sequence_outputs_score_the_mean_over_positions(loss):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(5, 4, 2, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (5, 4), generator=gen)
    model = _PerPosition().to(torch.float64)
    problem = ef.Problem.from_module(model, (X, y), loss=loss, chunk_size=2)
    with torch.no_grad():
        out = model(X)
    if loss == "ce":
        expected = F.cross_entropy(out.reshape(-1, 3), y.reshape(-1))  # mean over all n·positions
    else:
        expected = 0.5 * ((out - F.one_hot(y, 3)) ** 2).sum(dim=-1).mean()
    assert float(problem.loss(problem.w0)) == pytest.approx(float(expected), rel=1e-13)


# ----------------------------------------------------------------------------------------- counts
def test_counts_bookkeeping(mlp_problem):
    p = mlp_problem
    w = p.w0
    W = torch.stack([w, 2 * w, 3 * w, 4 * w, 5 * w])
    before = p.counts.copy()
    p.grads(W)
    assert (p.counts - before).as_dict() == {"loss": 0, "grad": 5, "hvp": 0, "third": 0}
    before = p.counts.copy()
    p.values_and_grads(W[:3])
    assert (p.counts - before).as_dict() == {"loss": 0, "grad": 3, "hvp": 0, "third": 0}
    before = p.counts.copy()
    p.hvp(w, w)
    assert (p.counts - before).as_dict() == {"loss": 0, "grad": 0, "hvp": 1, "third": 0}
    before = p.counts.copy()
    p.grad(w)
    p.value_and_grad(w)
    p.loss(w)
    assert (p.counts - before).as_dict() == {"loss": 1, "grad": 2, "hvp": 0, "third": 0}
    before = p.counts.copy()
    pairs = p.eigs(w, generator=torch.Generator().manual_seed(0))
    assert (p.counts - before).as_dict() == {"loss": 0, "grad": 0, "hvp": pairs.iterations, "third": 0}


def test_counts_arithmetic():
    a = ef.Counts(loss=1, grad=2, hvp=3, third=4)
    b = ef.Counts(loss=10, grad=20, hvp=30, third=40)
    assert (a + b).as_dict() == {"loss": 11, "grad": 22, "hvp": 33, "third": 44}
    assert (b - a).as_dict() == {"loss": 9, "grad": 18, "hvp": 27, "third": 36}
    c = a.copy()
    c.add_(b)
    assert c.as_dict() == {"loss": 11, "grad": 22, "hvp": 33, "third": 44}
    assert a.as_dict() == {"loss": 1, "grad": 2, "hvp": 3, "third": 4}  # copy is independent


# ---------------------------------------------------------------------------------------- Lanczos
@pytest.fixture
def mlp_spectrum(mlp_problem):
    w = random_point(mlp_problem, seed=21)
    H = mlp_problem.hessian(w)
    evals, evecs = torch.linalg.eigh(H)
    return mlp_problem, w, evals.flip(0), evecs.flip(1)  # descending


def test_lanczos_top_eigenvalue_matches_dense(mlp_spectrum):
    problem, w, evals, evecs = mlp_spectrum
    # the top of the spectrum is not degenerate, so eigenvectors are well defined
    assert float(evals[0] - evals[1]) > 1e-2 * float(evals[0])
    pairs = problem.eigs(w, generator=torch.Generator().manual_seed(0))
    assert abs(float(pairs.values[0]) - float(evals[0])) <= 1e-8 * abs(float(evals[0]))
    assert abs(float(pairs.vectors[0] @ evecs[:, 0])) == pytest.approx(1.0, abs=1e-10)
    assert float(pairs.vectors[0].norm()) == pytest.approx(1.0, abs=1e-14)
    assert problem.sharpness(w) == pytest.approx(float(evals[0]), rel=1e-8)


def test_lanczos_top_k_matches_dense(mlp_spectrum):
    problem, w, evals, evecs = mlp_spectrum
    pairs = problem.eigs(w, k=3, generator=torch.Generator().manual_seed(1))
    assert pairs.values.shape == (3,)
    assert pairs.vectors.shape == (3, problem.dim)
    for i in range(3):
        assert abs(float(pairs.values[i]) - float(evals[i])) <= 1e-8 * abs(float(evals[0]))
        assert abs(float(pairs.vectors[i] @ evecs[:, i])) == pytest.approx(1.0, abs=1e-8)
    gram = pairs.vectors @ pairs.vectors.T
    assert torch.allclose(gram, torch.eye(3, dtype=torch.float64), atol=1e-8)
    # Ritz residuals are honest: ‖Hv − θv‖ is small for every returned pair
    H = problem.hessian(w)
    for i in range(3):
        r = H @ pairs.vectors[i] - pairs.values[i] * pairs.vectors[i]
        assert float(r.norm()) <= 1e-5 * float(evals[0])


def test_lanczos_warm_start_converges_faster(mlp_spectrum):
    problem, w, evals, evecs = mlp_spectrum
    cold = problem.eigs(w, generator=torch.Generator().manual_seed(0))
    warm = problem.eigs(w, v0=evecs[:, 0].clone())
    assert warm.iterations < cold.iterations
    assert warm.iterations <= 3
    assert float(warm.values[0]) == pytest.approx(float(evals[0]), rel=1e-8)


def _symmetric_with_spectrum(values: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    d = len(values)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    M = Q @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ Q.T
    return 0.5 * (M + M.T), Q


def test_lanczos_which_LM_returns_largest_magnitude():
    values = [-10.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.25, -0.1, -1.0, -2.0, 0.0, 0.7]
    M, Q = _symmetric_with_spectrum(values)
    v0 = torch.randn(len(values), generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    la = ef.lanczos(lambda v: M @ v, v0, 1, which="LA")
    assert float(la.values[0]) == pytest.approx(3.0, rel=1e-10)
    assert abs(float(la.vectors[0] @ Q[:, 1])) == pytest.approx(1.0, abs=1e-10)

    lm = ef.lanczos(lambda v: M @ v, v0, 2, which="LM")
    assert float(lm.values[0]) == pytest.approx(-10.0, rel=1e-10)
    assert float(lm.values[1]) == pytest.approx(3.0, rel=1e-10)
    assert abs(float(lm.vectors[0] @ Q[:, 0])) == pytest.approx(1.0, abs=1e-10)


def test_lanczos_rejects_unknown_ordering():
    with pytest.raises(ef.ConfigError, match=r"'SA'.*LA, LM"):
        ef.lanczos(lambda v: v, torch.ones(3, dtype=torch.float64), which="SA")


def test_lanczos_handles_invariant_subspace():
    """A start vector inside a 2-D eigenspace: Lanczos must restart and still find the top pair."""
    values = [5.0, 4.0, 1.0, 1.0, 0.5, 0.2]
    M, Q = _symmetric_with_spectrum(values, seed=2)
    v0 = Q[:, 2] + Q[:, 3]  # spans an invariant subspace of eigenvalue 1
    pairs = ef.lanczos(
        lambda v: M @ v, v0, 2, min_iter=6, generator=torch.Generator().manual_seed(0), max_iter=6
    )
    assert pairs.values.tolist() == pytest.approx([5.0, 4.0], rel=1e-10)


def test_sharpness_tracker_matches_dense_along_gd(small_mlp_problem):
    p = small_mlp_problem
    tracker = ef.SharpnessTracker(p, seed=0)
    lr = 0.5
    w = p.w0.clone()
    for _ in range(6):
        s, u = tracker(w)
        H = dense_hessian(p, w)
        evals, evecs = torch.linalg.eigh(H)
        # tracker tol 1e-4 (relative residual) → eigenvalue error ≈ tol²/gap:
        # measured 1.6e-8 relative, and 1 − |cos| = 2.3e-8 for the eigenvector
        assert s == pytest.approx(float(evals[-1]), rel=1e-7)
        assert abs(float(u @ evecs[:, -1])) == pytest.approx(1.0, abs=1e-6)
        w = w - lr * p.grad(w)


def test_sharpness_on_quadratic_is_top_eigenvalue():
    q = make_quadratic(d=8, lmin=0.3, lmax=7.0)
    assert q.problem.sharpness(q.w0) == pytest.approx(7.0, rel=1e-10)
    assert top_eigenvalue(q.problem, q.w0) == pytest.approx(7.0, rel=1e-12)
    assert float(full_loss(q.problem)(q.w0)) == pytest.approx(float(0.5 * q.w0 @ q.A @ q.w0), rel=1e-14)


# ------------------------------------------------------------------------ zoo: data and named problems
DIGITS_PER_CLASS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # scikit-learn's digits


def test_digits_is_class_balanced_and_standardized():
    X, y = digits(n=500, classes=10, seed=0)
    assert X.shape == (500, 64) and X.dtype == torch.float64
    assert y.shape == (500,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == [50] * 10
    Xn = X.numpy()
    std = Xn.std(axis=0)
    varying = std > 0
    assert varying.sum() >= 55  # a few border pixels are constant (zero) on a subset
    assert np.abs(Xn.mean(axis=0)).max() < 1e-12
    assert np.abs(std[varying] - 1).max() < 1e-12
    assert np.all(Xn[:, ~varying] == 0)


def test_digits_class_subset_and_uneven_split():
    X, y = digits(n=23, classes=4, seed=5)
    assert len(X) == 23
    # the first n mod classes classes get one more example
    assert torch.bincount(y, minlength=4).tolist() == [6, 6, 6, 5]
    assert int(y.max()) == 3


def test_digits_seed_determinism():
    X1, y1 = digits(n=60, classes=3, seed=7)
    X2, y2 = digits(n=60, classes=3, seed=7)
    X3, _ = digits(n=60, classes=3, seed=8)
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    assert not torch.equal(X1, X3)


def test_digits_subset_is_real_data():
    """Each row is a (standardized) digits image with its own label, not a shuffled mismatch."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    idx = balanced_subset(bunch.target, 30, 10, seed=2)
    assert len(set(idx.tolist())) == 30  # no repeats
    assert np.bincount(bunch.target[idx], minlength=10).tolist() == [3] * 10
    X, y = digits(n=30, classes=10, seed=2)
    assert y.tolist() == bunch.target[idx].tolist()
    raw = bunch.data[idx]
    std = raw.std(axis=0)
    expected = (raw - raw.mean(axis=0)) / np.where(std > 0, std, 1.0)
    assert np.allclose(X.numpy(), expected, rtol=0, atol=1e-12)


def test_balanced_subset_uses_every_example_at_the_limit():
    labels = np.repeat(np.arange(3), [4, 5, 6])
    idx = balanced_subset(labels, 12, 3, seed=0)
    assert np.bincount(labels[idx]).tolist() == [4, 4, 4]
    assert sorted(idx[labels[idx] == 0].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("n", "classes", "pattern"),
    [
        (2000, 10, r"n=2000 needs 200 examples of class 0 but the dataset has 178"),
        (1749, 10, r"n=1749 needs 175 examples of class 8 but the dataset has 174"),
        (10, 11, r"classes=11.*only 10"),
        (0, 10, r"n must be a positive integer, got 0"),
        (10, 0, r"classes must be a positive integer, got 0"),
    ],
)
def test_digits_bad_sizes(n, classes, pattern):
    with pytest.raises(ef.ConfigError, match=pattern):
        digits(n=n, classes=classes, seed=0)


def test_digits_largest_balanced_subset():
    # 174 per class (class 8 has only 174), plus one more for each of classes 0-7 (all have ≥ 175)
    largest = 10 * min(DIGITS_PER_CLASS) + 8
    _, y = digits(n=largest, classes=10, seed=0)
    assert torch.bincount(y).tolist() == [175] * 8 + [174] * 2
    with pytest.raises(ef.ConfigError):
        digits(n=largest + 1, classes=10, seed=0)


# BUG (src/edgeflow/zoo/data.py, balanced_subset, the "use n ≤ …" hint at line 29): the hint is
# len(pool) · classes for the *first* class found short, which need not be a valid n: n=2000 (and
# n=1790) suggest "n ≤ 1780", and n=1780 fails again ("… class 2 … use n ≤ 1770"), then 1770 fails
# ("… class 8 … use n ≤ 1740"). The hint should come from every class, e.g. the largest n with
# n // classes + (c < n % classes) ≤ |class c| for all c (1748 for the full digits set). The cases
# 2000 and 1790 fail until that is fixed; 1749 already gets a valid hint (1740).
@pytest.mark.parametrize("n", [2000, 1790, 1749])
def test_digits_too_large_n_suggests_a_valid_n(n):
    with pytest.raises(ef.ConfigError) as err:
        digits(n=n, classes=10, seed=0)
    match = re.search(r"n ≤ (\d+)", str(err.value))
    assert match, str(err.value)
    suggested = int(match.group(1))
    assert suggested < n
    digits(n=suggested, classes=10, seed=0)  # following the hint must work


def test_from_module_unknown_loss(tiny_data):
    with pytest.raises(ef.ConfigError) as err:
        ef.Problem.from_module(build_mlp(), tiny_data, loss="hinge")
    msg = str(err.value)
    assert "'hinge'" in msg and "mse" in msg and "ce" in msg


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5])
def test_from_module_bad_chunk_size(tiny_data, chunk_size):
    with pytest.raises(ef.ConfigError, match=rf"chunk_size .*{chunk_size!r}"):
        ef.Problem.from_module(build_mlp(), tiny_data, chunk_size=chunk_size)


def test_from_module_mismatched_data(tiny_data):
    X, y = tiny_data
    with pytest.raises(ef.ConfigError, match="20 inputs but 19 targets"):
        ef.Problem.from_module(build_mlp(), (X, y[:19]))


def test_make_problem_unknown_name():
    with pytest.raises(ef.ConfigError) as err:
        ef.make_problem("cifar-resnet")
    msg = str(err.value)
    assert "'cifar-resnet'" in msg
    for name in ef.PROBLEMS:
        assert name in msg


def test_make_problem_unknown_parameter():
    with pytest.raises(ef.ConfigError) as err:
        ef.make_problem("quadratic", lamda_max=3.0)
    msg = str(err.value)
    assert "'lamda_max'" in msg and "quadratic" in msg
    for valid in ["d", "lmin", "lmax"]:
        assert valid in msg


def test_make_problem_builds_what_it_says():
    q = ef.make_problem("quadratic", d=5, lmin=0.5, lmax=4.0)
    assert q.dim == 5 and q.dtype == torch.float64
    assert q.sharpness(q.w0) == pytest.approx(4.0, rel=1e-10)
    H = q.hessian(q.w0)
    assert torch.linalg.eigvalsh(H).tolist() == pytest.approx(np.logspace(np.log10(0.5), np.log10(4.0), 5))
    p = ef.make_problem("digits-mlp", n=30, width=8, depth=1, dtype="float32")
    assert p.dtype == torch.float32
    assert p.info["n"] == 30
    assert p.dim == 64 * 8 + 8 + 8 * 10 + 10
