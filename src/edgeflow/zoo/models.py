"""Models of the zoo (plain ``nn.Module``s; the oracle flattens their parameters)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from edgeflow.errors import invalid_choice
from edgeflow.utils import positive_int

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "gelu": nn.GELU, "relu": nn.ReLU}


class MLP(nn.Sequential):
    """``depth`` hidden layers of ``width`` units with ``activation``, then a linear read-out."""

    def __init__(
        self, in_dim: int, out_dim: int, width: int = 64, depth: int = 2, activation: str = "tanh"
    ) -> None:
        if activation not in ACTIVATIONS:
            raise invalid_choice("activation", activation, ACTIVATIONS)
        width = positive_int("width", width)
        depth = positive_int("depth", depth)
        layers: list[nn.Module] = []
        dims = [in_dim] + [width] * depth
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


def seeded_init(build, seed: int) -> nn.Module:
    """Build a module with PyTorch's default initialization drawn from ``seed``, leaving the global
    random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
