"""Block eigensolver against dense ``torch.linalg.eigh`` on clustered spectra, where single-vector
Lanczos misses members of a cluster."""

from __future__ import annotations

import pytest
import torch

import edgeflow as ef
from edgeflow.oracle.lanczos import block_eigs

F64 = torch.float64


def operator(values: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric matrix with the given spectrum in a random basis, and that basis (columns)."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=gen, dtype=F64))
    M = Q @ torch.diag(torch.tensor(values, dtype=F64)) @ Q.T
    return 0.5 * (M + M.T), Q


def bulk(d: int, seed: int = 1) -> list[float]:
    return (3.0 * torch.rand(d, generator=torch.Generator().manual_seed(seed), dtype=F64)).tolist()


def random_rows(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_three_equal_top_eigenvalues_found_where_single_vector_lanczos_misses_one():
    values = [5.0, 5.0, 5.0, 4.5, 4.0, *bulk(95)]
    M, Q = operator(values)
    dense = torch.linalg.eigvalsh(M).flip(0)
    start = Q[:, 0] + Q[:, 1]  # the tracked vectors of two of the three, summed: a poor start
    single = ef.lanczos(lambda v: M @ v, start, 3)
    assert single.values.tolist() != pytest.approx(dense[:3].tolist(), abs=1e-3)  # a 5 is missed

    rows = torch.cat([start[None], random_rows(4, len(values), seed=2)])
    pairs = block_eigs(lambda V: V @ M, rows, 4, tol=1e-8)
    torch.testing.assert_close(pairs.values[:4], dense[:4], rtol=1e-12, atol=0)
    # the three vectors span the whole eigenspace of 5
    projection = pairs.vectors[:3] @ Q[:, :3]
    torch.testing.assert_close(projection @ projection.T, torch.eye(3, dtype=F64), atol=1e-10, rtol=0)
    residual = pairs.vectors[:4] @ M - pairs.values[:4, None] * pairs.vectors[:4]
    assert float(residual.norm(dim=1).max()) <= 1e-8 * 5.0


@pytest.mark.parametrize("spread", [1e-4, 1e-7])
def test_near_equal_cluster_matches_dense(spread):
    values = [4.0, 4.0 - spread, 4.0 - 2 * spread, 3.9, 3.0, *bulk(75)]
    M, _ = operator(values, seed=3)
    dense = torch.linalg.eigvalsh(M).flip(0)
    pairs = block_eigs(lambda V: V @ M, random_rows(6, len(values), seed=4), 4, tol=1e-10)
    torch.testing.assert_close(pairs.values[:4], dense[:4], rtol=1e-13, atol=0)
    gram = pairs.vectors[:4] @ pairs.vectors[:4].T
    torch.testing.assert_close(gram, torch.eye(4, dtype=F64), atol=1e-12, rtol=0)


def test_warm_start_from_eigenvectors_converges_at_once():
    values = [5.0, 5.0, 5.0, 4.5, *bulk(60)]
    M, Q = operator(values, seed=5)
    rows = torch.cat([Q[:, :4].T, random_rows(1, len(values), seed=6)])
    pairs = block_eigs(lambda V: V @ M, rows, 4, tol=1e-8)
    assert pairs.iterations == 5  # the start block's products; nothing more was needed
    assert pairs.values[:4].tolist() == pytest.approx([5.0, 5.0, 5.0, 4.5], rel=1e-12)


def test_rank_deficient_start_and_restarts_still_converge():
    values = [6.0, 5.0, 5.0, 4.0, *bulk(40, seed=7)]
    M, Q = operator(values, seed=8)
    dense = torch.linalg.eigvalsh(M).flip(0)
    v = Q[:, 0]
    rows = torch.stack([v, v, 2 * v, torch.zeros(len(values), dtype=F64)])  # rank 1: filled at random
    for max_basis in (None, 8):  # 8 forces thick restarts
        pairs = block_eigs(lambda V: V @ M, rows, 3, tol=1e-9, max_basis=max_basis)
        torch.testing.assert_close(pairs.values[:3], dense[:3], rtol=1e-12, atol=0)


def test_one_tolerance_per_wanted_pair():
    values = [5.0, 4.9, 4.0, 3.9, 3.8, *bulk(95, seed=10)]
    M, _ = operator(values, seed=11)
    start = random_rows(6, len(values), seed=12)
    tight = block_eigs(lambda V: V @ M, start, 4, tol=1e-10)
    mixed = block_eigs(lambda V: V @ M, start, 4, tol=[1e-10, 1e-10, 1e-3, 1e-3])
    assert bool((mixed.residuals[:2] <= 1e-10 * 5.0).all())
    assert bool((mixed.residuals[2:4] <= 1e-3 * 5.0).all())
    assert mixed.iterations < tight.iterations
    with pytest.raises(ValueError, match="one per wanted pair"):
        block_eigs(lambda V: V @ M, start, 4, tol=[1e-10, 1e-3])


def test_invariant_start_block_on_a_tiny_operator():
    M, _ = operator([3.0, 2.0, 2.0, 1.0, 0.5])
    pairs = block_eigs(lambda V: V @ M, random_rows(4, 5, seed=9), 3, tol=1e-12)
    assert pairs.values[:3].tolist() == pytest.approx([3.0, 2.0, 2.0], rel=1e-12)
    with pytest.raises(ValueError, match="k ≤ block size"):
        block_eigs(lambda V: V @ M, random_rows(2, 5, seed=9), 3)


def test_block_on_an_mlp_hessian_with_vmapped_hvps(make_mlp):
    problem = make_mlp()
    w = problem.w0 + 0.2 * torch.randn(problem.dim, generator=torch.Generator().manual_seed(0), dtype=F64)
    H = problem.hessian(w)
    dense = torch.linalg.eigvalsh(H).flip(0)
    before = problem.counts.hvp
    pairs = block_eigs(lambda V: problem.hvps(w, V), random_rows(5, problem.dim, seed=1), 3, tol=1e-9)
    assert problem.counts.hvp - before == pairs.iterations  # every product counted once
    torch.testing.assert_close(pairs.values[:3], dense[:3], rtol=1e-10, atol=0)
    torch.testing.assert_close(problem.hvps(w, H[:3]), H[:3] @ H, rtol=1e-10, atol=1e-12)
