"""Regression on a synthetic teacher: a deep linear network fitting a random one-hidden-layer tanh
network, MSE (the targets are real-valued, so the loss is not a parameter)."""

from __future__ import annotations

from edgeflow.zoo import data, models
from edgeflow.zoo.network import Network, network_problem


def _teacher_deep_linear(
    *,
    seed: int,
    n: int = 200,
    d_in: int = 20,
    d_out: int = 5,
    teacher_width: int = 32,
    noise: float = 0.0,
    width: int = 32,
    depth: int = 3,
) -> Network:
    X, Y = data.teacher_student(n=n, d_in=d_in, d_out=d_out, width=teacher_width, noise=noise, seed=seed)
    return lambda: models.DeepLinear(d_in, d_out, width=width, depth=depth), (X, Y)


teacher_deep_linear = network_problem("teacher-deep-linear", _teacher_deep_linear, loss_is_a_parameter=False)
