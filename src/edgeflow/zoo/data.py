"""Bundled datasets that load offline after a plain install."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from edgeflow.errors import ConfigError
from edgeflow.utils import positive_int


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
